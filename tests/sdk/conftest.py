"""The SDK tests run against live gateways: the gateway suite's fixtures, a gateway that restarts
on the same port, and a TCP proxy that can hold back the server's bytes or drop every socket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from gateway.server import DrainingServer, uvicorn_config
from tests.gateway.conftest import Live, connect, live, start_gateway  # noqa: F401 - fixtures

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from common.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FixedPortGateway:
    """A gateway that can be stopped (a drain: `going_away`, 1001) and started again on the same port."""

    def __init__(self, settings: Settings, node_id: str, overrides: dict[str, Any]) -> None:
        self.port = free_port()
        self.settings = msgspec.structs.replace(settings, port=self.port, node_id=node_id, **overrides)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self._running: tuple[DrainingServer, asyncio.Task[None]] | None = None

    async def start(self) -> Live:
        config = uvicorn_config(self.settings)
        config.log_level = "warning"
        server = DrainingServer(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        self._running = (server, task)
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        assert server.started, "the gateway did not start"
        return Live(self.settings, server, self.port)

    async def stop(self) -> None:
        if self._running is None:
            return
        server, task = self._running
        self._running = None
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)


@pytest.fixture
async def fixed_port_gateway(settings: Settings, pool: Any) -> AsyncIterator[Callable[..., FixedPortGateway]]:
    """``fixed_port_gateway(**setting_overrides)``: a :class:`FixedPortGateway` (not started); stopped after."""
    made: list[FixedPortGateway] = []

    def make(**overrides: Any) -> FixedPortGateway:
        gw = FixedPortGateway(settings, f"sdk-fixed-{len(made)}", overrides)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        await gw.stop()


class Proxy:
    """127.0.0.1:port -> the gateway. ``freeze()`` holds the server's bytes back (the client's still
    go through), ``thaw()`` lets them flow again, ``drop()`` aborts every socket (no close frame)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def drop(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._transports.update({client_w.transport, server_w.transport})
        for task in (asyncio.create_task(self._pipe(client_r, server_w, None)),
                     asyncio.create_task(self._pipe(server_r, client_w, self._flowing))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gate: asyncio.Event | None) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await src.read(65536):
                if gate is not None:
                    await gate.wait()
                if dst.transport.is_closing():
                    break
                dst.write(data)
                await dst.drain()
        dst.transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        self.thaw()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@pytest.fixture
async def proxy_to() -> AsyncIterator[Callable[[int], Awaitable[Proxy]]]:
    """``await proxy_to(port)``: a started :class:`Proxy` to a gateway's port; closed after the test."""
    proxies: list[Proxy] = []

    async def open_(port: int) -> Proxy:
        proxy = await Proxy(port).start()
        proxies.append(proxy)
        return proxy

    yield open_
    for proxy in proxies:
        await proxy.close()

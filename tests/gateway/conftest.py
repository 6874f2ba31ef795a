"""A live gateway (uvicorn in the test's event loop) and a small protocol client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import websockets

from gateway.auth import mint_token
from gateway.server import DrainingServer, gateway_of, uvicorn_config

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    import uvicorn

    from common.settings import Settings


class Live:
    def __init__(self, settings: Settings, server: uvicorn.Server, port: int) -> None:
        self.settings, self.server, self.port = settings, server, port
        self.url = f"ws://127.0.0.1:{port}/ws"
        self.http = f"http://127.0.0.1:{port}"

    @property
    def gateway(self) -> Any:
        return gateway_of(self.server)

    def token(self, user: str, role: str = "MEMBER", ttl: int = 3600) -> str:
        return mint_token(self.settings, user, role=role, ttl_s=ttl)


@pytest.fixture
async def start_gateway(settings: Settings, pool: Any) -> AsyncIterator[Callable[..., Awaitable[Live]]]:
    """Start gateways (optionally with setting overrides) on free ports; stopped after the test."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Live:
        overrides.setdefault("node_id", f"test-node-{len(servers)}")
        s = msgspec.structs.replace(settings, port=1, **overrides)
        config = uvicorn_config(s)
        config.port = 0
        config.log_level = "warning"
        server = DrainingServer(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        return Live(s, server, port)

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, task in servers:
        await asyncio.wait_for(task, timeout=20)


@pytest.fixture
async def live(start_gateway: Callable[..., Awaitable[Live]]) -> Live:
    return await start_gateway()


class Client:
    """A test client: sends commands, collects every server message in order."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self._n = 0
        self._reader = asyncio.create_task(self._read())
        self._arrived = asyncio.Event()
        self.closed: tuple[int | None, str | None] | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                data = json.loads(raw)
                assert isinstance(data, list), "server frames are JSON arrays"
                self.messages.extend(data)
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.closed = (rcvd.code, rcvd.reason) if rcvd else (None, None)
            self._arrived.set()

    async def send(self, type_: str, **fields: Any) -> str:
        self._n += 1
        cid = fields.pop("id", f"c{self._n}")
        await self.ws.send(json.dumps({"type": type_, "id": cid, **fields}))
        return cid

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0,
                       start: int = 0) -> dict[str, Any]:
        """The first message from index ``start`` on that satisfies ``pred`` (its index: ``last_index``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = start
        while True:
            for i in range(seen, len(self.messages)):
                if pred(self.messages[i]):
                    self.last_index = i
                    return self.messages[i]
            seen = len(self.messages)
            if self.closed is not None:
                raise AssertionError(f"closed {self.closed} while waiting; got {self.messages}")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"timed out; got {self.messages}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def reply(self, cid: str, timeout: float = 5.0, start: int = 0) -> dict[str, Any]:
        return await self.wait_for(lambda m: m.get("id") == cid and m["type"] in ("ack", "error"), timeout, start)

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        start = len(self.messages)  # the answer to this command, not to an earlier one with the same id
        return await self.reply(await self.send(type_, **fields), start=start)

    async def ok(self, type_: str, **fields: Any) -> Any:
        r = await self.call(type_, **fields)
        assert r["type"] == "ack", r
        return r["result"]

    def events(self, name: str | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "event" and (name is None or m["event"] == name)
                and (channel is None or m["channel"] == channel)]

    def stop_reading(self) -> None:
        """Stop consuming frames: the kernel buffers fill and the server sees a slow consumer."""
        self._reader.cancel()

    async def wait_closed(self, timeout: float = 5.0) -> tuple[int | None, str | None]:
        if self._reader.cancelled():  # read again to reach the close frame behind the backlog
            self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._reader, timeout)
        assert self.closed is not None
        return self.closed

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Open clients (authenticated with `token` via an auth frame unless `header`); closed after."""
    clients: list[Client] = []

    async def open_(live: Live, token: str | None = None, *, header: bool = False, **kw: Any) -> Client:
        headers = {"Authorization": f"Bearer {token}"} if header and token else None
        ws = await websockets.connect(live.url, additional_headers=headers, max_size=None, **kw)
        client = Client(ws)
        clients.append(client)
        if token and not header:
            await client.ok("auth", token=token)
        return client

    yield open_
    for c in clients:
        await c.close()

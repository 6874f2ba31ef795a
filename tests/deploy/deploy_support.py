"""Support for the deployment tests: the local cluster module and a reconnecting client.

(A module of its own, not conftest, so test modules can import it by name.)"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import websockets

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def load_local_cluster() -> ModuleType:
    """deploy/local_cluster.py, by path (``deploy`` is not an installed package)."""
    name = "vybe_deploy_local_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "local_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Peer:
    """A protocol client that, like an app, reconnects on 1001 and resumes by offset.

    ``url`` is where it (re)connects: nginx in the multi-node tests. ``upstreams``
    lists the node (``X-Vybe-Upstream`` header, or the URL) of each connection.
    """

    def __init__(self, url: str, token: str, *, reconnect: bool = True, reconnect_delay: float = 0.0) -> None:
        self.url, self.token, self.reconnect, self.reconnect_delay = url, token, reconnect, reconnect_delay
        self.messages: list[dict[str, Any]] = []
        self.channels: dict[str, str | None] = {}  # channel -> last offset seen
        self.upstreams: list[str] = []
        self.closes: list[int | None] = []
        self.resumes: list[dict[str, Any]] = []
        self._n = 0
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._arrived = asyncio.Event()
        self._ws: websockets.ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def upstream(self) -> str:
        return self.upstreams[-1]

    async def start(self) -> Peer:
        await self._connect()
        self._task = asyncio.create_task(self._loop())
        return self

    async def _connect(self) -> None:
        ws = await websockets.connect(self.url, max_size=None, open_timeout=10)
        headers = ws.response.headers if ws.response is not None else {}
        self.upstreams.append(headers.get("X-Vybe-Upstream", self.url))
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._call_on(ws, "auth", token=self.token)
            for channel, since in list(self.channels.items()):
                fields: dict[str, Any] = {"channel": channel}
                if since is not None:
                    fields["since"] = since
                ack = await self._call_on(ws, "subscribe", **fields)
                self.resumes.append(ack)
        except BaseException:
            reader.cancel()
            raise
        self._reader = reader
        self._connected.set()

    async def _loop(self) -> None:
        while True:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._connected.clear()
            if self._stopping or not self.reconnect:
                return
            await asyncio.sleep(self.reconnect_delay)
            for attempt in range(50):
                try:
                    await self._connect()
                    break
                except (TimeoutError, OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
                    await asyncio.sleep(0.05 * (attempt + 1))
            else:
                return

    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            async for raw in ws:
                for m in json.loads(raw):
                    self.messages.append(m)
                    if m.get("type") == "event" and m.get("channel") in self.channels:
                        self.channels[m["channel"]] = m["offset"]
                    fut = self._replies.pop(m.get("id"), None) if m.get("type") in ("ack", "error") else None
                    if fut is not None and not fut.done():
                        fut.set_result(m)
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            self.closes.append(rcvd.code if rcvd else None)
            self._arrived.set()

    async def _call_on(self, ws: websockets.ClientConnection, type_: str, **fields: Any) -> dict[str, Any]:
        self._n += 1
        cid = f"c{self._n}"
        fut = self._replies[cid] = asyncio.get_running_loop().create_future()
        await ws.send(json.dumps({"type": type_, "id": cid, **fields}))
        reply = await asyncio.wait_for(fut, 10)
        assert reply["type"] == "ack", reply
        return reply

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        await asyncio.wait_for(self._connected.wait(), 15)
        assert self._ws is not None
        return await self._call_on(self._ws, type_, **fields)

    async def subscribe(self, channel: str) -> dict[str, Any]:
        self.channels[channel] = None
        return await self.call("subscribe", channel=channel)

    def events(self, name: str | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "event" and (name is None or m["event"] == name)
                and (channel is None or m["channel"] == channel)]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not pred():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}; last messages {self.messages[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.5))

    async def close(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

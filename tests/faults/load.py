"""Load for fault tests: reconnecting protocol clients, readers that record every event,
and writers that record the answer (or the silence) to every command.

Every server frame is a JSON array of messages (docs/protocol.md). A client that
loses its socket reconnects (to the next URL it was given, like an app behind a
balancer), authenticates and resubscribes with ``since`` = its last offset, as the
protocol tells apps to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import websockets
from websockets.protocol import State

ANSWER_TIMEOUT_S = 10.0
_RETRY_CODES = ("unavailable", "closed")


@dataclass
class Outcome:
    """One attempt of one command: ``kind`` is ack, error, timeout (no answer in time) or closed (socket lost)."""

    client: str
    type: str
    id: str
    sent: float
    kind: str = "timeout"
    answered: float | None = None
    result: Any = None
    code: str | None = None
    retry_after: float | None = None
    attempt: int = 1

    def brief(self) -> str:
        took = f" after {self.answered - self.sent:.2f} s" if self.answered else ""
        what = f"error {self.code} (retry_after {self.retry_after})" if self.kind == "error" else self.kind
        return f"{self.client} {self.type} {self.id} try {self.attempt}: {what}{took}"


@dataclass
class Lost:
    """A subscription's hole the client was told about: a ``gap`` notice, or ``recovered: false`` on resume."""

    channel: str
    at: float
    why: str


@dataclass
class Client:
    """One app's connection. ``urls``: where it (re)connects, in turn."""

    name: str
    urls: list[str]
    token: str
    events: list[dict[str, Any]] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    closes: list[tuple[int | None, float]] = field(default_factory=list)
    offsets: dict[str, str | None] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    connects: int = 0
    malformed: list[str] = field(default_factory=list)
    """Frames that were not JSON."""

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ws: websockets.ClientConnection | None = None
        self._opened: list[websockets.ClientConnection] = []
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._url = itertools.cycle(self.urls)

    async def start(self) -> Client:
        await self._connect(next(self._url))
        self._task = asyncio.create_task(self._supervise(), name=f"client-{self.name}")
        return self

    async def _connect(self, url: str) -> None:
        ws = await websockets.connect(url, max_size=None, open_timeout=5, ping_interval=None)
        self._opened.append(ws)
        reader = asyncio.create_task(self._read(ws))
        try:
            await self._control(ws, "auth", token=self.token)
            for channel, since in list(self.offsets.items()):
                ack = await self._control(ws, "subscribe", channel=channel, **({"since": since} if since else {}))
                if since and ack["result"].get("recovered") is False:
                    self.lost.append(Lost(channel, time.time(), "recovered: false"))
        except BaseException:
            # Drop it at once: a graceful close would wait for a server that may not be answering.
            reader.cancel()
            ws.transport.abort()
            raise
        self._ws, self._reader = ws, reader
        self.connects += 1
        self._up.set()

    async def _control(self, ws: websockets.ClientConnection, type_: str, **fields: Any) -> dict[str, Any]:
        cid = f"{self.name}-ctl{next(self._ids)}"
        fut = self._pending[cid] = asyncio.get_running_loop().create_future()
        await ws.send(json.dumps({"type": type_, "id": cid, **fields}))
        reply: dict[str, Any] = await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)
        if reply["type"] != "ack":
            raise ConnectionError(f"{type_} refused: {reply}")
        return reply

    async def _supervise(self) -> None:
        """Reconnect after every close (backoff 0.2 s doubling to 2 s) until :meth:`close`."""
        while not self._stopping:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._up.clear()
            delay = 0.2
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    await self._connect(next(self._url))
                    break
                except (OSError, TimeoutError, ConnectionError, websockets.WebSocketException):
                    delay = min(delay * 2, 2.0)

    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    messages = json.loads(raw)
                except ValueError:  # a server bug; keep reading (an app would log it and carry on)
                    self.malformed.append(str(raw)[:300])
                    continue
                for message in messages:
                    self._on_message(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            if ws.state is not State.CLOSED:  # ended by a cancel or a bug of ours: do not leave it half open
                ws.transport.abort()
            if ws is self._ws:  # an established connection (not a reconnect attempt that failed its auth)
                rcvd = ws.protocol.close_rcvd
                self.closes.append((rcvd.code if rcvd else None, time.time()))
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_result({"type": "closed"})
            self._pending.clear()

    def _on_message(self, m: dict[str, Any]) -> None:
        kind = m.get("type")
        if kind == "event":
            m["at"] = time.time()
            self.events.append(m)
            if m["channel"] in self.offsets:
                self.offsets[m["channel"]] = m["offset"]
        elif kind == "notice" and m.get("code") == "gap":
            self.lost.append(Lost((m.get("data") or {}).get("channel", ""), time.time(), "gap"))
        elif kind in ("ack", "error"):
            fut = self._pending.pop(m.get("id") or "", None)
            if fut is not None and not fut.done():
                fut.set_result(m)

    async def call(self, type_: str, cid: str | None = None, attempt: int = 1, **fields: Any) -> Outcome:
        """Send one command and record its outcome (never raises for a missing answer)."""
        cid = cid or f"{self.name}-{next(self._ids)}"
        out = Outcome(self.name, type_, cid, time.time(), attempt=attempt)
        self.outcomes.append(out)
        try:
            await asyncio.wait_for(self._up.wait(), ANSWER_TIMEOUT_S)
        except TimeoutError:  # no socket for as long as an answer may take: it could not even be sent
            out.kind = "closed"
            return out
        try:
            assert self._ws is not None
            fut = self._pending[cid] = asyncio.get_running_loop().create_future()
            if self._reader.done():  # closed between the wake-up and here: nobody would resolve fut
                raise websockets.ConnectionClosed(None, None)
            await self._ws.send(json.dumps({"type": type_, "id": cid, **fields}))
            reply = await asyncio.wait_for(fut, ANSWER_TIMEOUT_S)
        except TimeoutError:
            self._pending.pop(cid, None)
            return out
        except websockets.ConnectionClosed:
            self._pending.pop(cid, None)
            reply = {"type": "closed"}
        out.kind, out.answered = reply["type"], time.time()
        out.result, out.code, out.retry_after = reply.get("result"), reply.get("code"), reply.get("retry_after")
        return out

    async def ok(self, type_: str, **fields: Any) -> Any:
        """A command that must succeed now (test setup)."""
        out = await self.call(type_, **fields)
        if out.kind != "ack":
            raise AssertionError(f"{self.name}: {type_} {fields} -> {out}")
        return out.result

    async def subscribe(self, channel: str) -> Any:
        result = await self.ok("subscribe", channel=channel)
        self.offsets.setdefault(channel, None)
        return result

    def received(self, channel: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["channel"] == channel]

    async def close(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._ws is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ws.close(), 2.0)
        for ws in self._opened:  # whatever is not closed by now (a dead server): no unclosed transports
            if ws.state is not State.CLOSED:
                ws.transport.abort()
        if getattr(self, "_reader", None) is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def call_with_retry(client: Client, type_: str, cid: str, tries: int = 5, stop: asyncio.Event | None = None,
                          **fields: Any) -> Outcome:
    """As an app does: on ``unavailable`` or a lost socket, retry the same id (the idempotency key),
    up to ``tries`` attempts or until ``stop`` is set."""
    out = await client.call(type_, cid, **fields)
    for attempt in range(2, tries + 1):
        code = out.code if out.kind == "error" else out.kind
        if code not in _RETRY_CODES or (stop is not None and stop.is_set()):
            break
        await asyncio.sleep(min(max(out.retry_after or 0.2, 0.2), 2.0))
        out = await client.call(type_, cid, attempt=attempt, **fields)
    return out


class Writer:
    """Posts vybes (unique ids), comments and reactions on ``vybe_id`` in a loop, one command at a time."""

    def __init__(self, client: Client, vybe_id: str, pause_s: float = 0.1) -> None:
        self.client, self.vybe_id, self.pause_s = client, vybe_id, pause_s
        self.n = 0
        self.stop = asyncio.Event()

    def _command(self, n: int) -> tuple[str, str, dict[str, Any]]:
        name, target = self.client.name, {"target_id": self.vybe_id, "reaction": "HEART"}
        match n % 4:
            case 1:
                return "post_vybe", f"{name}-p{n}", {"content": f"{name} post {n}"}
            case 2:
                return "comment", f"{name}-c{n}", {"vybe_id": self.vybe_id, "content": f"{name} comment {n}"}
            case 3:
                return "react", f"{name}-r{n}", target
            case _:
                return "unreact", f"{name}-u{n}", target

    async def step(self) -> Outcome:
        self.n += 1
        type_, cid, fields = self._command(self.n)
        return await call_with_retry(self.client, type_, cid, stop=self.stop, **fields)

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        while not stop.is_set():
            await self.step()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.pause_s)


@dataclass
class Load:
    """K readers (on ``feed`` and ``vybe:{seed}``) and M writers, spread over the gateways' URLs."""

    readers: list[Client]
    writers: list[Writer]
    seed: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(w.run(self.stop), name=f"writer-{w.client.name}") for w in self.writers]

    async def finish(self) -> None:
        """Stop writing (each writer finishes the command in hand)."""
        self.stop.set()
        await asyncio.gather(*self.tasks)

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for w in self.writers for o in w.client.outcomes]

    def acked(self, type_: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.type == type_ and o.kind == "ack"]

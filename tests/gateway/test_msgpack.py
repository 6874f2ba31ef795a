"""The optional binary protocol: MessagePack frames negotiated by WebSocket subprotocol."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import websockets

from common.bus import Meta, encode_message
from gateway.codec import JSON_CODEC, MSGPACK_CODEC, Codec, MsgpackCodec
from gateway.hub import hub as hub_module
from gateway.hub.base import Backend, HistoryEntry
from gateway.hub.hub import Hub
from gateway.protocol import Notice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio


class Socket:
    """A test client in either format: the one the server chose. Collects every server message."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.binary = ws.subprotocol == "vybe.msgpack"
        self.messages: list[dict[str, Any]] = []
        self.last_index = 0
        self._n = 0
        self._arrived = asyncio.Event()
        self.closed = False
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                assert isinstance(raw, bytes) == self.binary, "frames follow the negotiated format"
                data = msgspec.msgpack.decode(raw) if isinstance(raw, bytes) else json.loads(raw)
                assert isinstance(data, list), "server frames are arrays"
                self.messages.extend(data)
                self._arrived.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed = True
            self._arrived.set()

    async def send(self, type_: str, **fields: Any) -> str:
        self._n += 1
        cid = fields.pop("id", f"c{self._n}")
        command = {"type": type_, "id": cid, **fields}
        await self.ws.send(msgspec.msgpack.encode(command) if self.binary else json.dumps(command))
        return cid

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], start: int = 0) -> dict[str, Any]:
        """The first message from index ``start`` on that satisfies ``pred`` (its index: ``last_index``)."""
        async with asyncio.timeout(5):
            while True:
                for i in range(start, len(self.messages)):
                    if pred(self.messages[i]):
                        self.last_index = i
                        return self.messages[i]
                assert not self.closed, f"closed while waiting; got {self.messages}"
                self._arrived.clear()
                await self._arrived.wait()

    async def call(self, type_: str, **fields: Any) -> dict[str, Any]:
        start = len(self.messages)
        cid = await self.send(type_, **fields)
        return await self.wait_for(lambda m: m.get("id") == cid and m["type"] in ("ack", "error"), start)

    async def ok(self, type_: str, **fields: Any) -> Any:
        r = await self.call(type_, **fields)
        assert r["type"] == "ack", r
        return r["result"]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == "event" and m["event"] == name]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


@pytest.fixture
async def open_socket() -> AsyncIterator[Callable[..., Awaitable[Socket]]]:
    """Open sockets offering ``subprotocols`` (authenticated with ``token`` if given); closed after."""
    sockets: list[Socket] = []

    async def open_(live: Any, token: str | None = None, subprotocols: list[str] | None = None) -> Socket:
        ws = await websockets.connect(live.url, subprotocols=subprotocols, max_size=None)  # type: ignore[arg-type]
        sockets.append(socket := Socket(ws))
        if token:
            await socket.ok("auth", token=token)
        return socket

    yield open_
    for s in sockets:
        await s.close()


async def test_negotiation(live, open_socket) -> None:
    """vybe.msgpack offered: accepted, echoed, binary frames; nothing or vybe.json: JSON text frames."""
    packed = await open_socket(live, live.token("alice"), ["vybe.msgpack"])
    assert packed.ws.subprotocol == "vybe.msgpack" and packed.binary
    assert (await packed.ok("ping"))["time"] > 0
    plain = await open_socket(live, live.token("bob"))
    assert plain.ws.subprotocol is None and not plain.binary
    assert (await plain.ok("ping"))["time"] > 0
    named = await open_socket(live, live.token("carol"), ["vybe.json"])
    assert named.ws.subprotocol == "vybe.json" and (await named.ok("ping"))["time"] > 0
    # The client's order of preference decides; one we do not speak is passed over.
    first = await open_socket(live, None, ["vybe.cbor", "vybe.json", "vybe.msgpack"])
    assert first.ws.subprotocol == "vybe.json"


async def test_same_event_in_each_format(live, open_socket) -> None:
    """A msgpack and a JSON subscriber of one channel get the same acks and events, each in its format."""
    packed = await open_socket(live, live.token("alice"), ["vybe.msgpack"])
    plain = await open_socket(live, live.token("bob"))
    assert await packed.ok("subscribe", channel="feed") == await plain.ok("subscribe", channel="feed")
    vybe = await packed.ok("post_vybe", content="Breathing in binary")
    assert isinstance(vybe["created_at"], str)  # the JSON's ISO string, not a timestamp extension
    got = [await c.wait_for(lambda m: m.get("event") == "vybe.created") for c in (packed, plain)]
    assert got[0] == got[1] and got[0]["data"]["id"] == vybe["id"] and got[0]["channel"] == "feed"
    assert (await plain.ok("post_vybe", content="Breathing in text"))["user_id"] == "bob"
    second = [await c.wait_for(lambda m: m.get("data", {}).get("user_id") == "bob") for c in (packed, plain)]
    assert second[0] == second[1]


async def test_resume_with_since(live, open_socket) -> None:
    """A msgpack socket resumes with `since`: the missed events, in order, then live ones."""
    pub = live.gateway.publisher
    first = await open_socket(live, live.token("reader"), ["vybe.msgpack"])
    await first.ok("subscribe", channel="feed")
    await pub.publish("feed", "test.seq", {"n": 0})
    last = (await first.wait_for(lambda m: m.get("event") == "test.seq"))["offset"]
    await first.close()
    for n in range(1, 6):
        await pub.publish("feed", "test.seq", {"n": n})
    again = await open_socket(live, live.token("reader"), ["vybe.msgpack"])
    assert await again.ok("subscribe", channel="feed", since=last) == {"channel": "feed", "recovered": True,
                                                                          "missed": 5}
    await pub.publish("feed", "test.seq", {"n": 6})
    await again.wait_for(lambda m: m.get("data", {}).get("n") == 6)
    assert [e["data"]["n"] for e in again.events("test.seq")] == list(range(1, 7))


async def test_refused_frames_are_typed_errors(start_gateway, open_socket) -> None:
    """Malformed MessagePack, a text frame and an oversize frame get typed errors; the socket stays."""
    live = await start_gateway(max_frame_bytes=1024)
    c = await open_socket(live, live.token("u1"), ["vybe.msgpack"])
    await c.ws.send(b"\xc1")  # never valid MessagePack
    assert (await c.wait_for(lambda m: m["type"] == "error"))["code"] == "malformed"
    await c.ws.send(msgspec.msgpack.encode([1, 2]))
    error = await c.wait_for(lambda m: m["type"] == "error", start=c.last_index + 1)
    assert error["code"] == "malformed" and error["id"] is None
    assert (await c.call("post_vybe", id="bad", content=7))["code"] == "invalid"
    assert (await c.call("warp", id="w1"))["code"] == "unknown_type"
    await c.ws.send(json.dumps({"type": "ping", "id": "p1"}))
    error = await c.wait_for(lambda m: m["type"] == "error", start=c.last_index + 1)
    assert error["code"] == "malformed" and "text frames" in error["message"]
    await c.ws.send(msgspec.msgpack.encode({"type": "post_vybe", "id": "big", "content": "x" * 2000}))
    assert (await c.wait_for(lambda m: m["type"] == "error", start=c.last_index + 1))["code"] == "frame_too_large"
    assert (await c.ok("ping"))["time"] > 0
    assert await live.gateway.pool.fetchval("SELECT count(*) FROM shared_vybes") == 0


async def test_queued_messages_follow_the_socket_format(live, open_socket) -> None:
    """A notice queued as JSON for every socket (the drain's) reaches a msgpack socket as MessagePack,
    and a run queued behind it is spliced into the same array."""
    c = await open_socket(live, live.token("u1"), ["vybe.msgpack"])
    conn = next(iter(live.gateway.connections))
    conn.enqueue(b'{"type":"notice","code":"going_away","message":"bye"}')
    run = MSGPACK_CODEC.join([MSGPACK_CODEC.encode(Notice("gap", f"m{i}")) for i in range(3)])
    conn.deliver(run, b"not written: a backlog is queued")
    await c.wait_for(lambda m: m.get("message") == "m2")
    assert c.messages[-4:] == [{"type": "notice", "code": "going_away", "message": "bye"},
                               *({"type": "notice", "code": "gap", "message": f"m{i}"} for i in range(3))]


def test_msgpack_elements_join_into_one_array() -> None:
    """The send queue's elements (MessagePack arrays) merge into one array, whatever their sizes."""
    sizes = (0, 1, 15, 16, 65535, 65536)
    elements = [msgspec.msgpack.encode(list(range(n))) for n in sizes]
    assert msgspec.msgpack.decode(MSGPACK_CODEC.join(elements)) == [i for n in sizes for i in range(n)]
    assert MSGPACK_CODEC.from_json(b'{"a":1},{"b":[2]}') == msgspec.msgpack.encode([{"a": 1}, {"b": [2]}])


# -- the hub: once per event and format, shared bytes, bursts ---------------------


class _Backend(Backend):
    healthy = True  # type: ignore[assignment]

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def unsubscribe(self, channel: str) -> None: ...

    async def history(self, channel: str, epoch: str, after: tuple[int, int]) -> list[HistoryEntry] | None:
        return None

    async def publish(self, channel: str, event: str, data: object, meta: Meta | None = None) -> str:
        raise NotImplementedError


class _Sub:
    def __init__(self, user_id: str, codec: Codec) -> None:
        self.user_id, self.codec, self.is_moderator = user_id, codec, False
        self.blocked: frozenset[str] = frozenset()
        self.resuming: dict[str, Any] = {}
        self.frames: list[bytes] = []

    def push(self, element: bytes) -> None:
        raise AssertionError("fan-out of a socket with nothing queued writes frames")

    def deliver(self, element: bytes, frame_bytes: bytes) -> None:
        self.frames.append(frame_bytes)


class _Counting(MsgpackCodec):
    def __init__(self) -> None:
        self.calls = 0

    def from_json(self, element: bytes) -> bytes:
        self.calls += 1
        return super().from_json(element)


def _payload(frame: bytes) -> bytes:
    n = frame[1] & 0x7F
    return frame[2 + {126: 2, 127: 8}.get(n, 0):]


async def test_hub_transcodes_once_per_event_and_shares_the_frame(monkeypatch) -> None:
    """A burst reaches every msgpack socket as one shared frame, transcoded once per event, and
    only while the channel has a msgpack subscriber."""
    counting = _Counting()
    monkeypatch.setattr(hub_module, "MSGPACK_CODEC", counting)
    hub = Hub(_Backend())
    texts = [_Sub(f"j{i}", JSON_CODEC) for i in range(3)]
    for sub in texts:
        await hub.subscribe(sub, "feed")

    def burst(first: int) -> None:
        for n in range(first, first + 3):
            hub._on_message("feed", "e1", f"{n}-0", encode_message("test.seq", {"n": n, "big": 2**70}, Meta(a="x")))

    burst(1)
    await asyncio.sleep(0)
    assert counting.calls == 0 and all(len(s.frames) == 1 for s in texts)
    assert [m["data"]["n"] for m in json.loads(_payload(texts[0].frames[0]))] == [1, 2, 3]
    packed = [_Sub(f"m{i}", MSGPACK_CODEC) for i in range(3)]
    for sub in packed:
        await hub.subscribe(sub, "feed")
    burst(4)
    await asyncio.sleep(0)
    assert counting.calls == 3
    assert all(len(s.frames) == 1 for s in packed)
    assert len({id(s.frames[0]) for s in packed}) == 1, "one frame object for every msgpack socket"
    as_json = json.loads(_payload(texts[0].frames[-1]))
    assert [m["data"]["n"] for m in as_json] == [4, 5, 6]
    assert msgspec.msgpack.decode(_payload(packed[0].frames[0])) == [
        {**m, "data": {**m["data"], "big": str(2**70)}} for m in as_json]
    # A msgpack socket that blocked an author gets the rest, in a frame of its own.
    packed[0].blocked = frozenset({"x"})
    hub._on_message("feed", "e1", "7-0", encode_message("test.seq", {"n": 7}, Meta(a="x")))
    hub._on_message("feed", "e1", "8-0", encode_message("test.seq", {"n": 8}, Meta(a="y")))
    await asyncio.sleep(0)
    assert [m["data"]["n"] for m in msgspec.msgpack.decode(_payload(packed[0].frames[-1]))] == [8]
    assert [m["data"]["n"] for m in msgspec.msgpack.decode(_payload(packed[1].frames[-1]))] == [7, 8]


async def test_resumes_share_built_history_but_a_reused_id_is_rebuilt() -> None:
    """A storm's resumes from one offset build each missed event once; an id seen again under the
    same epoch with other bytes (a replica promoted with a slow clock) is built anew, not served stale."""

    class _History(_Backend):
        def __init__(self) -> None:
            self.entries = [HistoryEntry("17", "5-0", encode_message("test.seq", {"n": 5}))]

        async def history(self, channel: str, epoch: str, after: tuple[int, int]) -> list[HistoryEntry] | None:
            return list(self.entries)

    backend = _History()
    hub = Hub(backend)
    first, second = _Sub("a", JSON_CODEC), _Sub("b", JSON_CODEC)
    one = await hub.subscribe(first, "feed", since="17-4-0")
    two = await hub.subscribe(second, "feed", since="17-4-0")
    assert one.recovered and one.missed == two.missed and one.missed[0] is two.missed[0]  # built once
    assert b'"n":5' in one.missed[0]
    backend.entries = [HistoryEntry("17", "5-0", encode_message("test.seq", {"n": 6}))]
    third = await hub.subscribe(_Sub("c", JSON_CODEC), "feed", since="17-4-0")
    assert b'"n":6' in third.missed[0] and b'"n":5' not in third.missed[0]

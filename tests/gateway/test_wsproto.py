"""The WebSocket layer (gateway/wsproto.py) at the byte level, over a real socket to a live gateway:
the handshake's refusals, framing (masking, fragments, control frames, limits), the close handshake,
keepalive, flow control of commands, and that an idle socket holds no task."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from typing import TYPE_CHECKING, Any

import pytest

from gateway.wsproto import accept_key

if TYPE_CHECKING:
    from tests.gateway.conftest import Live

pytestmark = pytest.mark.anyio


class Raw:
    """A WebSocket client written against the RFC by hand, to send what a library would not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, live: Live, path: str = "/ws", headers: dict[str, str] | None = None) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
        key = base64.b64encode(os.urandom(16)).decode()
        fields = {"Host": f"127.0.0.1:{live.port}", "Upgrade": "websocket", "Connection": "Upgrade",
                  "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13", **(headers or {})}
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        writer.write(request.encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        raw = cls(reader, writer, head)
        if head.startswith(b"HTTP/1.1 101"):
            assert b"\r\nsec-websocket-accept: " + accept_key(key.encode()) + b"\r\n" in head
        return raw

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    @staticmethod
    def encode(op: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
        b0 = (0x80 if fin else 0) | rsv | op
        n = len(payload)
        length = bytes([n | (0x80 if mask else 0)]) if n < 126 else struct.pack("!BH", 126 | (0x80 if mask else 0), n)
        if not mask:
            return bytes([b0]) + length + payload
        key = os.urandom(4)
        return bytes([b0]) + length + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def send(self, op: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> None:
        self.writer.write(self.encode(op, payload, fin=fin, mask=mask, rsv=rsv))

    def command(self, **fields: Any) -> None:
        self.send(0x1, json.dumps(fields).encode())

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload); server frames are never masked."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert not b1 & 0x80, "server frames are unmasked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def messages(self, count: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while len(out) < count:
            op, payload = await self.frame()
            if op == 0x1:
                out += json.loads(payload)
        return out

    async def close_code(self, timeout: float = 5.0) -> int:
        """Read until the server's close frame; its code."""
        while True:
            op, payload = await self.frame(timeout)
            if op == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])

    def close(self) -> None:
        self.writer.close()


async def test_handshake_refusals(live: Live) -> None:
    """Another path is 404, a version other than 13 is 426 naming 13, a malformed key is 400,
    and plain HTTP on /ws is 426: each a plain HTTP answer, not a hang."""
    other = await Raw.open(live, "/chat")
    assert other.status == 404
    version = await Raw.open(live, headers={"Sec-WebSocket-Version": "8"})
    assert version.status == 426 and b"sec-websocket-version: 13" in version.head.lower()
    key = await Raw.open(live, headers={"Sec-WebSocket-Key": "not-base64-of-16-bytes"})
    assert key.status == 400
    for raw in (other, version, key):
        raw.close()
    import httpx

    async with httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.get("/ws")).status_code == 426


async def test_fragments_pings_and_the_close_handshake(live: Live) -> None:
    """A command split over three frames, with a ping between them, is one command; the ping gets
    its pong with the same payload; a client's close is echoed with its code."""
    raw = await Raw.open(live)
    assert raw.status == 101
    body = json.dumps({"type": "auth", "id": "a1", "token": live.token("frag-user")}).encode()
    raw.send(0x1, body[:10], fin=False)
    raw.send(0x9, b"are you there")
    raw.send(0x0, body[10:20], fin=False)
    raw.send(0x0, body[20:])
    assert await raw.frame() == (0xA, b"are you there")
    (ack,) = await raw.messages(1)
    assert ack["type"] == "ack" and ack["id"] == "a1" and ack["result"]["user_id"] == "frag-user"
    raw.send(0x8, struct.pack("!H", 4321) + b"bye")
    assert await raw.close_code() == 4321
    assert await asyncio.wait_for(raw.reader.read(), 5) == b""  # the server then closes TCP
    raw.close()


@pytest.mark.parametrize(("frame", "code"), [
    ({"op": 0x1, "payload": b'{"type":"ping"}', "mask": False}, 1002),  # clients must mask
    ({"op": 0x1, "payload": b'{"type":"ping"}', "rsv": 0x40}, 1002),  # no extension was negotiated
    ({"op": 0x0, "payload": b"orphan"}, 1002),  # a continuation with no message
    ({"op": 0x9, "payload": b"x", "fin": False}, 1002),  # control frames are never fragmented
    ({"op": 0x3, "payload": b""}, 1002),  # a reserved opcode
    ({"op": 0x1, "payload": b"\xff\xfe not utf-8"}, 1007),
])
async def test_protocol_errors_close_with_the_rfc_code(live: Live, frame: dict[str, Any], code: int) -> None:
    raw = await Raw.open(live)
    raw.send(frame.pop("op"), frame.pop("payload"), **frame)
    assert await raw.close_code() == code
    raw.close()


async def test_a_frame_over_the_hard_cap_is_closed_1009_before_it_is_buffered(live: Live) -> None:
    raw = await Raw.open(live)
    cap = live.server.config.ws_max_size
    # Only the header of a frame announcing cap + 1 bytes: the server must not wait for the body.
    raw.writer.write(bytes([0x81, 0xFF]) + struct.pack("!Q", cap + 1) + os.urandom(4))
    assert await raw.close_code() == 1009
    raw.close()


async def test_a_peer_that_ignores_pings_is_closed_1011_and_one_that_answers_stays(start_gateway: Any) -> None:
    live = await start_gateway(heartbeat_s=0.4)
    silent = await Raw.open(live)  # reads nothing, answers no ping
    polite = await Raw.open(live)
    polite.command(type="auth", id="a", token=live.token("polite"))
    pinged = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.0  # five heartbeats
    while loop.time() < deadline:
        try:
            op, payload = await polite.frame(timeout=deadline - loop.time())
        except TimeoutError:
            break
        if op == 0x9:
            pinged += 1
            polite.send(0xA, payload)
        assert op != 0x8, "a socket that answers pings was closed"
    assert pinged >= 3
    assert await silent.close_code() == 1011
    polite.command(type="ping", id="still-here")
    assert (await polite.messages(1))[-1]["id"] in ("a", "still-here")
    silent.close()
    polite.close()


async def test_pipelined_commands_are_answered_in_order_and_reading_resumes(live: Live) -> None:
    """More commands than the reader's inbox holds, sent at once: reading pauses (TCP pushes back)
    and resumes; every command is answered, in order."""
    raw = await Raw.open(live)
    raw.command(type="auth", id="auth", token=live.token("pipeline", ttl=600))
    for i in range(60):  # the rate limit's default burst allows these
        raw.command(type="ping", id=f"p{i}")
    got = await raw.messages(61)
    ids = [m["id"] for m in got if m["type"] in ("ack", "error")]
    assert ids == ["auth"] + [f"p{i}" for i in range(60)]  # answered (ack, or rate_limited), in order
    raw.command(type="ping", id="after")
    (last,) = await raw.messages(1)
    assert last["id"] == "after"
    raw.close()


async def test_idle_sockets_hold_no_task(live: Live) -> None:
    """Fifty authenticated, subscribed, idle sockets add no asyncio task (a task per socket was most
    of an idle socket's memory); a command runs one only while it is answered."""
    before = len(asyncio.all_tasks())
    socks = []
    for i in range(50):
        raw = await Raw.open(live)
        raw.command(type="auth", id="a", token=live.token(f"idle-{i}"))
        raw.command(type="subscribe", id="s", channel="feed")
        await raw.messages(2)
        socks.append(raw)
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) - before < 5
    assert len(live.gateway.connections) == 50
    for raw in socks:
        raw.close()
    for _ in range(100):
        if not live.gateway.connections:
            break
        await asyncio.sleep(0.05)
    assert not live.gateway.connections  # every dropped socket was torn down


def _upgrade_request(live: Live, key: str) -> bytes:
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


async def test_a_head_in_pieces_and_a_command_right_behind_it(live: Live) -> None:
    """A request head that arrives in pieces is waited for; a frame sent in the same write as the
    request (before the 101) is read, not dropped."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    key = base64.b64encode(os.urandom(16)).decode()
    request = _upgrade_request(live, key)
    for piece in (request[:7], request[7:40], request[40:-3]):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.05)
    raw = Raw(reader, writer, b"")
    auth = json.dumps({"type": "auth", "id": "early", "token": live.token("early-bird")}).encode()
    writer.write(request[-3:] + Raw.encode(0x1, auth))  # one write: the head's end and a frame
    raw.head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert raw.status == 101 and accept_key(key.encode()) in raw.head
    (ack,) = await raw.messages(1)
    assert ack["id"] == "early" and ack["type"] == "ack"
    raw.close()


async def test_an_upgrade_after_an_http_request_on_the_same_connection(live: Live) -> None:
    """uvicorn serves a kept-alive connection's first request; an upgrade that follows on it (as nginx
    sends it on a pooled upstream connection) still becomes a working socket (uvicorn's ws= hook)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    assert json.loads(await reader.readexactly(length)) == {"status": "ok"}
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(_upgrade_request(live, key))
    raw = Raw(reader, writer, await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
    assert raw.status == 101 and accept_key(key.encode()) in raw.head
    raw.command(type="auth", id="later", token=live.token("kept-alive"))
    (ack,) = await raw.messages(1)
    assert ack["id"] == "later" and ack["type"] == "ack"
    raw.close()


async def test_heads_that_never_end_in_crlf_are_answered_and_waiting_connections_close_at_shutdown(
        start_gateway: Any) -> None:
    """A head with bare LF line ends gets uvicorn's 400 at once, not a wait for 16 KB; a connection that
    has sent half a head is closed by a graceful shutdown."""
    live = await start_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", live.port)
    writer.write(b"GET /healthz HTTP/1.1\nHost: x\n\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 400")
    writer.close()
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", live.port)
    idle_writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    await idle_writer.drain()
    await asyncio.sleep(0.1)
    live.server.should_exit = True
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""
    idle_writer.close()


async def test_a_command_sent_just_before_the_close_is_carried_out(live: Live) -> None:
    """Send, then close at once (a script, an app sent to the background): the post sent in the
    same write as the close frame, and one sent just before a bare FIN, are both stored."""
    for i, ending in enumerate((Raw.encode(0x8, struct.pack("!H", 1000)), b"")):
        raw = await Raw.open(live)
        raw.command(type="auth", id="a", token=live.token(f"send-then-close-{i}"))
        await raw.messages(1)
        post = json.dumps({"type": "post_vybe", "id": "p", "content": f"said and gone {i}"}).encode()
        raw.writer.write(Raw.encode(0x1, post) + ending)
        if not ending:
            raw.writer.write_eof()
        await raw.writer.drain()
        raw.close()
    pool = live.gateway.pool
    for _ in range(100):
        stored = await pool.fetchval("SELECT count(*) FROM shared_vybes WHERE content LIKE 'said and gone %'")
        if stored == 2:
            break
        await asyncio.sleep(0.05)
    assert stored == 2


async def test_many_tiny_fragments_are_refused_without_stalling_the_loop(live: Live) -> None:
    """A message of empty continuation frames counts FRAGMENT_COST bytes per fragment toward the cap
    (1009), and the check is linear: /healthz keeps answering meanwhile."""
    import httpx

    raw = await Raw.open(live)
    raw.send(0x1, b"[", fin=False)
    empty = Raw.encode(0x0, b"", fin=False)
    raw.writer.write(empty * 40_000)
    async with httpx.AsyncClient(base_url=live.http) as http:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert (await http.get("/healthz")).status_code == 200
        assert loop.time() - t0 < 1.0
    assert await raw.close_code() == 1009
    raw.close()


async def test_a_failing_command_path_closes_1011_instead_of_leaving_the_socket_hanging(
        live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(_identity: Any) -> list[str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(live.gateway, "on_first_auth", broken)
    raw = await Raw.open(live, headers={"Authorization": f"Bearer {live.token('unlucky')}"})
    assert await raw.close_code() == 1011
    raw.close()
    for _ in range(100):
        if not live.gateway.connections:
            break
        await asyncio.sleep(0.05)
    assert not live.gateway.connections


async def test_a_flood_close_with_reading_paused_still_ends_cleanly(live: Live) -> None:
    """A flood (4029) closes while the server has paused reading the socket: reading resumes for the
    close handshake, so the client gets the close frame and a clean end of stream, not a reset."""
    raw = await Raw.open(live)
    raw.command(type="auth", id="a", token=live.token("flooder", ttl=600))
    raw.writer.write(b"".join(Raw.encode(0x1, json.dumps({"type": "ping", "id": f"f{i}"}).encode())
                              for i in range(200)))
    assert await raw.close_code() == 4029
    raw.send(0x8, struct.pack("!H", 4029))  # the client's answer
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await asyncio.wait_for(raw.reader.read(), 5) == b""
    assert loop.time() - t0 < 1.0  # not the CLOSE_TIMEOUT_S abort
    raw.close()


async def test_an_auth_that_finishes_after_the_peer_left_arms_no_timer(live: Live,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer leaves while its auth waits on the database: the auth still completes (commands sent
    before a close are carried out) but arms no expiry timer that would keep the session alive."""
    gw = live.gateway
    real = gw.on_first_auth

    async def slow(identity: Any) -> list[str]:
        await asyncio.sleep(0.5)
        return await real(identity)

    monkeypatch.setattr(gw, "on_first_auth", slow)
    raw = await Raw.open(live)
    raw.command(type="auth", id="a", token=live.token("leaves-early"))
    await asyncio.sleep(0.1)
    conn = next(iter(gw.connections))
    raw.close()
    for _ in range(50):
        if not gw.connections and not gw.closing:
            break
        await asyncio.sleep(0.05)
    assert conn.identity is not None  # the auth did finish
    assert conn._timer is None

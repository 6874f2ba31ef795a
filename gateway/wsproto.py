"""The WebSocket layer: one slotted ``asyncio.Protocol`` per socket, no ASGI (RFC 6455).

:class:`Front` is uvicorn's HTTP protocol class (``http=Front`` in its config): it reads a new
connection's first request head, makes a WebSocket upgrade a :class:`WebSocket` at once, and hands
anything else, with the bytes read, to uvicorn's own HTTP protocol (REST, health, metrics, pages;
an upgrade sent later on a kept-alive HTTP connection, as a proxy's pooled upstream connection
sends it, reaches :class:`WebSocket` through uvicorn's ``ws=`` hook). A reconnect storm is mostly
handshakes on new connections: none of them builds uvicorn's per-request objects.

Each socket is this small object and a :class:`gateway.connection.Connection`, driven by callbacks:
no task, no coroutine frame and no timer lives per idle socket (a task runs only while a socket has
commands to answer or a backlog to write, and one keepalive loop per process pings every socket).
Through uvicorn's ASGI WebSocket protocol an idle socket cost 14 KB of Python objects, most of them
the protocol's own state, its ASGI task and the coroutine chain under it (tracemalloc, 2,000
sockets).

Fan-out sends the same event to thousands of sockets: the bytes of a server frame (unmasked)
are the same for every socket of one wire format, so the hub builds them once per event and
format, and each socket whose transport is writable gets them with one ``transport.write``.

Only ``/ws`` is a WebSocket endpoint; no extension (per-message deflate costs CPU and ~64 KB per
socket, and our frames are small). Frames over ``max_size`` close with 1009, text that is not
UTF-8 with 1007, protocol errors with 1002; pings are answered, and a peer that leaves a ping
unanswered for a heartbeat is closed with 1011.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import struct
import weakref
from typing import TYPE_CHECKING, Any

try:
    from websockets.speedups import apply_mask  # C, shipped with websockets
except ImportError:  # pragma: no cover - a build without the extension
    from websockets.utils import apply_mask

from gateway.auth import bearer_token

if TYPE_CHECKING:
    from gateway.connection import Connection

log = logging.getLogger(__name__)

WS_PATH = b"/ws"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLOSE_TIMEOUT_S = 2.0
"""How long a socket waits for the peer's close frame after sending its own before dropping it."""

_OPEN, _CLOSING, _CLOSED, _FAILED = 1, 2, 3, 4  # _FAILED: a protocol error; input is discarded
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Close codes a peer may send (RFC 6455 7.4.1, plus the 3000-4999 ranges).
_PEER_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked, final text frame carrying ``payload``."""
    return _frame(0x81, payload)


def binary_frame(payload: bytes) -> bytes:
    """One complete, unmasked, final binary frame carrying ``payload``."""
    return _frame(0x82, payload)


def data_frame(payload: bytes, binary: bool) -> bytes:
    """A binary frame or a text frame (``payload`` is then UTF-8) carrying ``payload``."""
    return _frame(0x82 if binary else 0x81, payload)


def _frame(first: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit the 125-byte control payload."""
    cut = reason.encode()[:123].decode("utf-8", "ignore").encode()  # never half a character
    return _frame(0x88, struct.pack("!H", code) + cut)


PING_FRAME = bytes((0x89, 0))
FRAGMENT_COST = 64
"""Bytes each fragment counts toward ``max_size`` beyond its payload: a message of many tiny fragments
is a message of many list entries (an unauthenticated client could otherwise send millions)."""


def accept_key(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())  # the RFC's digest, not for security


def parse_request(data: bytes) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    """Method, target and headers (names lower-cased; repeated headers joined with ", ") of the
    request uvicorn hands over: its request line and headers, re-serialised."""
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    method, target = [*lines[0].split(b" "), b"", b""][:2]
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = headers[name] + b", " + value if name in headers else value
    return method, target, headers


def _head_end(data: bytes, start: int = 0) -> int:
    """Where the request head ends (after its blank line), or -1; searched from ``start``."""
    end = data.find(b"\r\n\r\n", start)
    return end + 4 if end >= 0 else -1


def is_upgrade(headers: dict[bytes, bytes]) -> bool:
    """A WebSocket upgrade request (``Upgrade: websocket`` and ``Connection: upgrade``)."""
    return (headers.get(b"upgrade", b"").strip().lower() == b"websocket"
            and b"upgrade" in [t.strip() for t in headers.get(b"connection", b"").lower().split(b",")])


class Front(asyncio.Protocol):
    """A new connection until its first request head is read: a WebSocket upgrade becomes a
    :class:`WebSocket`, anything else uvicorn's HTTP protocol (each fed the bytes read)."""

    __slots__ = ("_app_state", "_buf", "_config", "_loop", "_server_state", "_transport")
    HEAD_MAX = 16384
    """A longer head goes to uvicorn's protocol (which answers it as HTTP)."""

    def __init__(self, config: Any, server_state: Any, app_state: Any = None, _loop: Any = None) -> None:
        self._config, self._server_state, self._app_state, self._loop = config, server_state, app_state, _loop
        self._transport: asyncio.Transport | None = None
        self._buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server_state.connections.add(self)  # closed by uvicorn's shutdown while it waits for a head

    def data_received(self, data: bytes) -> None:
        old = len(self._buf)
        buf = self._buf + data if old else data
        end = _head_end(buf, max(0, old - 3))
        if end < 0 and len(buf) < self.HEAD_MAX and b"\n\n" not in buf[max(0, old - 1):]:
            self._buf = buf
            return
        # A whole head, a long one, or one with bare LF line ends (uvicorn's parser refuses those).
        self._buf = b""
        transport = self._transport
        self._server_state.connections.discard(self)
        if transport is None:
            return
        request = parse_request(buf[:end]) if end >= 0 and buf.startswith(b"GET ") else None
        if request is not None and is_upgrade(request[2]):
            ws = WebSocket(self._config, self._server_state)
            ws.connection_made(transport)
            transport.set_protocol(ws)
            ws.upgrade(request, buf[end:])
            return
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        http = AutoHTTPProtocol(config=self._config, server_state=self._server_state,  # type: ignore[call-arg]
                                app_state=self._app_state, _loop=self._loop)
        http.connection_made(transport)
        transport.set_protocol(http)
        http.data_received(buf)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._server_state.connections.discard(self)

    def eof_received(self) -> bool | None:
        return None  # closed before a whole request: close

    def shutdown(self) -> None:
        """uvicorn's shutdown: a connection that has sent no whole request yet is closed."""
        if self._transport is not None:
            self._transport.close()


_GATEWAYS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def gateway_of_config(config: Any) -> Any:
    """The Gateway behind uvicorn's config (the app may be wrapped, e.g. by proxy-header middleware);
    found once per config, then remembered (None, before start-up, is not). Every server start builds
    its own Config (gateway/server.py), so a remembered Gateway is never a stopped one."""
    gw = _GATEWAYS.get(config)
    if gw is None:
        app = config.loaded_app
        while hasattr(app, "app") and not hasattr(app, "state"):
            app = app.app
        gw = getattr(getattr(app, "state", None), "gateway", None)
        if gw is not None:
            _GATEWAYS[config] = gw
    return gw


class WebSocket(asyncio.Protocol):
    """One server-side WebSocket: handshake, framing, control frames and flow control.

    The :class:`Connection` above it gets ``received(str | bytes)`` per message and ``lost(code)``
    once, and writes with :meth:`write_frame` (False: not now) and :meth:`send_close`.
    """

    __slots__ = ("_buf", "_config", "_frag_len", "_frag_op", "_frags", "_lost", "_max_size", "_reading",
                 "_server_state", "_state", "_waiter", "close_received", "conn", "ping_at", "transport", "writable")

    def __init__(self, config: Any, server_state: Any, app_state: Any = None, _loop: Any = None) -> None:
        self._config, self._server_state = config, server_state
        self._max_size: int = config.ws_max_size
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Connection | None = None
        self._state = 0  # until :meth:`upgrade`
        self._buf = b""
        self._frag_op = -1
        self._frags: list[bytes] | None = None
        self._frag_len = 0  # the fragments' bytes so far, each counted FRAGMENT_COST more
        self._reading = True
        self._lost = False  # connection_lost ran
        self._waiter: asyncio.Future[None] | None = None
        self.close_received = False
        self.writable = True
        self.ping_at = 0.0  # loop time of the unanswered keepalive ping (0: none)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._server_state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._lost = True
        self._server_state.connections.discard(self)
        self._wake()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.lost(1006)

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        self._wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport: a half-closed WebSocket is a gone one

    def shutdown(self) -> None:
        """uvicorn's shutdown, after the gateway's drain: close what is left with 1012 (a session
        still open flushes its queue first)."""
        if self._state == 0:
            self._reject(503, b"server shutting down")
        elif self.conn is not None:
            self.conn.close(1012, "server restart")
        else:
            self.send_close(1012, "server restart")

    def data_received(self, data: bytes) -> None:
        if self._state == 0:
            self._handshake(data)
            return
        if self._state == _FAILED:
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        try:
            self._parse(data)
        except _ProtocolError as err:
            self._fail(err.code, err.reason)

    # -- handshake ----------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        """An upgrade on a kept-alive HTTP connection (a proxy's pooled upstream connection), as
        uvicorn's HTTP protocol hands it over through its ``ws=`` hook: the head, re-serialised."""
        end = _head_end(data)
        if end < 0:
            self._reject(400, b"bad WebSocket handshake")
            return
        self.upgrade(parse_request(data[:end]))

    def upgrade(self, request: tuple[bytes, bytes, dict[bytes, bytes]], rest: bytes = b"") -> None:
        """Answer the upgrade ``request`` (from :func:`parse_request`): 101 and a session, or a
        refusal; ``rest``: bytes that came behind the request (frames)."""
        method, target, headers = request
        if target.split(b"?", 1)[0] != WS_PATH:
            self._reject(404, b"no WebSocket endpoint here: connect to /ws")
            return
        key = headers.get(b"sec-websocket-key", b"")
        try:
            valid_key = len(base64.b64decode(key, validate=True)) == 16
        except ValueError:
            valid_key = False
        if method != b"GET" or not valid_key:
            self._reject(400, b"bad WebSocket handshake")
            return
        if headers.get(b"sec-websocket-version") != b"13":
            self._reject(426, b"WebSocket version 13 only", b"sec-websocket-version: 13\r\n")
            return
        gw = gateway_of_config(self._config)
        if gw is None:
            self._reject(503, b"starting up")
            return
        from gateway.codec import negotiate
        from gateway.connection import Connection

        offered = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").decode("latin-1").split(",")]
        codec, subprotocol = negotiate([p for p in offered if p])
        response = [b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                    b"sec-websocket-accept: ", accept_key(key), b"\r\n"]
        if subprotocol:
            response += [b"sec-websocket-protocol: ", subprotocol.encode(), b"\r\n"]
        self.transport.write(b"".join([*response, b"\r\n"]))
        self._state = _OPEN
        if gw.draining:
            self.send_close(1013, "draining")
            return
        self.conn = Connection(gw, self, codec)
        self.conn.start(bearer_token(headers.get(b"authorization")))
        if rest:  # frames sent right behind the request
            self.data_received(rest)

    def _reject(self, status: int, body: bytes, extra: bytes = b"") -> None:
        phrase = {400: b"Bad Request", 404: b"Not Found", 426: b"Upgrade Required", 503: b"Service Unavailable"}
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n%s\r\n%s" % (status, phrase[status], len(body), extra, body))
        self._state = _CLOSED
        self.transport.close()

    # -- frames in --------------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        n, i = len(data), 0
        while n - i >= 2 and self._state != _CLOSED:
            b0, b1 = data[i], data[i + 1]
            length, h = b1 & 0x7F, i + 2
            if length == 126:
                if n - i < 4:
                    break
                length, h = int.from_bytes(data[i + 2:i + 4], "big"), i + 4
            elif length == 127:
                if n - i < 10:
                    break
                length, h = int.from_bytes(data[i + 2:i + 10], "big"), i + 10
            if b0 & 0x70 or not b1 & 0x80:
                raise _ProtocolError(1002, "reserved bits set" if b0 & 0x70 else "client frames must be masked")
            if length > self._max_size:
                raise _ProtocolError(1009, f"frame over {self._max_size} bytes")
            end = h + 4 + length
            if end > n:
                break
            payload = apply_mask(data[h + 4:end], data[h:h + 4]) if length else b""
            i = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        if i < n and self._state != _CLOSED:
            self._buf = data[i:]

    def _frame(self, fin: int, op: int, payload: bytes) -> None:
        if op >= _CLOSE:
            if not fin or len(payload) > 125:
                raise _ProtocolError(1002, "bad control frame")
            if op == _PING:
                if self._state == _OPEN and self.writable:  # a peer that reads nothing gets no pong pile
                    self.transport.write(_frame(0x8A, payload))
            elif op == _PONG:
                self.ping_at = 0.0
            elif op == _CLOSE:
                self._on_close(payload)
            else:
                raise _ProtocolError(1002, "unknown opcode")
            return
        if op == _CONT:
            if self._frags is None:
                raise _ProtocolError(1002, "continuation without a message")
            self._frags.append(payload)
            self._frag_len += len(payload) + FRAGMENT_COST
            if self._frag_len > self._max_size:
                raise _ProtocolError(1009, f"message over {self._max_size} bytes")
            if not fin:
                return
            payload, op, self._frags = b"".join(self._frags), self._frag_op, None
        elif op in (_TEXT, _BINARY):
            if self._frags is not None:
                raise _ProtocolError(1002, "new message inside a fragmented one")
            if not fin:
                self._frags, self._frag_op, self._frag_len = [payload], op, len(payload) + FRAGMENT_COST
                return
        else:
            raise _ProtocolError(1002, "unknown opcode")
        if self._state != _OPEN or self.conn is None:
            return  # closing: data after our close frame is read and dropped
        if op == _TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                log.debug("invalid UTF-8 in a text message: closing with 1007")
                raise _ProtocolError(1007, "invalid UTF-8") from None
            self.conn.received(text)
        else:
            self.conn.received(payload)

    def _on_close(self, payload: bytes) -> None:
        code = 1005
        if payload:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
            ok = code in _PEER_CODES or 3000 <= code < 5000
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                ok = False
            if not ok:
                raise _ProtocolError(1002, "bad close frame")
        self.close_received = True
        if self._state == _OPEN:  # echo it, then close the TCP connection (the server closes first)
            self.transport.write(close_frame(code if code != 1005 else 1000))
        self._state = _CLOSED
        self.transport.close()  # after what is buffered: a peer that reads nothing is aborted below
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._give_up)
        self._buf = b""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.lost(code)

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error: the close frame, then our half of the TCP connection (FIN: the peer need
        not wait for a close reply we could not parse). What follows is read and discarded until the
        peer closes, or ``CLOSE_TIMEOUT_S`` (closing outright with unread input would reset the
        connection before the peer reads why)."""
        if self._state == _OPEN:
            self.transport.write(close_frame(code, reason))
        if self._state in (_OPEN, _CLOSING):
            if self.transport.can_write_eof():
                self.transport.write_eof()
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._give_up)
        if self._state != _CLOSED:
            self._state = _FAILED
        self._buf, self._frags = b"", None
        self._wake()
        self.resume_reading()
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.lost(code)

    # -- frames out ---------------------------------------------------------------------------

    def write_frame(self, frame: bytes) -> bool:
        """Write a ready frame now if the socket is open and its transport takes more; False: not now."""
        if self._state != _OPEN or not self.writable:
            return False
        self.transport.write(frame)
        return True

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN

    async def wait_writable(self) -> None:
        """Until the transport takes writes again, or the socket is no longer open."""
        while self._state == _OPEN and not self.writable:
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiter)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def ping(self, now: float) -> None:
        """The keepalive's ping (see :func:`keepalive`)."""
        if self._state == _OPEN:
            self.ping_at = now
            self.transport.write(PING_FRAME)

    def send_close(self, code: int, reason: str = "") -> None:
        """Send a close frame (once) and drop the connection when the peer answers it, or after
        ``CLOSE_TIMEOUT_S``; later writes are refused."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self.transport.write(close_frame(code, reason))
        self._wake()  # a writer waiting for the transport gives up
        self.resume_reading()  # the peer's close frame must be read, whatever paused reading
        if self.close_received:
            self.transport.close()
        else:
            asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._give_up)

    def _give_up(self) -> None:
        if not self._lost:
            self.transport.abort()

    def pause_reading(self) -> None:
        if self._reading and self._state == _OPEN:
            self._reading = False
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and not self.transport.is_closing():
            self._reading = True
            self.ping_at = 0.0  # no pong could be read meanwhile
            self.transport.resume_reading()

    @property
    def reading(self) -> bool:
        return self._reading


class _ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


async def keepalive(connections: Any, interval_s: float) -> None:
    """Ping every socket each ``interval_s`` and close (1011) those whose last ping went unanswered
    for as long: one loop per process instead of a timer per socket. ``connections``: the live
    :class:`Connection` set; the sockets are pinged in slices so one sweep never blocks the loop."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval_s)
        now = loop.time()
        conns = list(connections)
        for start in range(0, len(conns), 500):
            for conn in conns[start:start + 500]:
                sock = conn.sock
                if not sock.reading:
                    continue  # we paused reading (a command backlog): a pong could not be read
                if sock.ping_at and now - sock.ping_at >= interval_s:
                    conn.lost_keepalive()
                elif not sock.ping_at:
                    sock.ping(now)
            await asyncio.sleep(0)

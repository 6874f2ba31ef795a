"""uvicorn's sans-I/O WebSocket protocol with one addition: a direct frame write.

Fan-out sends the same event to thousands of sockets. Going through ASGI costs
a task wake-up, a coroutine, a str round trip and a re-framing per socket; the
bytes of a server frame (unmasked, RFC 6455) are identical for every socket of
one wire format, so the hub builds them once per event and format, and each
socket whose queue is empty and whose transport is writable gets them with one
``transport.write``. Anything else (a paused transport, a backlog, closing)
falls back to the ASGI path, which keeps its ordering and flow control.

The protocol exposes itself to the app as ``scope["extensions"]["vybe.raw"]``.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


def text_frame(payload: bytes) -> bytes:
    """One complete, unmasked, final text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def binary_frame(payload: bytes) -> bytes:
    """One complete, unmasked, final binary frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", 0x82, 126, n) + payload
    return struct.pack("!BBQ", 0x82, 127, n) + payload


def data_frame(payload: bytes, binary: bool) -> bytes:
    """A binary frame or a text frame (``payload`` is then UTF-8) carrying ``payload``."""
    return binary_frame(payload) if binary else text_frame(payload)


class _Signal:
    """asyncio.Event's interface for one waiter at most, without Event's deque (~0.7 KB)."""

    __slots__ = ("_value", "_waiter")

    def __init__(self) -> None:
        self._value = True
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        while not self._value:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._waiter)
        return True


class _Inbox:
    """asyncio.Queue's interface as uvicorn uses it here (one consumer), in a list.

    asyncio.Queue holds three deques and an Event: ~3.8 KB per socket, the largest
    single cost of an idle connection (measured with tracemalloc at 2,000 sockets).
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class RawWebSocketProtocol(WebSocketsSansIOProtocol):
    """The stock protocol, lighter per socket, plus :meth:`write_frame` for pre-built frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request: Any = None
        # Lighter stand-ins for uvicorn's asyncio.Queue and asyncio.Event, with the methods it calls.
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Signal()  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        self._request = event
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"]["vybe.raw"] = self

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake is over and the app has read what it needs: drop the
            # request and response headers (~3 KB; websockets' parser keeps the
            # request object alive for the life of the connection).
            self.response = None  # type: ignore[assignment]  # websockets types it as always set
            self.scope["headers"] = []
            request, self._request = self._request, None
            if request is not None:
                request.headers.clear()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's, except that a text message that is not UTF-8 gets one debug line:
        # uvicorn logs a traceback at ERROR for it, so any client could fill the logs.
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # the app is past websocket.close; reads stay on for the peer's close
        if self.curr_msg_data_type == "bytes":
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        else:
            try:
                self.queue.put_nowait({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.logger.debug("%s - invalid UTF-8 in a text message: closing with 1007", self.client)
                self.conn.send_close(1007, "invalid UTF-8")
                self.handle_parser_exception()
                return
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def write_frame(self, frame: bytes) -> bool:
        """Write a pre-built frame now if that is safe; False means use the ASGI path."""
        if (self.close_sent or self.disconnected or not self.handshake_complete
                or not self.writable.is_set() or self.transport.is_closing()):
            return False
        self.transport.write(frame)
        return True

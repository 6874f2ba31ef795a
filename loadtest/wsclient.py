"""A lean WebSocket client on ``asyncio.Protocol`` (after bench/fanout/loadgen.py).

No task, queue or JSON decode per socket: the handshake is one fixed request,
server frames are unmasked and split in a tight loop, and each text frame goes
to ``on_text(payload, now)`` of the subclass. Pings are answered; a close frame
is answered and recorded. Thousands of these fit on one core under uvloop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import cast

_HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def handshake(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return _HANDSHAKE.format(path=path, host=host, port=port, key=key).encode()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 requires masking client to server)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    k = int.from_bytes((key * (n // 4 + 1))[:n], "big") if n else 0
    masked = (int.from_bytes(payload, "big") ^ k).to_bytes(n, "big") if n else b""
    return head + key + masked


class WsClient(asyncio.Protocol):
    """One socket. Subclasses implement ``on_open``, ``on_text``, ``on_refused`` and ``on_closed``."""

    transport: asyncio.Transport | None

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport = None
        self.open = False
        self.buf = b""
        self.alive = False
        self.close_code: int | None = None

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection: asyncio types the argument as the base class.
        self.transport = cast("asyncio.Transport", transport)
        self.alive = True
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.alive
        self.alive = False
        self.on_closed(was, exc)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.open:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            status = data[:data.find(b"\r\n")]
            if b" 101 " not in status + b" ":
                self.on_refused(status.decode("latin-1"))
                self.abort()
                return
            self.open = True
            data = data[end + 4:]
            self.on_open()
        n = len(data)
        pos = 0
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            hl = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                hl = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2:pos + 10], "big")
                hl = 10
            if n - pos < hl + length:
                break
            op = data[pos] & 0x0F
            payload = data[pos + hl:pos + hl + length]
            pos += hl + length
            if op == 1 or op == 0 or op == 2:
                self.on_text(payload, now)
            elif op == 9:  # ping
                self.write(client_frame(0xA, payload))
            elif op == 8:  # close
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.write(client_frame(0x8, payload[:2]))
                if self.transport is not None:
                    self.transport.close()
                return
        if pos < n:
            self.buf = data[pos:]

    # -- helpers --------------------------------------------------------------------

    def write(self, frame: bytes) -> None:
        if self.transport is not None and self.alive:
            self.transport.write(frame)

    def send_text(self, payload: bytes) -> None:
        self.write(client_frame(1, payload))

    def abort(self) -> None:
        """Drop the socket with a RST (no TIME_WAIT left behind)."""
        if self.transport is not None:
            self.transport.abort()

    # -- hooks ------------------------------------------------------------------------

    def on_open(self) -> None:
        pass

    def on_text(self, payload: bytes, now: float) -> None:
        pass

    def on_refused(self, status: str) -> None:
        pass

    def on_closed(self, was_alive: bool, exc: Exception | None) -> None:
        pass

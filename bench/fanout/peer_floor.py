"""Not a peer but a floor: the least a Python process can do to put one frame on every socket.

    python -m bench.fanout.peer_floor  (env BENCH_PORT, BENCH_CHANNEL, BENCH_REDIS_URL)

``websockets`` does the handshakes; after that, each event from Redis pub/sub is framed once and
written with one ``send()`` per socket in a plain loop: no per-socket state, checks, framing or
transport layer (a socket that takes less than the whole frame goes over to its transport for good,
so the byte stream stays whole). What is left is the interpreter's loop (~0.3 us a socket) and the
kernel's work for each send (on loopback it includes the receiving side's TCP processing, charged
to the sending core). A server one event at a time cannot go much below this on one core; one that
reaches it is bound by the kernel, not by its own code.
"""

from __future__ import annotations

import os
import socket
import struct

import uvloop
from websockets.asyncio.server import ServerConnection, serve

from bench.fanout.relay import HOST, port, relay

PORT = port(8767)

SOCKETS: dict[ServerConnection, socket.socket | None] = {}
"""Each connection's own socket object (a dup of its descriptor), or None once it needs its transport."""


def frame(payload: bytes) -> bytes:
    n = len(payload)
    head = b"\x81" + (bytes([n]) if n < 126 else b"\x7e" + struct.pack("!H", n) if n < 65536
                      else b"\x7f" + struct.pack("!Q", n))
    return head + payload


async def handler(ws: ServerConnection) -> None:
    fd = ws.transport.get_extra_info("socket").fileno()
    SOCKETS[ws] = socket.socket(fileno=os.dup(fd))
    try:
        await ws.wait_closed()
    finally:
        sock = SOCKETS.pop(ws, None)
        if sock is not None:
            sock.close()  # the dup only: the connection's own descriptor stays with it


def fan_out(data: bytes) -> None:
    for ws, sock in SOCKETS.items():
        if sock is not None and not ws.transport.get_write_buffer_size():  # nothing of its own still queued
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                continue  # the peer is gone; its handler cleans up
            if sent == len(data):
                continue
            SOCKETS[ws] = None  # from now on through the transport, behind what it still holds
            data_left = data[sent:]
        else:
            data_left = data
        ws.transport.write(data_left)


async def main() -> None:
    async with serve(handler, HOST, PORT, ping_interval=20, ping_timeout=20, backlog=2048):
        await relay(lambda data: fan_out(frame(data)))


if __name__ == "__main__":
    uvloop.run(main())

"""Reference peer: a bare ``websockets`` server fed by Redis pub/sub, fanning out with
``websockets.broadcast`` (the library's recommended broadcast primitive).

    python -m bench.fanout.peer_websockets  (env BENCH_PORT, BENCH_CHANNEL, BENCH_REDIS_URL)

Same ws ping settings as the others (20 s interval, 20 s timeout); runs on uvloop,
like uvicorn does by default when uvloop is installed.
"""

from __future__ import annotations

import uvloop
import websockets
from websockets.asyncio.server import ServerConnection, serve

from bench.fanout.relay import HOST, port, relay

PORT = port(8766)

CONNECTIONS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


async def main() -> None:
    async with serve(handler, HOST, PORT, ping_interval=20, ping_timeout=20, backlog=2048):
        await relay(lambda data: websockets.broadcast(CONNECTIONS, data.decode()))


if __name__ == "__main__":
    uvloop.run(main())

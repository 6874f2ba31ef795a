"""Reference peer: a bare ``websockets`` server fed by Redis pub/sub, fanning out with
``websockets.broadcast`` (the library's recommended broadcast primitive).

    python -m bench.fanout.peer_websockets  (env BENCH_PORT, BENCH_CHANNEL, BENCH_REDIS_URL)

Same ws ping settings as the others (20 s interval, 20 s timeout); runs on uvloop,
like uvicorn does by default when uvloop is installed.
"""

from __future__ import annotations

import os

import uvloop
import websockets
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, serve

CHANNEL = os.environ.get("BENCH_CHANNEL", "feed")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PORT = int(os.environ.get("BENCH_PORT", "8766"))
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")

CONNECTIONS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        await ws.wait_closed()
    finally:
        CONNECTIONS.discard(ws)


async def relay() -> None:
    redis = Redis.from_url(REDIS_URL)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    while True:
        msg = await pubsub.get_message(timeout=1.0)
        if msg is not None:
            websockets.broadcast(CONNECTIONS, msg["data"].decode())


async def main() -> None:
    async with serve(handler, HOST, PORT, ping_interval=20, ping_timeout=20, backlog=2048):
        await relay()


if __name__ == "__main__":
    uvloop.run(main())

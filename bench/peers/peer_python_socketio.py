"""Reference peer: python-socketio (AsyncServer, ASGI) with AsyncRedisManager, as its docs show.

Every client joins room ``feed`` on connect; events come from other processes through
``AsyncRedisManager(write_only=True).emit("tick", data, room="feed")``. Run under uvicorn::

    BENCH_REDIS_URL=redis://127.0.0.1:6379/0 BENCH_SIO_CHANNEL=socketio \\
        uvicorn bench.peers.peer_python_socketio:app --port 8768
"""

from __future__ import annotations

import os

import socketio

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CHANNEL = os.environ.get("BENCH_SIO_CHANNEL", "socketio")

sio = socketio.AsyncServer(async_mode="asgi", client_manager=socketio.AsyncRedisManager(REDIS_URL, channel=CHANNEL),
                           transports=["websocket"], ping_interval=20, ping_timeout=20)


@sio.event
async def connect(sid: str, environ: dict, auth: object = None) -> None:
    await sio.enter_room(sid, "feed")


app = socketio.ASGIApp(sio)

"""Reference peer: Litestar's ChannelsPlugin with its Redis Pub/Sub backend, as its docs show.

The WebSocket handler follows the documentation's "manual" integration: accept,
``channels.start_subscription([...])`` and ``subscriber.run_in_background(socket.send_data)``,
then keep reading the socket. Run it the way the docs run any Litestar app::

    BENCH_REDIS_URL=redis://127.0.0.1:6379/0 BENCH_CHANNEL=feed \\
        uvicorn bench.fanout.peer_litestar:app --ws-ping-interval 20 --ws-ping-timeout 20

Publishers reach its sockets with ``RedisChannelsPubSubBackend(redis=...).publish(data, [channel])``
(a plain PUBLISH on the channel name; the pub/sub backend adds no prefix).
"""

from __future__ import annotations

import os

from litestar import Litestar, WebSocket, websocket
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.exceptions import WebSocketDisconnect
from redis.asyncio import Redis

CHANNEL = os.environ.get("BENCH_CHANNEL", "feed")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

channels_plugin = ChannelsPlugin(
    backend=RedisChannelsPubSubBackend(redis=Redis.from_url(REDIS_URL)),
    channels=[CHANNEL],
)


@websocket("/ws")
async def handler(socket: WebSocket, channels: ChannelsPlugin) -> None:
    await socket.accept()
    async with channels.start_subscription([CHANNEL]) as subscriber, subscriber.run_in_background(socket.send_data):
        try:
            while True:
                await socket.receive_text()
        except WebSocketDisconnect:
            pass


app = Litestar(route_handlers=[handler], plugins=[channels_plugin])

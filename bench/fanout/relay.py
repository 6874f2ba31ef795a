"""What every peer process shares: its settings from the environment, and the Redis pub/sub relay
(``redis.asyncio``, as the gateway reads it) that hands each message to the peer's own fan-out."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from redis.asyncio import Redis

if TYPE_CHECKING:
    from collections.abc import Callable

CHANNEL = os.environ.get("BENCH_CHANNEL", "feed")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
HOST = os.environ.get("BENCH_HOST", "127.0.0.1")


def port(default: int) -> int:
    return int(os.environ.get("BENCH_PORT", str(default)))


async def relay(fan_out: Callable[[bytes], object]) -> None:
    """Each message published on ``CHANNEL``, as bytes, to ``fan_out``; runs until cancelled."""
    redis = Redis.from_url(REDIS_URL)
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(CHANNEL)
    while True:
        msg = await pubsub.get_message(timeout=1.0)
        if msg is not None:
            fan_out(msg["data"])

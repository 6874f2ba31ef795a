"""The gateway's state, made in the app's lifespan and torn down with it.

Owns the PostgreSQL pool, the Redis client, the hub and its backend, the
reaction group-committer and the set of live connections. Nothing here is a
module global, so tests can run several gateways in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from db import writes
from db.pool import create_pool
from gateway.auth import Identity, Verifier
from gateway.hub import Hub
from gateway.hub.redis import RedisBackend
from gateway.hub.redis_sharded import ShardedRedisBackend
from gateway.metrics import Metrics
from gateway.moderation import Desk
from gateway.presence import Presence
from gateway.protocol import CloseCode, Notice, encode
from moderation.bus import Keys, Publisher

if TYPE_CHECKING:
    from db.settings import Settings
    from gateway.connection import Connection

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.pool = pool
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.metrics = Metrics()
        self.verifier = Verifier(settings)
        backend_type = ShardedRedisBackend if settings.pubsub == "sharded" else RedisBackend
        self.backend = backend_type(redis, settings.redis_prefix, settings.history_len,
                                    history_ttl_s=settings.history_ttl_s)
        self.publisher: Publisher = self.backend.publisher
        self.hub = Hub(self.backend)
        self.reactions = writes.ReactionWriter(pool, batch_ms=settings.write_batch_ms,
                                               batch_max=settings.write_batch_max)
        self.connections: set[Connection] = set()
        self.draining = False
        # Plain ints on the hot path; the metrics collector reads them when scraped.
        self.frames_out = 0
        self.bytes_out = 0
        self.commands_in = 0
        self.desk = Desk(self)
        self.presence = Presence(self, settings.presence_interval_s)
        self.metrics.bind(self)

    async def on_first_auth(self, identity: Identity) -> list[str]:
        """Upsert the user on first sight; return their block list."""
        user = await writes.upsert_user(self.pool, identity.user_id, identity.role, identity.name)
        return user.blocked_users

    async def leave(self, conn: Connection) -> None:
        if any(c.startswith("looproom:") for c in conn.channels):
            self.presence.touch()
        await self.hub.drop(conn, conn.channels)
        conn.channels.clear()

    async def enqueue_moderation(self, kind: str, item_id: str) -> None:
        """Ask the workers to score an item (after its COMMIT; the sweeper covers a crash here)."""
        await self.redis.xadd(self.keys.jobs, {"kind": kind, "id": item_id})

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency, with a real round trip to each."""
        status = {"postgres": False, "redis": False, "pubsub": await self.backend.probe()}
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            status["postgres"] = await asyncio.wait_for(self.pool.fetchval("SELECT true"), 2.0) is True
        with contextlib.suppress(OSError, RedisError, asyncio.TimeoutError):
            status["redis"] = bool(await asyncio.wait_for(self.redis.ping(), 2.0))
        return status

    async def drain(self) -> None:
        """Shutdown: refuse new sockets, tell clients to reconnect elsewhere, close with 1001."""
        self.draining = True
        notice = encode(Notice("going_away", "server is restarting: reconnect and resume with your offsets"))
        for conn in list(self.connections):
            conn.enqueue(notice)
            conn.close(CloseCode.GOING_AWAY, "server shutting down; reconnect")
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway_lifespan(settings: Settings) -> AsyncIterator[Gateway]:
    """Create every resource, start background tasks, and release all on exit."""
    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError("the gateway needs VYBE_DATABASE_URL and VYBE_REDIS_URL (vybe dev sets both)")
    pool = await create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    redis = aioredis.Redis.from_url(settings.redis_url, health_check_interval=10)
    gw = Gateway(settings, pool, redis)
    presence: asyncio.Task[None] | None = None
    try:
        await gw.backend.start()
        gw.reactions.start()
        presence = asyncio.create_task(gw.presence.run(), name="presence")
        yield gw
        await gw.drain()
    finally:
        if presence is not None:
            presence.cancel()
            await asyncio.gather(presence, return_exceptions=True)
        await gw.reactions.aclose()
        await gw.backend.close()
        await redis.aclose()
        await pool.close()

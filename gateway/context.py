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
from typing import TYPE_CHECKING, Any

import asyncpg

from common import namespaces, redisconn
from common.bus import JobBacklog, Keys, Publisher
from common.events import reactions_changed
from common.tasks import Supervisor
from db import learning, outbox, writes
from db.pool import UNREACHABLE, create_pool
from gateway.auth import Identity, Verifier
from gateway.hub import Hub, Unavailable
from gateway.hub.redis import RedisBackend
from gateway.hub.redis_sharded import ShardedRedisBackend
from gateway.metrics import Metrics
from gateway.moderation import Desk
from gateway.presence import Presence
from gateway.protocol import CloseCode, Notice, encode
from gateway.users import Users
from gateway.wsproto import keepalive

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine

    from common.settings import Settings
    from gateway.connection import Connection

log = logging.getLogger(__name__)
FLAG_STATS_WINDOW_S = 30 * 86_400.0


class Gateway:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: redisconn.Client) -> None:
        self.settings = settings
        self.frame_limit = settings.frame_limit  # read on every frame
        self.node_id = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.pool = pool
        self.redis = redis
        self.waits: redisconn.Client = redis
        """Redis connections for blocking waits (``gateway_lifespan`` gives them their own pool)."""
        self.keys = Keys(settings.redis_prefix)
        self.metrics = Metrics()
        self.verifier = Verifier(settings)
        self.namespaces = namespaces.load(settings.namespaces, history_len=settings.history_len,
                                          history_ttl_s=settings.history_ttl_s)
        backend_type = ShardedRedisBackend if redisconn.sharded_pubsub(settings, redis) else RedisBackend
        # The longest history any namespace keeps bounds what a resume reads.
        longest = max([settings.history_len, *(n.history_len or 0 for n in self.namespaces)])
        self.backend = backend_type(redis, settings.redis_prefix, longest,
                                    history_ttl_s=settings.history_ttl_s, history=self.namespaces.history_of)
        self.publisher: Publisher = self.backend.publisher
        self.publisher.replica_wait_ms = settings.redis_replica_wait_ms
        self.hub = Hub(self.backend, digest_of=self.namespaces.digest_of)
        self.relay = outbox.Relay(pool, self.publisher.publish_rows)
        self.supervisor = Supervisor()
        self.reactions = writes.ReactionWriter(pool, batch_ms=settings.write_batch_ms,
                                               batch_max=settings.write_batch_max,
                                               events=reactions_changed, on_commit=self.relay.submit)
        # Fault tests only: die between COMMIT and publish, as a crash there would.
        self._crash_after_commit = os.environ.get("VYBE_TEST_CRASH_AFTER_COMMIT") == "1"
        self.connections: set[Connection] = set()
        self.closing: set[Connection] = set()
        """Sessions closed and still finishing (their last frames, then the close frame)."""
        self._spawned: set[asyncio.Task[None]] = set()
        self.draining = False
        # Plain ints on the hot path; the metrics collector reads them when scraped.
        self.frames_out = 0
        self.bytes_out = 0
        self.commands_in = 0
        self.desk = Desk(self)
        self.users = Users(pool)
        self.flag_stats: learning.Stats | None = None
        """Flag precision and recall by moderators' decisions (30 days), refreshed every minute for /metrics."""
        self.job_backlog: JobBacklog | None = None
        """The moderation workers' backlog, read from Redis when /metrics is scraped (None: Redis did not answer)."""
        self.presence = Presence(self, settings.presence_interval_s)
        self.metrics.bind(self)

    async def on_first_auth(self, identity: Identity) -> list[str]:
        """The user's block list, their row made or refreshed as needed (batched: ``gateway.users``)."""
        return await self.users.on_auth(identity)

    async def leave(self, conn: Connection) -> None:
        if any(self.namespaces.presence_channel(c) for c in conn.channels):
            self.presence.touch()
        await self.hub.drop(conn, conn.channels)
        conn.channels.clear()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (kept referenced until done; a Redis error is logged)."""

        async def run() -> None:
            try:
                await work
            except (*self.backend.transient_errors, Unavailable) as err:
                log.warning("background %s failed: %s", getattr(work, "__name__", "task"), err)

        task = asyncio.get_running_loop().create_task(run())
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def announce(self, announcement: outbox.Announcement) -> None:
        """After COMMIT: hand a write's outbox rows to the relay's fast path (never fails)."""
        if self._crash_after_commit and announcement.rows:
            os._exit(137)
        self.relay.submit(announcement.rows)

    def start_tasks(self) -> None:
        """The node's background loops, each supervised (restarted, counted, in readiness)."""
        sup = self.supervisor
        sup.tasks["reaction-writer"] = self.reactions.task
        self.reactions.start()
        sup.add("outbox-publisher", self.relay.run_fast_path)
        sup.add("outbox-relay", self.relay.run_catch_up)
        sup.add("outbox-deleter", self.relay.run_deleter)
        sup.add("presence", self.presence.run)
        sup.add("flag-stats", self._refresh_flag_stats)
        sup.add("keepalive", lambda: keepalive(self.connections, self.settings.heartbeat_s))

    async def refresh_flag_stats(self) -> None:
        """Read the model's flag precision and recall (30 days) for /metrics."""
        self.flag_stats = await learning.label_stats(self.pool, FLAG_STATS_WINDOW_S)

    async def _refresh_flag_stats(self) -> None:
        while True:
            try:
                await self.refresh_flag_stats()
            except (*UNREACHABLE, asyncpg.PostgresError) as err:
                log.debug("flag stats not refreshed: %s", err)
            await asyncio.sleep(60.0)

    async def ready(self) -> dict[str, Any]:
        """Readiness of each dependency, with a real round trip to each, and of each background loop."""
        status: dict[str, Any] = {"postgres": False, "redis": False, "pubsub": await self.backend.probe()}
        with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
            status["postgres"] = await asyncio.wait_for(self.pool.fetchval("SELECT true"), 2.0) is True
        with contextlib.suppress(*redisconn.REDIS_DOWN, asyncio.TimeoutError):
            status["redis"] = bool(await asyncio.wait_for(self.redis.ping(), 2.0))
        status["tasks"] = self.supervisor.status()
        return status

    async def drain(self) -> None:
        """Shutdown: refuse new sockets, tell clients to reconnect elsewhere, close with 1001."""
        self.draining = True
        await self.presence.withdraw()
        notice = encode(Notice("going_away", "server is restarting: reconnect and resume with your offsets"))
        for conn in list(self.connections):
            conn.enqueue(notice)
            conn.close(CloseCode.GOING_AWAY, "server shutting down; reconnect")
        for _ in range(50):
            if not self.connections and not self.closing:
                break
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def gateway_lifespan(settings: Settings) -> AsyncIterator[Gateway]:
    """Create every resource, start background tasks, and release all on exit."""
    if settings.database_url is None or settings.redis_url is None:
        raise RuntimeError("the gateway needs VYBE_DATABASE_URL and VYBE_REDIS_URL (vybe dev sets both)")
    pool = await create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                             pooler=settings.database_pooler)
    # Bounded waits: a Redis that stops answering must turn into a typed error, not a hang. A bounded
    # pool that queues: under a reconnect storm thousands of resumes wait their turn for one of
    # VYBE_REDIS_POOL_MAX connections, instead of failing with "Too many connections".
    # On a Redis Cluster: cluster clients and sharded pub/sub (common/redisconn.py).
    redis = await redisconn.connect_for(settings, max_connections=settings.redis_pool_max)
    gw = Gateway(settings, pool, redis)
    # Blocking waits (a server API `moderate` with `wait`) get their own connections: they hold one
    # for seconds, which must not starve publishing and resumes of the main pool.
    gw.waits = await redisconn.connect_for(settings, max_connections=settings.redis_pool_max, wait_s=1,
                                           socket_timeout=settings.moderate_wait_s + 5, health_check_interval=0)
    try:
        await gw.backend.start()
        gw.start_tasks()
        yield gw
        await gw.drain()
    finally:
        await gw.reactions.aclose()
        await gw.supervisor.stop()
        with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
            await asyncio.wait_for(gw.relay.flush(), 2.0)
        await gw.backend.close()
        await gw.waits.aclose()
        await redis.aclose()
        await pool.close()

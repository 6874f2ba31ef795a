"""Redis clients for every process: one server or a Redis Cluster, by what ``VYBE_REDIS_URL`` names.

Gateways, workers, the publisher and outbox relay, presence and the server API all take
their client from :func:`connect`, so a deployment moves to a Redis Cluster by pointing
``VYBE_REDIS_URL`` at any node of it. ``VYBE_REDIS_CLUSTER`` says how to tell:

- ``auto`` (default): ask the server (``INFO cluster``); ``cluster_enabled:1`` means a
  cluster. A server that does not answer at start is taken for a single server, with a
  warning (set ``yes`` for a cluster that may be down when processes start);
- ``yes``: a ``RedisCluster`` client, which finds the other nodes itself;
- ``no``: a single server.

What works on a cluster: every key of a channel carries the ``{channel}`` hash tag
(:class:`common.bus.Keys`), so a channel's history, epoch, sequence and pub/sub live on
one shard and each publishing script runs there; live events use sharded pub/sub
(SPUBLISH/SSUBSCRIBE, see :func:`sharded_pubsub`); scripts run with EVAL
(:class:`Script`), since a replica promoted by a failover starts with an empty script cache.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ClusterError, ReadOnlyError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.commands.core import AsyncScript

    from common.settings import Settings

log = logging.getLogger(__name__)

Client: TypeAlias = aioredis.Redis | RedisCluster
"""What :func:`connect` returns (both speak the same commands; pub/sub differs)."""


REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)
"""What a Redis that is down, restarting or failing over raises (a cluster's RedisClusterException, e.g.
a slot not served mid-failover, is no RedisError)."""
REDIS_UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, ReadOnlyError, TryAgainError, ClusterError, RedisClusterException,
    OSError)
"""The part of :data:`REDIS_DOWN` that an unreachable, loading, failing-over or read-only Redis raises, not a bad
command (a ``ResponseError`` such as a script's error). ClusterError covers a cluster that is down or kept
redirecting mid-failover; RedisClusterException a slot map that could not be refreshed (and, rarely, a cluster
client's complaint about its arguments)."""


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


async def names_cluster(url: str, timeout: float = 2.0) -> bool | None:
    """Whether the server at ``url`` is a node of a Redis Cluster; None when it does not answer."""
    probe = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        info = await probe.info("cluster")
        return str(info.get("cluster_enabled", 0)) == "1"
    except (RedisError, OSError):
        return None
    finally:
        await probe.aclose()


async def connect(url: str, *, cluster: str = "auto", max_connections: int = 64, wait_s: float = 5.0,
                  socket_timeout: float = 5.0, connect_timeout: float = 2.0,
                  health_check_interval: int = 10) -> Client:
    """A client for ``url``: a ``RedisCluster`` when it names a cluster (see the module doc),
    else a ``Redis`` on a bounded pool where a request waits up to ``wait_s`` for a connection."""
    if cluster == "auto":
        found = await names_cluster(url, connect_timeout)
        if found is None:
            log.warning("Redis at %s does not answer: taken for a single server (VYBE_REDIS_CLUSTER=yes "
                        "if it is a cluster)", _redacted(url))
        use_cluster = bool(found)
    else:
        use_cluster = cluster == "yes"
    if use_cluster:
        # A cluster client holds up to max_connections per node; it finds the nodes and
        # follows MOVED/ASK and failovers itself (refreshing the slot map on errors).
        return RedisCluster.from_url(url, max_connections=max_connections, socket_timeout=socket_timeout,
                                     socket_connect_timeout=connect_timeout,
                                     health_check_interval=health_check_interval)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout, health_check_interval=health_check_interval)
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


async def connect_for(settings: Settings, **options: Any) -> Client:
    """:func:`connect` with the settings' URL and ``VYBE_REDIS_CLUSTER``."""
    if settings.redis_url is None:
        raise ValueError("VYBE_REDIS_URL is not set")
    return await connect(settings.redis_url, cluster=settings.redis_cluster, **options)


def sharded_pubsub(settings: Settings, client: object) -> bool:
    """SPUBLISH/SSUBSCRIBE: asked for (``VYBE_PUBSUB=sharded``), or a cluster (classic pub/sub
    there broadcasts every message to every node, and a node's failure loses its subscribers)."""
    return settings.pubsub == "sharded" or is_cluster(client)


def pubsub_client(client: aioredis.Redis, **overrides: Any) -> aioredis.Redis:
    """A client for pub/sub alone: ``client``'s connection settings (``overrides`` on top), its own
    small pool, and no automatic retry. redis-py's pub/sub reconnects by itself after a failed read
    and resubscribes without telling anyone, so events published in between would be lost with no
    one told; without retries the read fails, and the owner reconnects, resubscribes and backfills
    from history."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, **overrides, "retry": Retry(NoBackoff(), 0)}
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(connection_class=pool.connection_class,
                                                            max_connections=8, **kwargs))


def node_pubsub_client(cluster: RedisCluster, host: str, port: int) -> aioredis.Redis:
    """:func:`pubsub_client`'s equivalent for one node of a cluster (its address, the cluster
    client's credentials and timeouts)."""
    kw = getattr(cluster, "connection_kwargs", {}) or {}
    return aioredis.Redis(host=host, port=port, password=kw.get("password"), username=kw.get("username"),
                          ssl=bool(kw.get("ssl")), socket_timeout=kw.get("socket_timeout") or 10,
                          socket_connect_timeout=kw.get("socket_connect_timeout") or 2,
                          health_check_interval=10, retry=Retry(NoBackoff(), 0))


class Script:
    """A Lua script that runs on one server (EVALSHA, loaded once) or a cluster (EVAL: the
    script is cached by the server either way, and a replica promoted by a failover has no
    script cache for EVALSHA to find). Call it like redis-py's registered scripts, with an
    optional pipeline as ``client``."""

    def __init__(self, client: Client, source: str) -> None:
        self.client = client
        self.source = source
        self.cluster = is_cluster(client)
        self._registered: AsyncScript | None = None if self.cluster else client.register_script(source)

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = (), client: Any = None) -> Any:
        target = self.client if client is None else client
        if self._registered is not None:
            return await self._registered(keys=list(keys), args=list(args), client=target)
        queued = target.eval(self.source, len(keys), *keys, *args)
        if isinstance(target, ClusterPipeline) or not inspect.isawaitable(queued):
            return queued  # queued in a pipeline: its reply comes from execute()
        return await queued


def _redacted(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if sep else url

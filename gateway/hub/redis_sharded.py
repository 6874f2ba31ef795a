"""Redis backend on sharded pub/sub (``VYBE_PUBSUB=sharded``): SSUBSCRIBE/SPUBLISH.

Same contract as :mod:`gateway.hub.redis` (the classic PUBLISH/SUBSCRIBE backend)
and the same history streams; only the live path differs. Classic pub/sub in a
Redis Cluster broadcasts every message to every node of the cluster, so its cost
grows with the cluster; a shard channel lives on the one shard that owns its
slot, so adding shards adds pub/sub capacity. Every key of a channel carries the
``{channel}`` hash tag (see :class:`common.bus.Keys`): its history stream,
epoch and shard channel share one slot, and the publish script (XADD + SPUBLISH)
runs on that one shard.

Needs Redis >= 7 (the embedded Redis 6.2 has no sharded pub/sub): :meth:`start`
refuses an older server with a :class:`~common.settings.SettingsError` naming
``VYBE_PUBSUB``.

Connections: one pub/sub connection per Redis node that owns a subscribed
channel (a *link*). On a single Redis server that is one link, like the classic
backend. With a ``redis.asyncio.cluster.RedisCluster`` client each channel goes to
the master owning its slot; each link reconnects on its own with capped backoff,
resubscribes its channels, waits for every confirmation and then calls
``on_reconnect`` with those channels so the hub backfills them from history. A
shard channel the server drops (its slot moved: Redis sends an unsolicited
``sunsubscribe``) is resubscribed on its new owner and backfilled the same way.
When a node dies (a failover promotes its replica), its link, before each
reconnect attempt, refreshes the slot map and hands every channel another node
owns now to that node's link (:meth:`ShardedRedisBackend.rehome`); a link left
with nothing retires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any, cast

from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.bus import Publisher
from common.redisconn import is_cluster, node_pubsub_client
from common.settings import SettingsError
from common.tasks import cancel_and_wait, cancelled_meanwhile
from gateway.hub.redis import _CONTROL, RedisBackend, read_with_reconnect

if TYPE_CHECKING:
    from collections.abc import Coroutine

    import redis.asyncio as aioredis
    from redis.asyncio.client import PubSub
    from redis.asyncio.cluster import RedisCluster

    from common.bus import History

log = logging.getLogger(__name__)
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
MIN_VERSION = (7, 0, 0)
_SINGLE = "default"


class ShardedPubSubUnsupported(SettingsError):
    """The Redis server is older than 7.0: no SSUBSCRIBE/SPUBLISH."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


async def server_version(redis: Any) -> tuple[int, ...]:
    """The lowest ``redis_version`` among the servers behind the client (one server, or a cluster's nodes)."""
    info = await redis.info("server")
    if isinstance(info, dict) and "redis_version" in info:
        return _version(str(info["redis_version"]))
    versions = [_version(str(v["redis_version"])) for v in (info or {}).values()
                if isinstance(v, dict) and "redis_version" in v]
    if not versions:
        raise ShardedPubSubUnsupported("VYBE_PUBSUB", "cannot read the Redis server version (INFO server)")
    return min(versions)


async def require_sharded_support(redis: Any) -> None:
    """Raise :class:`ShardedPubSubUnsupported` unless every server behind ``redis`` is Redis 7 or newer. The
    backend checks as it starts; ``vybe gateway`` checks before it waits for PostgreSQL, so the setting is refused at
    once."""
    version = await server_version(redis)
    if version < MIN_VERSION:
        raise ShardedPubSubUnsupported(
            "VYBE_PUBSUB",
            f"sharded needs Redis >= 7.0 (SSUBSCRIBE/SPUBLISH); the server at VYBE_REDIS_URL is "
            f"{'.'.join(map(str, version))}: upgrade Redis or set VYBE_PUBSUB=classic")


class _Link:
    """One pub/sub connection to one Redis node, with its own reader task.

    ``channels`` is what the link must be subscribed to. The reader connects, subscribes all of
    them (again until nothing was added meanwhile), waits for each confirmation, and only then
    reads; after a reconnect it tells the hub, which backfills from history.
    """

    def __init__(self, backend: ShardedRedisBackend, name: str, client: aioredis.Redis, owned: bool) -> None:
        self.backend = backend
        self.name = name
        self.client = client
        self.owned = owned  # we made the client (a cluster node): close it with the link
        self.channels: set[str] = set()
        self.moved: set[str] = set()
        """Channels handed over from another link: backfilled once subscribed here."""
        self.unsubscribing: dict[str, int] = {}
        """Our SUNSUBSCRIBEs not answered yet, per name (any other ``sunsubscribe`` is the server's)."""
        self.pubsub: PubSub | None = None
        self.up = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.retired = False
        """No channel of ours is on this node any more (a failover moved them): the reader ends."""

    def start(self) -> None:
        """Start the reader (idempotent): it connects and subscribes ``channels`` at once, and
        retries with backoff while the node does not answer."""
        if self.task is None:
            self.task = asyncio.create_task(self._run(), name=f"redis-spubsub-{self.name}")

    async def close(self) -> None:
        if self.task is not None:
            await cancel_and_wait(self.task)
            self.task = None
        await self._drop_connection()
        if self.owned:
            with contextlib.suppress(*_REDIS_DOWN):
                await self.client.aclose()

    async def ssubscribe(self, name: str) -> None:
        if self.up.is_set() and self.pubsub is not None:
            with contextlib.suppress(*_REDIS_DOWN):  # the reader reconnects and resubscribes everything
                await self.pubsub.ssubscribe(name)
        # Not up: the reader's (re)subscription takes it (it is in ``channels`` already).

    async def sunsubscribe(self, name: str) -> None:
        if self.up.is_set() and self.pubsub is not None:
            self.unsubscribing[name] = self.unsubscribing.get(name, 0) + 1
            with contextlib.suppress(*_REDIS_DOWN):
                await self.pubsub.sunsubscribe(name)

    def restart(self, moved: set[str]) -> None:
        """Channels ``moved`` here from another link (or dropped by the server and resubscribed):
        subscribe them, then backfill them. A link that is up adopts them on its connection; one
        that is not yet (or no longer) up takes them with its (re)subscription."""
        self.moved |= moved
        self.backend.on_recovering(moved)  # hold their live events until the backfill
        if self.task is None:
            self.start()
        elif self.up.is_set() and self.pubsub is not None:
            self.backend.spawn(self._adopt(set(moved)), f"redis-spubsub-adopt-{self.name}")

    async def _adopt(self, moved: set[str]) -> None:
        """Subscribe ``moved`` on the live connection, wait for each confirmation, backfill them.
        When that fails, the reader starts over (a fresh connection, every channel backfilled)."""
        loop = asyncio.get_running_loop()
        pending = self.backend._pending
        futs = [pending.setdefault(c, loop.create_future()) for c in moved]
        try:
            pubsub = self.pubsub
            if pubsub is None:
                raise RedisConnectionError("no pub/sub connection")
            by_slot: dict[int, list[str]] = {}
            for c in moved:
                name = self.backend.keys.pubsub(c)
                by_slot.setdefault(key_slot(name.encode()), []).append(name)
            for group in by_slot.values():
                await pubsub.ssubscribe(*group)
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(f) for f in futs)), 5.0)
        except Exception as err:  # noqa: BLE001 - start over rather than leave a channel unsubscribed
            cancelled_meanwhile(err)
            log.warning("redis sharded pub/sub link %s: adopting %d channels failed (%s); reconnecting",
                        self.name, len(moved), err)
            await self._start_over()
            return
        self.moved -= moved
        await self.backend.on_reconnect(sorted(moved & self.channels))

    async def _start_over(self) -> None:
        """A new reader on a new connection, which subscribes and backfills every channel."""
        if self.task is not None and self.task is not asyncio.current_task():
            await cancel_and_wait(self.task)
        self.up.clear()
        self.moved |= self.channels
        self.backend.on_recovering(self.channels)
        self.task = asyncio.create_task(self._run(), name=f"redis-spubsub-{self.name}")

    async def retire(self) -> None:
        self.retired = True
        if self.backend._links.get(self.name) is self:
            del self.backend._links[self.name]
        await self._drop_connection()
        if self.owned:
            with contextlib.suppress(*_REDIS_DOWN):
                await self.client.aclose()

    async def _drop_connection(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*_REDIS_DOWN):
                await pubsub.aclose()

    async def _run(self) -> None:
        label = f"redis sharded pub/sub link {self.name}"
        try:
            await self._subscribe_all(first=True)
        except Exception as err:  # noqa: BLE001 - the reconnect loop below retries any failure
            cancelled_meanwhile(err)
            self.up.clear()
            log.warning("%s not up (%s: %s); retrying", label, type(err).__name__, err)
        await read_with_reconnect(self._read, self._resubscribe, self.up.clear, label)

    async def _read(self) -> None:
        while not self.retired:
            pubsub = self.pubsub
            if pubsub is None or not self.up.is_set():
                raise RedisConnectionError("no pub/sub connection")
            msg = await pubsub.get_message(timeout=5.0)
            if msg is not None:
                self.backend._dispatch(self, msg)

    async def _resubscribe(self) -> None:
        if self.backend.cluster:
            # A failover (or a resharding) may have given our channels to another node.
            await self.backend.rehome(self)
            if self.retired:
                return
        await self._subscribe_all(first=False)

    def _wanted(self) -> set[str]:
        keys = self.backend.keys
        names = {keys.pubsub(c) for c in self.channels}
        if self.name == self.backend.control_link:
            names.add(keys.pubsub(_CONTROL))
        return names

    async def _subscribe_all(self, first: bool) -> None:
        await self._drop_connection()
        pubsub = self.pubsub = self.client.pubsub()
        self.unsubscribing.clear()
        if not first:
            self.backend.on_recovering(self.channels)  # hold their live events until the backfill
        done: set[str] = set()
        # Until nothing was added meanwhile (a subscribe, a channel moved here while we waited).
        while todo := self._wanted() - done:
            if self.backend.cluster:  # a cluster refuses shard channels of several slots in one SSUBSCRIBE
                by_slot: dict[int, list[str]] = {}
                for name in todo:
                    by_slot.setdefault(key_slot(name.encode()), []).append(name)
                groups = list(by_slot.values())
            else:
                groups = [sorted(todo)]
            for group in groups:
                await pubsub.ssubscribe(*group)
            # Every confirmation before telling the hub: history read after this point
            # overlaps live delivery, so nothing falls between the two.
            confirmed = 0
            while confirmed < len(todo):
                msg = await pubsub.get_message(timeout=5.0)
                if msg is None:
                    raise RedisTimeoutError("no ssubscribe confirmation")
                if _s(msg["type"]) == "ssubscribe":
                    confirmed += 1
                self.backend._dispatch(self, msg)
            done |= todo
        self.up.set()
        backfill = [c for c in self.channels if not first or c in self.moved]
        self.moved.clear()
        if not first:
            self.backend.reconnects += 1
            log.info("redis sharded pub/sub link %s back; %d channels resubscribed", self.name, len(self.channels))
        if backfill:
            await self.backend.on_reconnect(backfill)


class ShardedRedisBackend(RedisBackend):
    """Sharded pub/sub for live events, the same Streams as :class:`RedisBackend` for history.

    ``redis`` is a ``redis.asyncio.Redis`` (one Redis 7 server) or a
    ``redis.asyncio.cluster.RedisCluster`` (a Redis Cluster).
    """

    def __init__(self, redis: Any, prefix: str, history_len: int = 1000, *, history_ttl_s: int = 172_800,
                 history: History | None = None) -> None:
        # The classic backend's history reads (same streams, same checks) are inherited;
        # its pub/sub state stays unused.
        super().__init__(redis, prefix, history_len, history_ttl_s=history_ttl_s, history=history)
        self.publisher = Publisher(redis, prefix, history_len, sharded=True, history_ttl_s=history_ttl_s,
                                   history=history)
        self.cluster = is_cluster(redis)
        self.control_link = _SINGLE
        self._links: dict[str, _Link] = {}
        self._link_of: dict[str, _Link] = {}  # channel -> the link it is subscribed on
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._moving: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    @property
    def healthy(self) -> bool:
        return self._started and all(link.up.is_set() for link in self._links.values())

    async def start(self) -> None:
        await require_sharded_support(self.redis)
        control = self.keys.pubsub(_CONTROL)
        # A subscription to a private control channel keeps the (first) connection open
        # and proves the round trip (readiness). A Redis down now: the link keeps trying.
        link = self._link_for(control)
        self.control_link = link.name
        link.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(link.up.wait(), 5.0)
        self._started = True

    async def close(self) -> None:
        self._started = False
        for task in list(self._tasks):
            await cancel_and_wait(task)
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        self._link_of.clear()
        for fut in self._pending.values():
            fut.cancel()
        if self._listener is not self.redis:
            with contextlib.suppress(*_REDIS_DOWN):
                await self._listener.aclose()

    async def probe(self, timeout: float = 2.0) -> bool:
        """SPUBLISH a nonce on the control channel and wait to receive it (readiness), and
        every link is connected."""
        if not self.healthy:
            return False
        nonce = secrets.token_hex(8).encode()
        fut = self._probes[nonce] = asyncio.get_running_loop().create_future()
        try:
            await self.redis.execute_command("SPUBLISH", self.keys.pubsub(_CONTROL), nonce)
            await asyncio.wait_for(fut, timeout)
            return True
        except (TimeoutError, *_REDIS_DOWN):
            return False
        finally:
            self._probes.pop(nonce, None)

    # -- routing -------------------------------------------------------------

    def _node_name(self, pubsub_name: str) -> tuple[str, Any]:
        if not self.cluster:
            return _SINGLE, None
        cluster: Any = self.redis
        node = cluster.get_node_from_key(pubsub_name)
        return node.name, node

    def _link_for(self, pubsub_name: str) -> _Link:
        name, node = self._node_name(pubsub_name)
        link = self._links.get(name)
        if link is None:
            if node is None:  # one server: the backend's pub/sub client
                link = _Link(self, name, cast("aioredis.Redis", self._listener), owned=False)
            else:
                link = _Link(self, name, node_pubsub_client(cast("RedisCluster", self.redis), node.host, node.port),
                             owned=True)
            self._links[name] = link
        return link

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def rehome(self, link: _Link) -> None:
        """Cluster, before a link reconnects: refresh the slot map, and hand each of its channels
        that another node owns now (a replica promoted by a failover, a slot migrated) to that
        node's link, which subscribes them afresh and backfills them from history. A link left
        with no channel retires (its node is dead or a replica now)."""
        cluster: Any = self.redis
        await cluster.nodes_manager.initialize()
        moved: dict[str, _Link] = {}
        moving: set[str] = set()
        for channel in list(link.channels):
            target = self._link_for(self.keys.pubsub(channel))
            if target is not link:
                link.channels.discard(channel)
                target.channels.add(channel)
                self._link_of[channel] = target
                moved[target.name] = target
                moving.add(channel)
        if self.control_link == link.name:
            target = self._link_for(self.keys.pubsub(_CONTROL))
            if target is not link:
                self.control_link = target.name
                moved[target.name] = target
        for target in moved.values():
            target.restart(target.channels & moving)
        if moved:
            log.info("redis cluster: channels of %s moved to %s", link.name, sorted(moved))
        if not link.channels and self.control_link != link.name:
            await link.retire()

    # -- subscriptions -------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        name = self.keys.pubsub(channel)
        fut = self._pending.get(channel)
        if fut is None:
            link = self._link_for(name)  # first: it may raise (a slot not served mid-failover)
            fut = self._pending[channel] = asyncio.get_running_loop().create_future()
            link.channels.add(channel)
            self._link_of[channel] = link
            if link.task is None:
                link.start()
            else:
                await link.ssubscribe(name)
        await asyncio.shield(fut)

    async def unsubscribe(self, channel: str) -> None:
        pending = self._pending.pop(channel, None)
        if pending is not None and not pending.done():
            pending.cancel()
        link = self._link_of.pop(channel, None)
        if link is not None:
            link.channels.discard(channel)
            await link.sunsubscribe(self.keys.pubsub(channel))

    # -- incoming ------------------------------------------------------------

    def _dispatch(self, link: _Link, msg: dict[str, Any]) -> None:
        kind = _s(msg["type"])
        name = _s(msg["channel"])
        if kind == "smessage":
            self._incoming(name, msg["data"])
        elif kind == "ssubscribe":
            self._confirmed(name)
        elif kind == "sunsubscribe":
            channel = self.keys.channel_of(name)
            if link.unsubscribing.get(name):  # the answer to our own SUNSUBSCRIBE
                link.unsubscribing[name] -= 1
                if not link.unsubscribing[name]:
                    del link.unsubscribing[name]
                return
            if channel in link.channels and self._link_of.get(channel) is link and channel not in self._moving:
                # Not ours: the server dropped it (its slot moved to another shard).
                self._moving.add(channel)
                self.spawn(self._move(channel, link), f"redis-spubsub-move-{channel}")

    async def _move(self, channel: str, old: _Link) -> None:
        """Resubscribe a channel whose slot moved, on its new owner, then backfill it."""
        name = self.keys.pubsub(channel)
        delay, tries = 0.1, 0
        try:
            while self._link_of.get(channel) is old and channel in old.channels:
                try:
                    if self.cluster:
                        await cast("Any", self.redis).nodes_manager.initialize()
                    link = self._link_for(name)
                    if link is not old or tries >= 3:  # moved; or told so thrice by a map that says not
                        old.channels.discard(channel)
                        link.channels.add(channel)
                        self._link_of[channel] = link
                        link.restart({channel})
                        log.info("shard channel %s moved to %s; resubscribing", channel, link.name)
                        return
                except Exception as err:  # noqa: BLE001 - RedisClusterException is not a RedisError
                    cancelled_meanwhile(err)
                    log.warning("resubscribing moved channel %s failed: %s", channel, err)
                tries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        finally:
            self._moving.discard(channel)

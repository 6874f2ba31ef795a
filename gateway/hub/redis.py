"""Redis backend: pub/sub for live events, Streams for history (see common.bus)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.bus import POSITION_SCRIPT, RESUME_POINT, History, Keys, Meta, Publisher, make_offset, stream_id_key
from common.redisconn import Script, pubsub_client
from common.tasks import backoff, cancel_and_wait, cancelled_meanwhile
from gateway.hub.base import Backend, HistoryEntry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    from redis.asyncio.client import PubSub

    from common.redisconn import Client

log = logging.getLogger(__name__)
_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_CONTROL = "_control"  # a channel of our own: keeps the connection subscribed, carries readiness probes


class RedisBackend(Backend):
    """One pub/sub connection per process; reconnects with capped exponential backoff."""

    # RedisClusterException (a cluster whose slots are not all served, mid-failover) is no RedisError.
    transient_errors = (RedisError, RedisClusterException, OSError)

    def __init__(self, redis: Client, prefix: str, history_len: int = 1000, *,
                 history_ttl_s: int = 172_800, history: History | None = None) -> None:
        self.redis = redis
        self._listener = pubsub_client(redis) if isinstance(redis, aioredis.Redis) else redis
        """Pub/sub's own client, which never reconnects by itself (see :func:`pubsub_client`)."""
        self.keys = Keys(prefix)
        self.publisher = Publisher(redis, prefix, history_len, history_ttl_s=history_ttl_s, history=history)
        self.history_len = history_len
        self._position_script = Script(redis, POSITION_SCRIPT)
        self.reconnects = 0
        self._channels: set[str] = set()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._probes: dict[bytes, asyncio.Future[None]] = {}
        # Batching for reconnect storms: SUBSCRIBEs asked for in one loop turn go as one command,
        # and resumes of one channel in one loop turn share one history read.
        self._ops: list[tuple[bool, str]] = []  # (subscribe?, channel), in the order asked
        self._reads: dict[str, list[tuple[str, tuple[int, int], asyncio.Future[list[HistoryEntry] | None]]]] = {}
        self._batches: set[asyncio.Task[None]] = set()
        self._sending = asyncio.Lock()

    @property
    def healthy(self) -> bool:
        return self._up.is_set()

    def read_cap(self, channel: str) -> int:
        """What one history read of ``channel`` takes at most: from its namespace's length (a namespace keeping
        more than the default was cut short before). XADD's `MAXLEN ~` trims whole macro nodes (up to 100 entries
        or 4 KB each by default), so a stream may hold up to a node more than its length: a cap of twice the
        length alone cut the newest off a short history (5 kept, 40 published: the oldest 10 were read)."""
        return 2 * self.publisher.history(channel)[0] + 1000

    async def start(self) -> None:
        self._pubsub = self._listener.pubsub()
        # A subscription to a private control channel keeps the connection open and
        # proves the round trip (readiness); it also makes get_message block properly.
        try:
            await self._pubsub.subscribe(self.keys.pubsub(_CONTROL))
            self._up.set()
        except self.transient_errors as err:  # start degraded; the reader loop connects when Redis is up
            log.warning("redis pub/sub not up at start (%s); retrying", err)
            self._pubsub = None
        self._task = asyncio.create_task(self._run(), name="redis-pubsub")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        for fut in self._pending.values():
            fut.cancel()
        if self._listener is not self.redis:
            with contextlib.suppress(*self.transient_errors):
                await self._listener.aclose()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        fut = self._pending.get(channel)
        if fut is None:
            fut = self._pending[channel] = asyncio.get_running_loop().create_future()
            self._queue_op(True, channel)
        await asyncio.shield(fut)

    def _queue_op(self, subscribe: bool, channel: str) -> None:
        if not self._ops:
            asyncio.get_running_loop().call_soon(self._send_ops)
        self._ops.append((subscribe, channel))

    def _send_ops(self) -> None:
        """The (UN)SUBSCRIBEs asked for in this loop turn, in order, each run of one kind as one
        command (subscriptions are confirmed one by one by the reader)."""
        ops, self._ops = self._ops, []
        if self._up.is_set() and self._pubsub is not None:
            self._spawn(self._send(self._pubsub, ops))

    async def _send(self, pubsub: PubSub, ops: list[tuple[bool, str]]) -> None:
        runs: list[tuple[bool, list[str]]] = []
        for subscribe, channel in ops:
            if runs and runs[-1][0] == subscribe:
                runs[-1][1].append(self.keys.pubsub(channel))
            else:
                runs.append((subscribe, [self.keys.pubsub(channel)]))
        # One batch at a time, in order (asyncio.Lock wakes waiters first come, first served): a
        # batch paused on a full socket must not be overtaken by the next (SUB b, then UNSUB b).
        async with self._sending:
            with contextlib.suppress(*_REDIS_DOWN):  # the reader loop reconnects and resubscribes everything
                for subscribe, names in runs:
                    await (pubsub.subscribe(*names) if subscribe else pubsub.unsubscribe(*names))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        pending = self._pending.pop(channel, None)
        if pending is not None and not pending.done():
            pending.cancel()
        self._queue_op(False, channel)

    async def probe(self, timeout: float = 2.0) -> bool:
        """Publish a nonce on the control channel and wait to receive it: pub/sub really delivers."""
        if not self._up.is_set():
            return False
        nonce = secrets.token_hex(8).encode()
        fut = self._probes[nonce] = asyncio.get_running_loop().create_future()
        try:
            await self.redis.publish(self.keys.pubsub(_CONTROL), nonce)
            await asyncio.wait_for(fut, timeout)
            return True
        except (TimeoutError, *_REDIS_DOWN):
            return False
        finally:
            self._probes.pop(nonce, None)

    async def publish(self, channel: str, event: str, data: object, meta: Meta | None = None) -> str:
        return await self.publisher.publish(channel, event, data, meta)

    async def history(self, channel: str, epoch: str, after: tuple[int, int]) -> list[HistoryEntry] | None:
        """Resumes of one channel asked for in one loop turn share one read (a reconnect storm is one
        read per channel, not per socket), each answered with what lies after its own offset (resumes from
        the same offset get the same list: read it, do not change it)."""
        fut: asyncio.Future[list[HistoryEntry] | None] = asyncio.get_running_loop().create_future()
        waiting = self._reads.get(channel)
        if waiting is None:
            waiting = self._reads[channel] = []
            asyncio.get_running_loop().call_soon(self._read_batch, channel)
        waiting.append((epoch, after, fut))
        return await fut

    def _read_batch(self, channel: str) -> None:
        self._spawn(self._history_batch(channel, self._reads.pop(channel, [])))

    async def _history_batch(self, channel: str,
                             waiters: list[tuple[str, tuple[int, int], asyncio.Future[list[HistoryEntry] | None]]]
                             ) -> None:
        try:
            current, first, entries = await self._read_history(channel, min(after for _, after, _ in waiters))
        except BaseException as err:  # each waiter gets the read's error (it is re-raised to each)
            for _, _, fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
            if isinstance(err, asyncio.CancelledError):
                raise
            return
        keyed = [(stream_id_key(e.stream_id), e) for e in entries]
        shared: dict[tuple[int, int], list[HistoryEntry]] = {}  # a storm resumes from a few offsets: one list each
        for epoch, after, fut in waiters:
            if fut.done():
                continue
            if current != epoch or (first is not None and first > after):
                # The epoch changed, or the oldest kept event is newer than the client's: what lay
                # between may have been trimmed. Redis 6.2 cannot say (7.0's XINFO
                # max-deleted-entry-id could), so refuse rather than risk a silent gap.
                fut.set_result(None)
            else:
                missed = shared.get(after)
                if missed is None:
                    missed = shared[after] = [e for key, e in keyed if key > after]
                fut.set_result(missed)

    async def _read_history(self, channel: str, after: tuple[int, int]
                            ) -> tuple[str | None, tuple[int, int] | None, list[HistoryEntry]]:
        """(current epoch, oldest kept id (an event's, or a resume point's marker), the events after ``after``)."""
        k = self.keys
        start = f"({after[0]}-{after[1]}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(k.epoch(channel))
            pipe.xrange(k.stream(channel), "-", "+", count=1)
            pipe.xrange(k.stream(channel), start, "+", count=self.read_cap(channel))
            current, first, entries = await pipe.execute()
        current_epoch = current.decode() if current else None
        oldest = stream_id_key(_s(first[0][0])) if first else None
        kept = [HistoryEntry(current_epoch or "", _s(sid), fields[b"m"])
                for sid, fields in entries if b"z" not in fields]  # not a resume point's marker
        return current_epoch, oldest, kept

    async def position(self, channel: str) -> str | None:
        k = self.keys
        epoch, newest = await self._position_script(keys=[k.stream(channel), k.epoch(channel)],
                                                    args=[self.publisher.history(channel)[1], RESUME_POINT])
        return make_offset(_s(epoch), _s(newest))

    async def current(self, channel: str) -> list[HistoryEntry]:
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(k.epoch(channel))
            pipe.xrevrange(k.stream(channel), "+", "-", count=self.read_cap(channel))  # the newest, whatever the cap
            epoch, entries = await pipe.execute()
        if not epoch:
            return []
        return [HistoryEntry(_s(epoch), _s(sid), fields[b"m"])
                for sid, fields in reversed(entries) if b"z" not in fields]

    async def _run(self) -> None:
        await read_with_reconnect(self._read, self._resubscribe, self._up.clear, "redis pub/sub")

    async def _read(self) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            raise RedisConnectionError("no pub/sub connection")
        while True:
            msg = await pubsub.get_message(timeout=5.0)
            if msg is not None:
                self._handle(msg)

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        name = _s(msg["channel"])
        if kind == "message" or kind == b"message":
            self._incoming(name, msg["data"])
        elif kind in ("subscribe", b"subscribe"):
            self._confirmed(name)

    def _incoming(self, name: str, data: bytes) -> None:
        """One pub/sub message (classic or sharded): a readiness probe, or an event."""
        channel = self.keys.channel_of(name)
        if channel == _CONTROL:
            probe = self._probes.get(data)
            if probe is not None and not probe.done():
                probe.set_result(None)
            return
        epoch, _, rest = data.partition(b" ")
        sid, _, message = rest.partition(b" ")
        self.on_message(channel, epoch.decode(), sid.decode(), message)

    def _confirmed(self, name: str) -> None:
        # Subscription confirmed: forget the future (one per channel would otherwise stay forever).
        fut = self._pending.pop(self.keys.channel_of(name), None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _resubscribe(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(*self.transient_errors):
                await self._pubsub.aclose()
        self._pubsub = self._listener.pubsub()
        self.on_recovering(list(self._channels))  # hold their live events until the backfill
        names = [self.keys.pubsub(c) for c in self._channels] + [self.keys.pubsub(_CONTROL)]
        await self._pubsub.subscribe(*names)
        # Wait for every confirmation before telling the hub: history read after this
        # point overlaps live delivery, so nothing falls between the two.
        confirmed = 0
        while confirmed < len(names):
            msg = await self._pubsub.get_message(timeout=5.0)
            if msg is None:
                raise RedisTimeoutError("no subscribe confirmation")
            if msg["type"] in ("subscribe", b"subscribe"):
                confirmed += 1
            self._handle(msg)
        self.reconnects += 1
        self._up.set()
        log.info("redis pub/sub back; %d channels resubscribed", len(self._channels))
        await self.on_reconnect(list(self._channels))


async def read_with_reconnect(read: Callable[[], Awaitable[None]], resubscribe: Callable[[], Awaitable[None]],
                              down: Callable[[], None], label: str) -> None:
    """Run ``read`` until it returns (its link retired). When it fails for any reason: ``down()``, then
    ``resubscribe()`` with capped jittered backoff (0.1 s doubling to 2 s) until it
    succeeds, and read again. ``read`` only ever runs on a connection that
    ``resubscribe`` completed, so a half-made connection cannot end the loop.
    Cancellation is never caught, so the owner's cancel always ends it."""
    while True:
        try:
            await read()
            return
        except Exception as err:  # noqa: BLE001 - any failure of the link means: reconnect
            cancelled_meanwhile(err)
            down()
            log.warning("%s lost (%s: %s); reconnecting", label, type(err).__name__, err)
        attempt = 0
        while True:
            await asyncio.sleep(backoff(attempt))
            try:
                await resubscribe()
                break
            except Exception as again:  # noqa: BLE001 - keep trying until Redis is back
                cancelled_meanwhile(again)
                attempt += 1
                log.warning("%s: reconnect failed (%s: %s); retrying", label, type(again).__name__, again)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""The event bus on Redis: channel names, the event envelope, and a write-only publisher.

Shared by every process: gateways publish the events of the writes they commit,
workers publish moderation outcomes, and neither needs the other's code. Each
publish runs one Lua script that appends the event to the channel's bounded
history (a Redis Stream) and PUBLISHes it with its stream id, atomically, so the
live order equals the history order and a resuming client can merge the two by
offset with no gap and no duplicate.

On the wire inside Redis an event is ``<epoch> <stream-id> <meta-json>\\n<body-json>``.
``meta`` is what the fan-out filter needs and the client never sees (the author,
for block lists; ``only``, a single user allowed to see it). ``body`` is the
client-visible part, encoded once here and copied byte for byte to every socket.
The epoch changes when a channel's history is lost (Redis restarted without
persistence), which tells a resuming client that its offset means nothing now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, cast

import msgspec
from redis.asyncio.cluster import RedisCluster

from common.outbox import EVENT_SEPARATOR
from common.redisconn import Script

if TYPE_CHECKING:
    from collections.abc import Sequence

    from common.redisconn import Client

log = logging.getLogger(__name__)

# The publish step every publishing script ends with. KEYS[1..3]: the channel's
# stream, pub/sub channel and epoch key; ARGV[1]: history length; ARGV[3]: seconds
# the history outlives the channel's last event (stream and epoch expire together,
# so a resume past it is told recovered:false); ``msg``: the message (ARGV[2]
# unless the part before changed it).
_ENSURE_EPOCH = """
local epoch = redis.call('GET', {key})
if not epoch then
  local t = redis.call('TIME')
  epoch = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', {key}, epoch{expiry})
end"""
_PUBLISH_STEP = _ENSURE_EPOCH.format(key="KEYS[3]", expiry="") + """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', msg)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('{command}', KEYS[2], epoch .. ' ' .. id .. ' ' .. msg)
return {{epoch, id}}
"""


# A channel's resume point as a subscriber joins. KEYS[1]: its stream; KEYS[2]: its
# epoch key; ARGV[1]: seconds its history is kept; ARGV[2]: RESUME_POINT. The newest
# entry's id; for a channel with no history yet (a new user's ``user:`` channel), a
# marker entry is added and its id given, with the epoch made now if there is none,
# both kept as long as history would be. A resume from it then gets every event since,
# and is refused (recovered: false) once trimming took the marker, by the same check as
# any other offset. The marker is never published; readers skip it by its ``z`` field
# (and a reader older than it, mid-deploy, finds an ``m`` it can read: an event for nobody).
POSITION_SCRIPT = _ENSURE_EPOCH.format(key="KEYS[2]", expiry=", 'EX', ARGV[1]") + """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #newest > 0 then return {epoch, newest[1][1]} end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'z', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {epoch, id}
"""


def publishing_script(before: str = "", *, sharded: bool = False) -> str:
    """Lua that runs ``before`` (which may return early, or rewrite ``msg``) and then
    publishes, all in one atomic step. Sharded pub/sub (``VYBE_PUBSUB=sharded``,
    Redis >= 7) uses SPUBLISH, which reaches the shard owning the channel's slot;
    the keys share the ``{channel}`` hash tag, so the script runs on that one shard."""
    step = _PUBLISH_STEP.format(command="SPUBLISH" if sharded else "PUBLISH")
    return f"local msg = ARGV[2]\n{before}\n{step}"


class Meta(msgspec.Struct, omit_defaults=True, frozen=True):
    """Fan-out filter facts; never sent to clients."""

    a: str | None = None
    """Author id (viewers who blocked the author do not receive the event)."""
    o: str | None = None
    """Only this user may receive it (PRIVATE content, personal notices)."""
    m: bool = False
    """Moderators only."""
    t: float = 0.0
    """Publish time (epoch seconds), for the publish-to-send latency metric."""
    b: list[str] | None = None
    """Control: the new block list of user ``o`` (applied by every node holding their sockets)."""
    x: str | None = None
    """Control from the server API, for user ``o``'s sockets on every node: ``disconnect``, or
    ``unsubscribe`` (the channels ``c``). Not delivered as an event."""
    c: list[str] | None = None


class Body(msgspec.Struct, frozen=True):
    event: str
    ts: float
    data: object


_meta_encoder = msgspec.json.Encoder()
_body_encoder = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(Meta)


class Keys:
    """Redis names for one deployment (``prefix`` isolates deployments and test runs)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def stream(self, channel: str) -> str:
        # The hash tag keeps a channel's keys in one Redis Cluster slot.
        return f"{self.prefix}h:{{{channel}}}"

    def pubsub(self, channel: str) -> str:
        return f"{self.prefix}c:{{{channel}}}"

    def epoch(self, channel: str) -> str:
        return f"{self.prefix}e:{{{channel}}}"

    def sequence(self, channel: str) -> str:
        """The last outbox sequence published on ``channel`` (idempotent, ordered publishing)."""
        return f"{self.prefix}s:{{{channel}}}"

    def held(self, channel: str) -> str:
        """Outbox rows of ``channel`` that arrived before their predecessor."""
        return f"{self.prefix}q:{{{channel}}}"

    def channel_of(self, pubsub_name: str) -> str:
        return pubsub_name[len(self.prefix) + 3:-1]

    @property
    def jobs(self) -> str:
        return f"{self.prefix}moderation:jobs"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}moderation:dead"


def encode_message(event: str, data: object, meta: Meta | None = None, ts: float | None = None) -> bytes:
    """The bytes stored in history and published: ``meta\\nbody``."""
    now = time.time() if ts is None else ts
    body = _body_encoder.encode(Body(event, now, data))
    meta = msgspec.structs.replace(meta or Meta(), t=now)
    return _meta_encoder.encode(meta) + b"\n" + body


RESUME_POINT = encode_message("resume.point", None, Meta(o=""))
"""The message of a resume point's marker (see POSITION_SCRIPT): only for a user with no id, that is nobody."""


def split_message(message: bytes) -> tuple[Meta, bytes]:
    """Inverse of :func:`encode_message`: the filter facts and the client-visible body."""
    head, _, body = message.partition(b"\n")
    return _meta_decoder.decode(head), body


class Event(NamedTuple):
    """One event a write announces, encoded once; stored in the outbox, then published."""

    channel: str
    message: bytes
    ordered: bool = True
    """Kept in the channel's commit order (every channel but the job queue)."""


def event(channel: str, name: str, data: object, meta: Meta | None = None) -> Event:
    return Event(channel, encode_message(name, data, meta))


def job(kind: str, item_id: object) -> Event:
    """A moderation job (``kind`` is ``vybe`` or ``comment``): the workers' queue needs no order."""
    return Event(JOBS_CHANNEL, f"{kind} {item_id}".encode(), ordered=False)


JOBS_CHANNEL = "moderation:jobs"
SEPARATOR = EVENT_SEPARATOR.encode()


class JobBacklog(NamedTuple):
    """The moderation job stream from outside the workers, who delete each job when it is done."""

    waiting: int
    """Jobs not done: queued, or delivered to a worker and not acknowledged yet."""
    oldest_s: float
    """Age of the oldest of them in seconds (0 with none), by the time in its stream id (Redis's clock)."""


async def job_backlog(redis: Any, keys: Keys) -> JobBacklog:
    """How far the moderation workers are behind: two reads of the job stream, in one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xlen(keys.jobs)
        pipe.xrange(keys.jobs, count=1)
        waiting, first = await pipe.execute()
    if not first:
        return JobBacklog(int(waiting), 0.0)
    ms, _ = stream_id_key(_text(first[0][0]))
    return JobBacklog(int(waiting), max(0.0, time.time() - ms / 1000))

# Publishes one outbox row of an ordered channel. KEYS[4]: the channel's last
# published sequence; KEYS[5]: rows that arrived before their predecessor.
# ARGV[4]: the row's sequence; ARGV[5]: '1' when no earlier row of the channel is
# waiting anywhere (its first row ever, or the oldest row left in the outbox: every
# earlier one was published, or it would not have been deleted), so it goes out even
# when Redis's position is missing or behind (data lost, a failover to a replica that
# lags); ARGV[2]: the row's events, joined by 0x1E.
# A sequence already published is a no-op: publishing is idempotent, so the fast
# path and any number of relays may overlap; a row whose predecessor has not been
# published waits in KEYS[5] and goes out, in order, right after it.
_ORDERED = """
local function pub(msg)
{step}
end
local function pub_all(joined)
  for msg in string.gmatch(joined, '[^\\30]+') do pub(msg) end
end
local seq = tonumber(ARGV[4])
local last = redis.call('GET', KEYS[4])
if last then
  last = tonumber(last)
  if seq <= last then return 'duplicate' end
end
if ARGV[5] ~= '1' and (not last or seq > last + 1) then
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
  return 'held'
end
pub_all(ARGV[2])
last = seq
while true do
  local nxt = redis.call('HGET', KEYS[5], tostring(last + 1))
  if not nxt then break end
  redis.call('HDEL', KEYS[5], tostring(last + 1))
  pub_all(nxt)
  last = last + 1
end
redis.call('SET', KEYS[4], last, 'EX', ARGV[3])
return 'published'
"""


History = Callable[[str], tuple[int, int]]
"""A channel's (events kept, seconds kept): ``common.namespaces.Namespaces.history_of``."""


class Publisher:
    """Write-only side of the bus: processes that hold no sockets use only this."""

    def __init__(self, redis: Client, prefix: str, history_len: int = 1000, *,
                 sharded: bool = False, history_ttl_s: int = 172_800, history: History | None = None,
                 replica_wait_ms: int = 100) -> None:
        self.redis = redis
        self.replica_wait_ms = replica_wait_ms
        """Cluster: how long :meth:`publish_rows` waits for a replica of each master it wrote to (0: not at all)."""
        self._unreplicated_logged = 0.0
        self._replicas_seen: dict[str, tuple[float, int]] = {}
        """Per cluster master: when its replicas were counted, and how many were connected."""
        self.keys = Keys(prefix)
        self.history_len = history_len
        self.history_ttl_s = history_ttl_s
        self.history: History = history or (lambda channel: (history_len, history_ttl_s))
        """Per channel: its namespace's history length and TTL."""
        self.sharded = sharded
        """SPUBLISH instead of PUBLISH: for gateways on ``VYBE_PUBSUB=sharded`` (SSUBSCRIBE)."""
        self._script = self.script()
        step = _PUBLISH_STEP.format(command="SPUBLISH" if sharded else "PUBLISH").replace("return {{epoch, id}}", "")
        self._ordered = Script(redis, _ORDERED.replace("{step}", step.replace("{{", "{").replace("}}", "}")))

    def script(self, before: str = "") -> Script:
        """A publishing script (see :func:`publishing_script`) in this bus's mode."""
        return Script(self.redis, publishing_script(before, sharded=self.sharded))

    async def publish(self, channel: str, event: str, data: object, meta: Meta | None = None) -> str:
        """Append to history and broadcast at once (no outbox: for what no write announces,
        such as presence counts); returns the offset clients will see."""
        message = encode_message(event, data, meta)
        k = self.keys
        length, ttl = self.history(channel)
        epoch, sid = await self._script(
            keys=[k.stream(channel), k.pubsub(channel), k.epoch(channel)],
            args=[length, message, ttl],
        )
        return make_offset(_text(epoch), _text(sid))

    async def publish_rows(self, rows: Sequence[OutboxRow], starts: Sequence[bool]) -> list[str]:
        """Publish outbox rows in one pipeline: ordered rows through the sequence check,
        jobs onto the job stream. Returns, per row, published / duplicate / held."""
        k = self.keys
        replies_per_row: list[int | None] = []  # None: one reply that is the row's outcome
        waits = await self._replicas_to_wait_for(rows)
        async with self.redis.pipeline(transaction=False) as pipe:
            for row, start in zip(rows, starts, strict=True):
                c = row.channel
                if c == JOBS_CHANNEL:
                    messages = row.messages.encode().split(SEPARATOR)
                    for message in messages:
                        kind, _, item_id = message.partition(b" ")
                        pipe.xadd(k.jobs, {"kind": kind, "id": item_id})
                    replies_per_row.append(len(messages))
                elif row.seq is None:
                    messages = row.messages.encode().split(SEPARATOR)
                    length, ttl = self.history(c)
                    for message in messages:
                        await self._script(keys=[k.stream(c), k.pubsub(c), k.epoch(c)],
                                           args=[length, message, ttl], client=pipe)
                    replies_per_row.append(len(messages))
                else:
                    length, ttl = self.history(c)
                    await self._ordered(
                        keys=[k.stream(c), k.pubsub(c), k.epoch(c), k.sequence(c), k.held(c)],
                        args=[length, row.messages, ttl, row.seq, "1" if start else "0"],
                        client=pipe)
                    replies_per_row.append(None)
            # Cluster: WAIT 1 on each master written to, last in the same pipeline, so it goes on
            # the connection that carried the writes (WAIT counts only its own connection's). The
            # relay deletes the outbox rows after this: a master lost then cannot take an event
            # along, as its replica, promoted in its place, holds it.
            for node in waits:
                pipe.execute_command("WAIT", 1, self.replica_wait_ms, target_nodes=node)
            replies = await pipe.execute(raise_on_error=False)
        if waits:
            replies, acks = replies[:-len(waits)], replies[-len(waits):]
            await self._check_replicated(waits, acks)
        if failed := next((r for r in replies if isinstance(r, Exception)), None):
            raise failed
        out: list[str] = []
        i = 0
        for n in replies_per_row:
            out.append("published" if n is not None else _text(replies[i]))
            i += 1 if n is None else n
        return out


    async def _replicas_to_wait_for(self, rows: Sequence[OutboxRow]) -> list[Any]:
        """Cluster: the masters that ``rows`` write to and that have a replica connected (asked with
        INFO replication at most every 30 s per master: the client's slot map does not say, and a
        WAIT on a master with no replica would only wait out its timeout)."""
        cluster = self.redis
        if not self.replica_wait_ms or not isinstance(cluster, RedisCluster):
            return []
        k = self.keys
        out: list[Any] = []
        try:
            if not cluster.nodes_manager.slots_cache:
                await cluster.initialize()
            masters = {node.name: node for node in (
                cluster.get_node_from_key(k.jobs if r.channel == JOBS_CHANNEL else k.stream(r.channel))
                for r in rows) if node is not None}
            now = time.monotonic()
            for name, node in masters.items():
                seen = self._replicas_seen.get(name)
                if seen is None or now - seen[0] > 30:
                    info = await cluster.execute_command("INFO", "replication", target_nodes=node)
                    if isinstance(info, dict) and name in info and isinstance(info[name], dict):
                        info = info[name]
                    seen = self._replicas_seen[name] = (now, int(info.get("connected_slaves", 0)))
                if seen[1] > 0:
                    out.append(node)
        except Exception as err:  # noqa: BLE001 - not knowing means not waiting; publishing goes on
            log.warning("redis cluster: cannot tell which masters have replicas (%s: %s)", type(err).__name__, err)
        return out

    async def _check_replicated(self, nodes: list[Any], acks: list[Any]) -> None:
        """Log (at most every 10 s) the masters no replica of which acknowledged in time, and
        refresh the slot map (a replica that died leaves it). Never raises: the rows were
        published, and publishing them again would duplicate what has no sequence (jobs)."""
        short = [node.name for node, ack in zip(nodes, acks, strict=True) if not isinstance(ack, int) or ack < 1]
        if not short or time.monotonic() - self._unreplicated_logged < 10:
            return
        self._unreplicated_logged = time.monotonic()
        log.warning("redis cluster: no replica of %s acknowledged within %d ms; published anyway (a loss of "
                    "that master now would lose the newest events of its channels' history)",
                    short, self.replica_wait_ms)
        try:
            await cast("RedisCluster", self.redis).nodes_manager.initialize()
        except Exception as err:  # noqa: BLE001 - RedisClusterException is not a RedisError
            log.warning("redis cluster: refreshing the slot map failed: %s", err)


class OutboxRow(Protocol):
    """``db.outbox.Row``'s shape (the bus does not depend on the database package)."""

    @property
    def channel(self) -> str: ...
    @property
    def seq(self) -> int | None: ...
    @property
    def messages(self) -> str: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def make_offset(epoch: str, stream_id: str) -> str:
    """Client-visible offset: opaque to clients, ``<epoch>-<ms>-<seq>`` to us."""
    return f"{epoch}-{stream_id}"


def parse_offset(offset: str) -> tuple[str, tuple[int, int]] | None:
    """``(epoch, (ms, seq))``, or None when the string is not one of our offsets."""
    parts = offset.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return parts[0], (int(parts[1]), int(parts[2]))


def stream_id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)

"""The transactional outbox: rows written with the write, published in commit order, once."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis

from common.bus import JOBS_CHANNEL, Event, Keys, Publisher, event, job
from common.outbox import EVENT_SEPARATOR
from db import outbox

pytestmark = pytest.mark.anyio


async def _write(pool: asyncpg.Pool, events: list[Event]) -> list[outbox.Row]:
    async with pool.acquire() as conn, conn.transaction():
        return await outbox.write(conn, events)


async def _history(redis: aioredis.Redis, prefix: str, channel: str) -> list[int]:
    entries = await redis.xrange(Keys(prefix).stream(channel))
    return [int(fields[b"m"].split(b'"n":')[1].split(b"}")[0]) for _, fields in entries]


def _n(channel: str, n: int) -> Event:
    return event(channel, "test.seq", {"n": n})


async def test_rows_group_by_channel_with_sequences_and_jobs_unordered(pool: asyncpg.Pool) -> None:
    """One row per channel per transaction; ordered channels count 1, 2, ...; the job queue has no sequence."""
    first = await _write(pool, [_n("feed", 0), _n("vybe:a", 1), _n("feed", 2), job("vybe", "x")])
    assert [(r.channel, r.seq) for r in first] == [("feed", 1), ("vybe:a", 1), (JOBS_CHANNEL, None)]
    assert first[0].messages.count(EVENT_SEPARATOR) == 1
    second = await _write(pool, [_n("feed", 3)])
    assert [(r.channel, r.seq) for r in second] == [("feed", 2)]
    assert await _write(pool, []) == []


async def test_sequence_follows_commit_order_under_concurrency(pool: asyncpg.Pool, database_url: str) -> None:
    """Concurrent transactions on one channel get sequence numbers in the order they commit, with no holes."""
    seen_before: dict[int, int] = {}
    observer = await asyncpg.connect(database_url)
    looking = asyncio.Lock()

    async def writer(n: int) -> int:
        async with pool.acquire() as conn, conn.transaction():
            await asyncio.sleep(0.001 * (n % 5))
            [row] = await outbox.write(conn, [_n("feed", n)])
            # Every lower sequence committed before this one got its number (seen from outside).
            async with looking:
                seen_before[row.seq or 0] = await observer.fetchval(
                    "SELECT count(*) FROM outbox WHERE channel = 'feed'")
            await asyncio.sleep(0.001 * (n % 3))
        return row.seq or 0

    try:
        seqs = await asyncio.gather(*(writer(n) for n in range(15)))
    finally:
        await observer.close()
    assert sorted(seqs) == list(range(1, 16))
    assert all(seen_before[seq] == seq - 1 for seq in seqs)


async def test_out_of_order_rows_are_held_and_published_in_order_once(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """Row 2 before row 1 waits in Redis; row 1 releases both in order; republishing is a no-op."""
    pub = Publisher(redis, redis_prefix)
    rows = [(await _write(pool, [_n("feed", n)]))[0] for n in range(3)]
    assert await pub.publish_rows([rows[1]], [False]) == ["held"]
    assert await _history(redis, redis_prefix, "feed") == []
    assert await pub.publish_rows([rows[0], rows[2]], [True, False]) == ["published", "published"]
    assert await _history(redis, redis_prefix, "feed") == [0, 1, 2]
    assert await pub.publish_rows(rows, [True] * 3) == ["duplicate"] * 3
    assert await _history(redis, redis_prefix, "feed") == [0, 1, 2]


async def test_relay_publishes_what_a_dead_process_left(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """Rows committed but never published (the writer died) are published by a relay, in order, then deleted."""
    for n in range(5):
        await _write(pool, [_n("vybe:r", n), job("comment", f"c{n}")])
    relay = outbox.Relay(pool, Publisher(redis, redis_prefix).publish_rows)
    assert await relay.catch_up(0.0) == 10
    assert await _history(redis, redis_prefix, "vybe:r") == [0, 1, 2, 3, 4]
    assert await redis.xlen(Keys(redis_prefix).jobs) == 5
    await relay.flush()
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await relay.catch_up(0.0) == 0


async def test_a_channel_redis_forgot_restarts_from_the_oldest_waiting_row(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """After Redis lost a channel's position, the fast path holds a later row; the relay starts the channel
    again from the oldest row still in the outbox, so nothing committed is skipped."""
    pub = Publisher(redis, redis_prefix)
    relay = outbox.Relay(pool, pub.publish_rows)
    first = await _write(pool, [_n("feed", 0)])
    await relay.publish_now(first)
    await relay.flush()
    await redis.delete(*[k async for k in redis.scan_iter(match=redis_prefix + "*")])  # data lost
    waiting = [(await _write(pool, [_n("feed", n)]))[0] for n in (1, 2)]
    assert await pub.publish_rows([waiting[1]], [False]) == ["held"]
    assert await relay.catch_up(0.0) == 2
    assert await _history(redis, redis_prefix, "feed") == [1, 2]


async def test_publish_failure_leaves_rows_to_the_relay(pool: asyncpg.Pool, redis: aioredis.Redis,
                                                       redis_prefix: str) -> None:
    """The fast path never raises: rows it could not publish stay in the outbox for the relay."""
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    rows = await _write(pool, [_n("feed", 7)])
    down = outbox.Relay(pool, Publisher(dead, redis_prefix).publish_rows)
    await down.publish_now(rows)
    assert not down.redis_ok and down.published == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1
    await dead.aclose()
    up = outbox.Relay(pool, Publisher(redis, redis_prefix).publish_rows)
    assert await up.catch_up(0.0) == 1
    assert await _history(redis, redis_prefix, "feed") == [7]


async def test_a_row_of_several_events_enters_history_as_separate_events(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """A group commit's events for one channel share a row; each becomes its own history entry."""
    [row] = await _write(pool, [_n("vybe:g", n) for n in range(4)])
    assert await Publisher(redis, redis_prefix).publish_rows([row], [True]) == ["published"]
    assert await _history(redis, redis_prefix, "vybe:g") == [0, 1, 2, 3]
    entries = await redis.xrange(Keys(redis_prefix).stream("vybe:g"))
    assert all(b"\x1e" not in fields[b"m"] for _, fields in entries)


def test_a_group_commit_is_announced_once_per_target() -> None:
    """Hundreds of reactions on one vybe in one group commit: one event where it is shown, one to its
    author; a lone reaction names its reactor (so blocks apply), a sum does not."""
    import uuid

    from common.bus import split_message
    from common.events import reactions_changed
    from db.writes.types import ReactionResult

    vybe = uuid.uuid4()

    def result(count: int) -> ReactionResult:
        return ReactionResult(applied=True, target_type="SHARED_VYBE", target_id=vybe, reaction_type="HEART",
                              reaction_count=count, target_author_id="author", vybe_id=vybe)

    many = [(f"u{i}", i % 5 != 0, result(240)) for i in range(400)] + [("author", True, result(240))]
    events = reactions_changed(many)
    assert [e.channel for e in events] == [f"vybe:{vybe}", "user:author"]
    meta, body = split_message(events[0].message)
    data = msgspec.json.decode(body)["data"]
    assert (data["reaction_count"], data["added"], data["removed"], data["user_id"]) == (240, 321, 80, None)
    assert meta.a is None
    note = msgspec.json.decode(split_message(events[1].message)[1])["data"]
    assert note["added"] == 320 and note["user_id"] is None  # the author's own reaction is not news to them
    [one, to_author] = reactions_changed([("u1", True, result(1))])
    assert split_message(one.message)[0].a == "u1" and split_message(to_author.message)[0].a == "u1"


async def test_a_channel_whose_redis_position_fell_behind_keeps_flowing(
        pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """Redis came back with an older position than was published (a lagging replica, an unsynced AOF):
    later rows are held, and the relay, which knows no earlier row is waiting, starts from the oldest one."""
    pub = Publisher(redis, redis_prefix)
    relay = outbox.Relay(pool, pub.publish_rows)
    for n in range(3):
        await relay.publish_now(await _write(pool, [_n("feed", n)]))
    await relay.flush()
    await redis.set(Keys(redis_prefix).sequence("feed"), 1)  # the position says 1; 3 were published
    later = [(await _write(pool, [_n("feed", n)]))[0] for n in (3, 4)]
    assert await pub.publish_rows(later, [False, False]) == ["held", "held"]
    assert await relay.catch_up(0.0) == 2
    assert await _history(redis, redis_prefix, "feed") == [0, 1, 2, 3, 4]
    assert int(await redis.get(Keys(redis_prefix).sequence("feed"))) == 5

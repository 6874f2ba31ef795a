"""The transactional outbox: events written with the write, published after COMMIT.

A write calls :func:`write` inside its transaction (last, so the per-channel
sequence locks are held only until COMMIT). After COMMIT its process hands the
rows to :class:`Relay.submit` (the fast path: published within a loop turn). The
relay's loop publishes whatever is left: rows whose process died between COMMIT
and publish, rows that met a Redis outage, rows that arrived out of order.
Publishing is idempotent by sequence (see ``common.bus``), so relays on many
processes may overlap safely; one pass at a time is coordinated by an advisory
lock only to save work (transaction-scoped, one transaction per batch, so it holds
through a transaction pooler too). Published rows are deleted in batches: one statement
per flush, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from common.outbox import EVENT_SEPARATOR
from common.tasks import backoff, cancelled_meanwhile
from db.pool import UNREACHABLE, try_advisory_lock

if TYPE_CHECKING:
    from typing import LiteralString

    import asyncpg

log = logging.getLogger(__name__)

RELAY_LOCK = 7354002  # pg_try_advisory_xact_lock key: one relay pass at a time across processes


class Announced(Protocol):
    """One event to publish: ``common.bus.Event`` has this shape."""

    @property
    def channel(self) -> str: ...
    @property
    def message(self) -> bytes: ...
    @property
    def ordered(self) -> bool: ...


class Row(NamedTuple):
    id: int
    channel: str
    seq: int | None
    messages: str
    """The events, joined by :data:`common.outbox.EVENT_SEPARATOR`."""


# What publishing a row gives: "published" (now), "duplicate" (before, perhaps by another
# process) or "held" (waiting in Redis for an earlier row of its channel).
Publish = Callable[[Sequence[Row], Sequence[bool]], Awaitable[Sequence[str]]]
"""Publish rows in order; the flags say which rows may start a channel whose position Redis lost."""

_WRITE: LiteralString = """
WITH seqs AS (
    INSERT INTO outbox_channels AS c (channel, seq)
    SELECT unnest($1::text[]), 1
    ON CONFLICT (channel) DO UPDATE SET seq = c.seq + 1
    RETURNING channel, seq
), rows AS (
    SELECT m.channel, s.seq, m.messages
      FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS m (channel, messages, n)
      LEFT JOIN seqs s USING (channel)
     ORDER BY m.n
)
INSERT INTO outbox (channel, seq, messages) SELECT channel, seq, messages FROM rows
RETURNING id, channel, seq, messages
"""
_PENDING: LiteralString = """
SELECT id, channel, seq, messages FROM outbox
 WHERE created_at < clock_timestamp() - make_interval(secs => $1)
 ORDER BY channel, seq NULLS FIRST, id LIMIT $2
"""
_FIRST_SEQ: LiteralString = "SELECT channel, min(seq) FROM outbox WHERE channel = ANY($1::text[]) GROUP BY channel"
_DELETE: LiteralString = "DELETE FROM outbox WHERE id = ANY($1::bigint[])"


async def write(conn: asyncpg.Connection, events: Iterable[Announced]) -> list[Row]:
    """Store ``events`` in the current transaction: one row per channel, rows in the order
    their channels first appear (the fast path publishes them in that order).

    Call it last in the transaction: ordered channels are locked (in name order,
    so two writers never deadlock on them) until COMMIT.
    """
    grouped: dict[str, list[str]] = {}
    ordered: set[str] = set()
    for event in events:
        grouped.setdefault(event.channel, []).append(event.message.decode())
        if event.ordered:
            ordered.add(event.channel)
    if not grouped:
        return []
    channels = list(grouped)
    rows = await conn.fetch(_WRITE, sorted(ordered), channels, [EVENT_SEPARATOR.join(grouped[c]) for c in channels])
    return [Row(r["id"], r["channel"], r["seq"], r["messages"]) for r in rows]


class Announcement:
    """What one write announces: built from its result inside its transaction, written to
    the outbox just before COMMIT; the rows land in :attr:`rows` for the fast path.

    ``build(conn, result)`` returns the events (or an awaitable of them: a builder may
    read or change rows in the same transaction first). A replayed write (an
    idempotent retry) announces nothing: its events went out the first time.
    """

    def __init__(self, build: Callable[[asyncpg.Connection, Any],
                                       Iterable[Announced] | Awaitable[Iterable[Announced]]]):
        self.build = build
        self.rows: list[Row] = []

    @classmethod
    def of(cls, build: Callable[[Any], Iterable[Announced]]) -> Announcement:
        """An announcement built from the result alone."""
        return cls(lambda _conn, result: build(result))

    async def write(self, conn: asyncpg.Connection, result: object) -> None:
        self.rows = []
        if getattr(result, "replayed", False):
            return
        events = self.build(conn, result)
        if inspect.isawaitable(events):
            events = await events
        self.rows = await write(conn, events)


class Relay:
    """Moves committed outbox rows to Redis: the fast path and the catch-up loop of one process."""

    def __init__(self, pool: asyncpg.Pool, publish: Publish, *, interval_s: float = 0.5, grace_s: float = 1.0,
                 batch: int = 500) -> None:
        self.pool = pool
        self.publish = publish
        self.interval_s = interval_s
        self.grace_s = grace_s
        """The loop leaves rows younger than this to the fast path of the process that wrote them."""
        self.batch = batch
        self.published = 0
        self.relayed = 0
        """Rows the catch-up loop published (after an outage, a crash, or out of order)."""
        self.backlog = 0
        """Rows submitted and not yet published by the fast path."""
        self._queue: list[Row] = []
        self._done: list[int] = []
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self.redis_ok = True

    def submit(self, rows: Sequence[Row]) -> None:
        """After COMMIT: publish these rows soon. Never raises, never waits."""
        if rows:
            self._queue.extend(rows)
            self.backlog = len(self._queue)
            self._wake.set()

    async def publish_now(self, rows: Sequence[Row]) -> None:
        """After COMMIT, inline: publish ``rows`` now; what fails is left to the catch-up loop."""
        if rows:
            await self._publish(list(rows), [r.seq == 1 for r in rows])

    async def run_fast_path(self) -> None:
        """Publish submitted rows, every row queued meanwhile in one pipeline."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            rows, self._queue = self._queue, []
            if rows and await self._publish(rows, [r.seq == 1 for r in rows]) < len(rows):
                self._urgent.set()  # a held row: its predecessor is in the outbox, or Redis lost its place
            self.backlog = len(self._queue)

    async def run_catch_up(self) -> None:
        """Every ``interval_s`` (at once after a held row): publish what the fast paths left.
        While publishing fails (Redis down) every pass takes all rows, however young, so
        delivery resumes within one interval of Redis coming back."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._urgent.wait()
            grace = 0.0 if self._urgent.is_set() or not self.redis_ok else self.grace_s
            self._urgent.clear()
            try:
                await self.catch_up(grace)
            except UNREACHABLE as err:
                log.warning("outbox relay: PostgreSQL unreachable (%s)", err)

    async def run_deleter(self) -> None:
        """Delete published rows in batches (one statement per flush)."""
        attempt = 0
        while True:
            await asyncio.sleep(0.1 if not attempt else backoff(attempt))
            done, self._done = self._done, []
            if not done:
                continue
            try:
                await self.pool.execute(_DELETE, done)
                attempt = 0
            except UNREACHABLE as err:
                self._done.extend(done)  # published already; deleted once PostgreSQL is back
                attempt += 1
                log.warning("outbox: deleting %d published rows failed (%s); will retry", len(done), err)

    async def flush(self) -> None:
        """At shutdown: publish what the fast path still holds (and any row a cancelled publish
        left behind), delete what was published."""
        rows, self._queue = self._queue, []
        if rows:
            await self._publish(rows, [r.seq == 1 for r in rows])
        await self.catch_up(0.0)
        done, self._done = self._done, []
        if done:
            await self.pool.execute(_DELETE, done)

    async def catch_up(self, grace_s: float = 0.0) -> int:
        """Publish unpublished rows older than ``grace_s``, a batch at a time, until none is
        left or Redis refuses; returns rows published or found done."""
        total = 0
        while True:
            # A transaction per batch, holding the lock: short, and correct through a transaction pooler.
            async with try_advisory_lock(self.pool, RELAY_LOCK) as conn:
                if conn is None:
                    return total  # another process is relaying right now
                rows = [Row(*r) for r in await conn.fetch(_PENDING, grace_s, self.batch)]
                if not rows:
                    return total
                first = dict(await conn.fetch(_FIRST_SEQ, list({r.channel for r in rows if r.seq is not None})))
                # A row may start a channel that Redis no longer knows (data lost, expired)
                # only when no earlier row of that channel is still waiting.
                done = await self._publish(rows, [r.seq is not None and first.get(r.channel) == r.seq
                                                  for r in rows])
                self.relayed += done
                total += done
                if done < self.batch:
                    return total
                await conn.execute(_DELETE, self._take_done())  # committed with the batch: the next is new rows

    def _take_done(self) -> list[int]:
        done, self._done = self._done, []
        return done

    async def _publish(self, rows: list[Row], starts: list[bool]) -> int:
        try:
            outcomes = await self.publish(rows, starts)
        except Exception as err:  # noqa: BLE001 - any publish failure leaves the rows to the catch-up loop
            cancelled_meanwhile(err)
            self.redis_ok = False
            log.warning("outbox: publishing %d rows failed (%s); the relay will retry", len(rows), err)
            return 0
        self.redis_ok = True
        done = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome != "held"]
        self._done.extend(done)
        self.published += len(done)
        return len(done)

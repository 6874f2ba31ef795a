"""Group commit for hot reactions.

Many users reacting to one popular vybe at once is the worst case for a
transaction per reaction: every one queues on the same row lock and pays its
own commit. :class:`ReactionWriter` collects the operations arriving within
``batch_ms`` of the oldest waiting one (up to ``batch_max``) and applies them in
ONE transaction: targets locked in id order and checked, then per sub-batch one
array-based ``INSERT ... ON CONFLICT DO NOTHING`` + ``DELETE`` statement (whose
counter trigger makes one UPDATE of the net delta per target), then COMMIT,
then every caller gets its own result (post-commit counts) or its own error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import asyncpg

from common.tasks import Supervised, cancelled_meanwhile
from db import outbox
from db.pool import UNREACHABLE
from db.writes import validate
from db.writes._tx import RETRYABLE
from db.writes.errors import NotFound, WriteError, WriterClosed
from db.writes.reactions import COUNTS, LOCK_ORDER, Target, check_input, check_target, lock_targets
from db.writes.types import ReactionResult

if TYPE_CHECKING:
    from types import TracebackType
    from typing import LiteralString, Self

log = logging.getLogger(__name__)

Key = tuple[str, str, str, uuid.UUID]  # user, reaction type, target type, target id
Events = Callable[[list[tuple[str, bool, ReactionResult]]], Iterable[outbox.Announced]]
"""(user id, added, result) of each operation of a batch that took effect -> the batch's events."""

# Returns which of the round's adds and removes took effect, as 1-based
# positions in their arrays (cheap to ship back: no row per operation).
_APPLY: LiteralString = """
WITH a AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::bool[])
           WITH ORDINALITY AS a (u, t, rt, rid, anon, n)
), ins AS (
    INSERT INTO reactions (user_id, type, reactable_type, reactable_id, is_anonymous)
    SELECT u, t::reaction_type, rt::reactable_type, rid, anon FROM a
    ON CONFLICT ON CONSTRAINT reactions_unique_key DO NOTHING
    RETURNING user_id, type, reactable_type, reactable_id
), del AS (
    DELETE FROM reactions r
     USING unnest($6::text[], $7::text[], $8::text[], $9::uuid[]) WITH ORDINALITY AS d (u, t, rt, rid, n)
     WHERE r.user_id = d.u AND r.type = d.t::reaction_type
       AND r.reactable_type = d.rt::reactable_type AND r.reactable_id = d.rid
    RETURNING d.n
)
SELECT (SELECT array_agg(a.n) FROM ins JOIN a ON a.u = ins.user_id AND a.t::reaction_type = ins.type
                                            AND a.rt::reactable_type = ins.reactable_type AND a.rid = ins.reactable_id)
           AS added,
       (SELECT array_agg(n) FROM del) AS removed
"""
# Only the users that do not exist (normally none) come back.
_MISSING_USERS: LiteralString = """
SELECT array(SELECT u FROM unnest($1::text[]) AS u WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = u))
"""
# Run the whole batch again after, before COMMIT: a deadlock or serialization
# failure; a user deleted between the check and the insert; the connection lost
# (killed backend, failover). None of these committed anything. A connection lost
# during COMMIT itself is CommitUnknown, never rerun (see _commit_once).
_BATCH_RETRYABLE = (*RETRYABLE, asyncpg.ForeignKeyViolationError, asyncpg.PostgresConnectionError,
                    asyncpg.AdminShutdownError)


class CommitUnknown(Exception):
    """The connection broke during COMMIT: the batch may or may not have committed."""


class _Op:
    __slots__ = ("add", "anonymous", "future", "key", "queued_at")

    def __init__(self, add: bool, key: Key, anonymous: bool, future: asyncio.Future[ReactionResult], now: float):
        self.add = add
        self.key = key
        self.anonymous = anonymous
        self.future = future
        self.queued_at = now


class ReactionWriter:
    """One writer task per process applying reactions in group commits; an async context manager."""

    def __init__(self, pool: asyncpg.Pool, *, batch_ms: float = 2.0, batch_max: int = 500, retries: int = 5,
                 events: Events | None = None, on_commit: Callable[[list[outbox.Row]], None] | None = None):
        """``events(applied)`` says what a batch announces, from (user id, added, result) of
        each operation that took effect: the batch writes them to the outbox in its
        transaction (a few rows per batch, however many reactions it holds), and hands
        the rows to ``on_commit`` (the outbox relay's fast path) after COMMIT."""
        if batch_max <= 0 or batch_ms < 0:
            raise ValueError("batch_max must be positive and batch_ms not negative")
        self._pool = pool
        self._events = events
        self._on_commit = on_commit
        self._batch_s = batch_ms / 1000
        self._batch_max = batch_max
        self._retries = retries
        self._pending: list[_Op] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self.task = Supervised("reaction-writer", self._run)
        self._closed = False
        self.batches = 0
        """Transactions committed (for metrics and tests)."""

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the writer loop, supervised: a failure is logged, counted and restarted."""
        if self._closed:
            raise RuntimeError("a ReactionWriter is started once")
        self.task.start()

    async def aclose(self) -> None:
        """Stop: a batch in flight is rolled back; every waiting caller gets :class:`WriterClosed`."""
        self._closed = True
        await self.task.stop()
        self._fail(self._pending, WriterClosed("the reaction writer stopped"))
        self._pending.clear()

    async def react(self, user_id: str, *, target_type: str, target_id: uuid.UUID | str, reaction_type: str,
                    is_anonymous: bool = False) -> ReactionResult:
        """Add a reaction; returns after the COMMIT of its batch. Repeating it is a no-op (``applied=False``)."""
        tid = check_input(user_id, target_type, target_id, reaction_type)
        return await self._submit(True, (user_id, reaction_type, target_type, tid),
                                  validate.flag(is_anonymous, "is_anonymous"))

    async def unreact(self, user_id: str, *, target_type: str, target_id: uuid.UUID | str,
                      reaction_type: str) -> ReactionResult:
        """Remove a reaction; removing one that is not there is a no-op (``applied=False``)."""
        tid = check_input(user_id, target_type, target_id, reaction_type)
        return await self._submit(False, (user_id, reaction_type, target_type, tid), False)

    async def _submit(self, add: bool, key: Key, anonymous: bool) -> ReactionResult:
        if self._closed:
            raise WriterClosed("the reaction writer is not running")
        loop = asyncio.get_running_loop()
        op = _Op(add, key, anonymous, loop.create_future(), loop.time())
        self._pending.append(op)
        self._wake.set()
        if len(self._pending) >= self._batch_max:
            self._full.set()
        return await op.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            # The window opens with the oldest waiting operation: ops that queued
            # while the previous batch committed have already waited their share.
            delay = self._pending[0].queued_at + self._batch_s - loop.time() if self._pending else 0
            if delay > 0 and len(self._pending) < self._batch_max:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._full.wait()
            batch = self._pending[: self._batch_max]
            del self._pending[: self._batch_max]
            if not self._pending:
                self._wake.clear()
                self._full.clear()
            batch = [op for op in batch if not op.future.done()]  # callers that gave up
            if batch:
                await self._apply(batch)

    async def _apply(self, batch: list[_Op]) -> None:
        try:
            await self._apply_and_answer(batch)
        finally:
            # Cancelled mid-transaction (rolled back, nothing applied) or a bug:
            # no caller of this batch is left waiting either way.
            self._fail(batch, WriterClosed("the reaction writer stopped before this batch committed"))

    async def _apply_and_answer(self, batch: list[_Op]) -> None:
        try:
            outcomes, rows = await self._commit_with_retries(batch)
        except Exception as err:  # every caller gets an answer, whatever broke
            cancelled_meanwhile(err)
            if isinstance(err, (*UNREACHABLE, CommitUnknown)):
                log.warning("reaction batch of %d failed: %r", len(batch), err)
            else:
                log.exception("reaction batch of %d failed", len(batch))
            failure = WriteError("the reaction could not be stored; retry", "unavailable", retry_after=1.0)
            failure.__cause__ = err
            self._fail(batch, failure)
            return
        self.batches += 1
        if rows and self._on_commit is not None:
            self._on_commit(rows)
        for op, outcome in zip(batch, outcomes, strict=True):
            if op.future.done():
                continue
            if isinstance(outcome, WriteError):
                op.future.set_exception(outcome)
            else:
                op.future.set_result(outcome)

    async def _commit_with_retries(
            self, batch: list[_Op]) -> tuple[list[ReactionResult | WriteError], list[outbox.Row]]:
        for attempt in range(self._retries):
            try:
                return await self._commit_once(batch)
            except _BATCH_RETRYABLE as err:
                if attempt == self._retries - 1:
                    raise
                log.info("reaction batch retried after %s", type(err).__name__)
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        raise AssertionError("unreachable")

    async def _commit_once(self, batch: list[_Op]) -> tuple[list[ReactionResult | WriteError], list[outbox.Row]]:
        """One transaction. A failure before COMMIT rolled everything back (the caller may run the
        batch again); a connection lost during COMMIT leaves it unknown whether it committed, so it
        is never rerun (a toggle within the batch would apply twice, and its events be announced
        twice): the callers are answered `unavailable` and retry, which reactions make safe."""
        async with self._pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                outcomes = await _apply_batch(conn, batch)
                rows = await outbox.write(conn, self._announced(batch, outcomes))
            except BaseException:
                with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except (*UNREACHABLE, asyncpg.PostgresError) as err:
                raise CommitUnknown("the connection was lost during COMMIT") from err
            return outcomes, rows

    def _announced(self, batch: list[_Op], outcomes: list[ReactionResult | WriteError]) -> list[outbox.Announced]:
        if self._events is None:
            return []
        applied = [(op.key[0], op.add, outcome) for op, outcome in zip(batch, outcomes, strict=True)
                   if isinstance(outcome, ReactionResult) and outcome.applied]
        return list(self._events(applied)) if applied else []

    @staticmethod
    def _fail(ops: list[_Op], error: WriteError) -> None:
        for op in ops:
            if not op.future.done():
                op.future.set_exception(error)
                # A caller that was itself cancelled never retrieves it; do not log it as lost.
                op.future.exception()


async def _apply_batch(conn: asyncpg.Connection, batch: list[_Op]) -> list[ReactionResult | WriteError]:
    targets = await _lock(conn, batch)
    missing = set(await conn.fetchval(_MISSING_USERS, list({op.key[0] for op in batch})))
    errors: dict[int, WriteError] = {}
    for i, op in enumerate(batch):
        user, _, ttype, tid = op.key
        try:
            if user in missing:
                raise NotFound(f"user {user!r} does not exist")
            check_target(targets.get((ttype, tid)), ttype, tid, user)
        except WriteError as err:
            errors[i] = err
    applied: set[int] = set()  # ids of the _Op objects that took effect
    for ops in _rounds([op for i, op in enumerate(batch) if i not in errors]):
        adds = [op for op in ops if op.add]
        dels = [op for op in ops if not op.add]
        row = await conn.fetchrow(_APPLY, *_arrays(adds, dels))
        applied.update(id(adds[n - 1]) for n in row["added"] or ())
        applied.update(id(dels[n - 1]) for n in row["removed"] or ())
    counts = await _counts(conn, batch)
    return _outcomes(batch, errors, applied, targets, counts)


async def _lock(conn: asyncpg.Connection, batch: list[_Op]) -> dict[tuple[str, uuid.UUID], Target]:
    by_type: dict[str, set[uuid.UUID]] = {}
    for op in batch:
        by_type.setdefault(op.key[2], set()).add(op.key[3])
    targets: dict[tuple[str, uuid.UUID], Target] = {}
    for ttype in LOCK_ORDER:
        if ttype in by_type:
            found = await lock_targets(conn, ttype, sorted(by_type[ttype]))
            targets.update(((ttype, tid), t) for tid, t in found.items())
    return targets


def _rounds(ops: list[_Op]) -> list[list[_Op]]:
    """Split so each (user, type, target) appears once per round, rounds in arrival order.

    The k-th operation on a key goes to round k: a user toggling a reaction
    twice within one batch is applied in the order they asked.
    """
    seen: dict[Key, int] = {}
    rounds: list[list[_Op]] = []
    for op in ops:
        k = seen.get(op.key, 0)
        seen[op.key] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(op)
    return rounds


def _arrays(adds: list[_Op], dels: list[_Op]) -> list[list[Any]]:
    return [
        [o.key[0] for o in adds], [o.key[1] for o in adds], [o.key[2] for o in adds], [o.key[3] for o in adds],
        [o.anonymous for o in adds],
        [o.key[0] for o in dels], [o.key[1] for o in dels], [o.key[2] for o in dels], [o.key[3] for o in dels],
    ]


async def _counts(conn: asyncpg.Connection, batch: list[_Op]) -> dict[tuple[str, uuid.UUID], int]:
    by_type: dict[str, set[uuid.UUID]] = {}
    for op in batch:
        by_type.setdefault(op.key[2], set()).add(op.key[3])
    counts: dict[tuple[str, uuid.UUID], int] = {}
    for ttype, ids in by_type.items():
        for row in await conn.fetch(COUNTS[ttype], list(ids)):
            counts[(ttype, row["id"])] = row["reaction_count"]
    return counts


def _outcomes(
    batch: list[_Op], errors: dict[int, WriteError], applied: set[int],
    targets: dict[tuple[str, uuid.UUID], Target], counts: dict[tuple[str, uuid.UUID], int],
) -> list[ReactionResult | WriteError]:
    out: list[ReactionResult | WriteError] = []
    for i, op in enumerate(batch):
        if i in errors:
            out.append(errors[i])
            continue
        _, rtype, ttype, tid = op.key
        out.append(ReactionResult(
            applied=id(op) in applied, target_type=ttype, target_id=tid, reaction_type=rtype,
            reaction_count=counts[(ttype, tid)], target_author_id=targets[(ttype, tid)].author,
            vybe_id=targets[(ttype, tid)].vybe_id,
        ))
    return out

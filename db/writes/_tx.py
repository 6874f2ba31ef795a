"""One transaction per operation: retries on serialization/deadlock, idempotency keys."""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import msgspec

from db.writes.errors import Conflict, Invalid, NotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import LiteralString

    from db.outbox import Announcement

T = TypeVar("T")

RETRIES = 5
# Errors after which the whole transaction may be run again: nothing of it committed.
RETRYABLE: tuple[type[Exception], ...] = (
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)

_CLAIM: LiteralString = """
INSERT INTO idempotency_keys AS k (user_id, request_id, operation, result)
VALUES ($1, $2, $3, 'null'::jsonb)
ON CONFLICT (user_id, request_id) DO UPDATE
   SET operation = EXCLUDED.operation, result = EXCLUDED.result, created_at = now()
 WHERE k.created_at < now() - interval '24 hours'
RETURNING true
"""
_EXISTING: LiteralString = "SELECT operation, result FROM idempotency_keys WHERE user_id = $1 AND request_id = $2"
_STORE: LiteralString = "UPDATE idempotency_keys SET result = $3 WHERE user_id = $1 AND request_id = $2"


async def in_transaction(pool: asyncpg.Pool, body: Callable[[asyncpg.Connection], Awaitable[T]],
                         announce: Announcement | None = None) -> T:
    """Run ``body`` in one transaction, again (with jitter) after a deadlock or serialization failure.

    With ``announce``, its events are written to the outbox last, in the same
    transaction (``announce.rows`` holds them after COMMIT).
    """
    for attempt in range(RETRIES):
        try:
            async with pool.acquire() as conn, conn.transaction():
                result = await body(conn)
                if announce is not None:
                    await announce.write(conn, result)
                return result
        except RETRYABLE:
            if attempt == RETRIES - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")


async def idempotent(
    pool: asyncpg.Pool,
    *,
    user_id: str,
    request_id: str | None,
    operation: str,
    result_type: type[T],
    body: Callable[[asyncpg.Connection], Awaitable[T]],
    announce: Announcement | None = None,
    exists: LiteralString | None = None,
) -> T:
    """``body`` in a transaction; with a request id, at most once per (user, request id) in 24 h.

    ``exists`` (SQL, ``$1`` the result's ``id``) says whether what the first run created is still
    there: a retry after it was deleted gets :class:`Conflict`, not a stale copy.

    The key row is inserted first in the same transaction: a concurrent retry
    blocks on it until the first commits (then returns its stored result) or
    rolls back (then runs itself). A refused write rolls back its key too.
    """
    if request_id is None:
        return await in_transaction(pool, body, announce)

    async def run(conn: asyncpg.Connection) -> T:
        try:
            claimed = await conn.fetchval(_CLAIM, user_id, request_id, operation)
        except asyncpg.ForeignKeyViolationError as err:
            raise NotFound(f"user {user_id!r} does not exist") from err
        if not claimed:
            row = await conn.fetchrow(_EXISTING, user_id, request_id)
            if row is None or row["operation"] != operation:
                raise Conflict(f"request id {request_id!r} was used for another operation")
            stored = msgspec.convert(row["result"], result_type)
            if exists is not None and not await conn.fetchval(exists, getattr(stored, "id", None)):
                raise Conflict(f"request id {request_id!r} created {getattr(stored, 'id', '?')}, deleted since")
            if isinstance(stored, msgspec.Struct) and "replayed" in stored.__struct_fields__:
                stored = msgspec.structs.replace(stored, replayed=True)
            return stored
        result = await body(conn)
        await conn.execute(_STORE, user_id, request_id, msgspec.to_builtins(result))
        return result

    return await in_transaction(pool, run, announce)


def check_violation(err: asyncpg.CheckViolationError) -> Invalid:
    """A CHECK the Python checks did not catch (limits passed above the schema's)."""
    if "char_length" in (err.constraint_name or "") or "content" in (err.constraint_name or ""):
        return Invalid(f"content violates {err.constraint_name}", "content_too_long")
    return Invalid(f"value violates {err.constraint_name}", "invalid_value")


def row_dict(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row.items())


def fk_missing(err: asyncpg.ForeignKeyViolationError) -> NotFound:
    """A referenced row (user, looproom, vybe) that does not exist, or vanished concurrently."""
    name = err.constraint_name or ""
    what = "user" if "user_id" in name or "reporter" in name else "referenced row"
    if "looproom" in name:
        what = "looproom"
    elif "shared_vybe" in name:
        what = "vybe"
    elif "parent" in name:
        what = "parent comment"
    return NotFound(f"{what} does not exist")

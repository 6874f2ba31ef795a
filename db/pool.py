"""The asyncpg pool every process shares: one place for codecs, sizing and the pooler mode.

``pooler="pgbouncer"`` (``VYBE_DATABASE_POOLER``) is for a DSN that points at PgBouncer (or
any pooler) in transaction mode, where each transaction may run on another server
connection: nothing is prepared by name (asyncpg's statement cache is off; each query is
parsed as the unnamed statement of its own round trip), and the session reset asyncpg
sends on release is skipped (it would land on some other client's server connection).
Session state is never relied on in either mode: the codecs below are client-side, and the
advisory locks are transaction-scoped (:func:`try_advisory_lock`). See docs/pgbouncer.md.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import asyncpg

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from common.settings import Settings

POOLERS: tuple[str, ...] = ("none", "pgbouncer")

UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect or acquire timed out
    asyncpg.PostgresConnectionError,  # 08xxx: the connection failed or was lost
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by a restart
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.InternalClientError,  # a connection left in a broken state by the failure above
    asyncpg.TooManyConnectionsError,  # 53300: a restarting server's slots are taken
    asyncpg.ReadOnlySQLTransactionError,  # 25006: a failover promoted nothing yet
)
"""What asyncpg raises while PostgreSQL is down or restarting: the caller answers
``unavailable`` (with ``retry_after``) and retries later; nothing was committed,
except when the connection broke during COMMIT itself, which idempotency keys
make safe to retry."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python objects (scores, audit details, idempotent results). The codecs
    # live in the client (only the types' OIDs are looked up), so they hold whichever server
    # connection a transaction pooler hands each transaction.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _no_session_reset(conn: asyncpg.Connection) -> None:
    """Behind a transaction pooler there is no session of ours to reset: asyncpg's default
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) would run on whichever
    server connection is free, costing a round trip per release. An open transaction is still
    rolled back by asyncpg before this is called."""


def _connection_options(pooler: str) -> dict[str, Any]:
    if pooler not in POOLERS:
        raise ValueError(f"pooler must be one of {', '.join(POOLERS)}; got {pooler!r}")
    # Off, asyncpg prepares each query as the unnamed statement in the same round trip as its
    # execution: no "prepared statement __asyncpg_stmt_N__ does not exist / already exists".
    return {"statement_cache_size": 0} if pooler == "pgbouncer" else {}


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      command_timeout: float | None = 15.0, pooler: str = "none") -> asyncpg.Pool:
    """A pool with our codecs; ``dsn`` may be any libpq URL, Unix sockets included.
    ``pooler`` is ``settings.database_pooler``: ``pgbouncer`` when ``dsn`` is a transaction pooler."""
    options = _connection_options(pooler)
    if pooler == "pgbouncer":
        options["reset"] = _no_session_reset
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        max_inactive_connection_lifetime=300,
        # Fail fast while PostgreSQL is down or stalls (a network black hole, a frozen
        # disk): the caller answers `unavailable` instead of hanging.
        timeout=5,
        command_timeout=command_timeout,
        **options,
    )


async def connect(dsn: str, *, pooler: str = "none", timeout: float = 10.0) -> asyncpg.Connection:
    """One connection (``vybe migrate``, tools), prepared like the pool's for ``pooler``."""
    conn = await asyncpg.connect(dsn, timeout=timeout, **_connection_options(pooler))
    try:
        await _init_connection(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def pool_from_settings(settings: Settings) -> asyncpg.Pool:
    if settings.database_url is None:
        raise RuntimeError("VYBE_DATABASE_URL is not set (vybe dev sets it for embedded PostgreSQL)")
    return await create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
                             pooler=settings.database_pooler)


@contextlib.asynccontextmanager
async def try_advisory_lock(pool: asyncpg.Pool, key: int) -> AsyncIterator[asyncpg.Connection | None]:
    """One holder at a time across processes: a connection in a transaction that holds advisory
    lock ``key``, or None when another transaction holds it (nothing waits).

    The lock is transaction-scoped (``pg_try_advisory_xact_lock``): COMMIT or ROLLBACK releases
    it on the server connection that took it, so it is correct through a transaction pooler as
    well as without one. (A session lock taken through PgBouncer stays with whichever server
    connection ran it; the unlock may run on another and release nothing.) Work done on the
    yielded connection commits with the release; keep the block short, it holds a server
    connection."""
    async with pool.acquire() as conn, conn.transaction():
        held = await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", key)
        yield conn if held else None

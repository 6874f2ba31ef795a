"""The asyncpg pool every process shares: one place for codecs and sizing."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from common.settings import Settings

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
    # jsonb in and out as Python objects (scores, audit details, idempotent results).
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
                      command_timeout: float | None = 15.0) -> asyncpg.Pool:
    """A pool with our codecs; ``dsn`` may be any libpq URL, Unix sockets included."""
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        # Statements are prepared per connection; keep the cache but let
        # PgBouncer-style poolers work by naming nothing globally.
        max_inactive_connection_lifetime=300,
        # Fail fast while PostgreSQL is down or stalls (a network black hole, a frozen
        # disk): the caller answers `unavailable` instead of hanging.
        timeout=5,
        command_timeout=command_timeout,
    )


async def pool_from_settings(settings: Settings) -> asyncpg.Pool:
    if settings.database_url is None:
        raise RuntimeError("VYBE_DATABASE_URL is not set (vybe dev sets it for embedded PostgreSQL)")
    return await create_pool(settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max)

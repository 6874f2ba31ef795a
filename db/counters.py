"""Recompute every denormalized counter from its rows; report (and repair) drift.

The 0002 triggers keep counters exact; this is the proof and the safety net
(``vybe db check-counters [--repair]``). Each counter has one SQL that returns
the rows whose stored value differs from the count of the rows it summarizes
(all rows: hidden or removed content still counts, it is not deleted).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, LiteralString

import asyncpg
import msgspec

from db.pool import create_pool

if TYPE_CHECKING:
    from common.settings import Settings


class Drift(msgspec.Struct, frozen=True, kw_only=True):
    """``table.column`` of row ``id`` holds ``stored`` but its rows count ``actual``."""

    table: str
    column: str
    id: str
    stored: int
    actual: int


class Counter(msgspec.Struct, frozen=True):
    table: LiteralString
    column: LiteralString
    key: LiteralString  # the table's id column
    actual: LiteralString  # SELECT key, n: the true count per key (keys absent count 0)


_POSITIVE: LiteralString = """
SELECT author AS key, count(*) AS n FROM (
    SELECT v.user_id AS author FROM reactions r
      JOIN shared_vybes v ON r.reactable_type = 'SHARED_VYBE' AND v.id = r.reactable_id
    UNION ALL
    SELECT c.user_id FROM reactions r JOIN comments c ON r.reactable_type = 'COMMENT' AND c.id = r.reactable_id
    UNION ALL
    SELECT l.creator_id FROM reactions r JOIN looprooms l ON r.reactable_type = 'LOOPROOM' AND l.id = r.reactable_id
) a GROUP BY author
"""

COUNTERS: tuple[Counter, ...] = (
    Counter("shared_vybes", "reaction_count", "id",
            "SELECT reactable_id AS key, count(*) AS n FROM reactions WHERE reactable_type = 'SHARED_VYBE' GROUP BY 1"),
    Counter("shared_vybes", "comment_count", "id",
            "SELECT shared_vybe_id AS key, count(*) AS n FROM comments GROUP BY 1"),
    Counter("shared_vybes", "share_count", "id",
            "SELECT shared_vybe_id AS key, count(*) AS n FROM shares GROUP BY 1"),
    Counter("shared_vybes", "report_count", "id",
            "SELECT reported_id AS key, count(*) AS n FROM reports WHERE reported_type = 'shared_vybe' GROUP BY 1"),
    Counter("comments", "reaction_count", "id",
            "SELECT reactable_id AS key, count(*) AS n FROM reactions WHERE reactable_type = 'COMMENT' GROUP BY 1"),
    Counter("comments", "report_count", "id",
            "SELECT reported_id AS key, count(*) AS n FROM reports WHERE reported_type = 'comment' GROUP BY 1"),
    Counter("looprooms", "reaction_count", "id",
            "SELECT reactable_id AS key, count(*) AS n FROM reactions WHERE reactable_type = 'LOOPROOM' GROUP BY 1"),
    Counter("user_profiles", "vibes_shared", "user_id",
            "SELECT user_id AS key, count(*) AS n FROM shared_vybes GROUP BY 1"),
    Counter("user_profiles", "positive_reactions", "user_id", _POSITIVE),
    Counter("users", "report_count", "id",
            "SELECT reported_id AS key, count(*) AS n FROM reports WHERE reported_type = 'user' GROUP BY 1"),
)


def _drift_sql(c: Counter) -> LiteralString:
    # Keys compared as text: reports name their targets by text id.
    return (
        "SELECT t." + c.key + "::text AS id, t." + c.column + " AS stored, coalesce(a.n, 0)::int AS actual"
        " FROM " + c.table + " t LEFT JOIN (" + c.actual + ") a ON a.key::text = t." + c.key + "::text"
        " WHERE t." + c.column + " IS DISTINCT FROM coalesce(a.n, 0)"
        " ORDER BY 1"
    )


def _repair_sql(c: Counter) -> LiteralString:
    return (
        "UPDATE " + c.table + " t SET " + c.column + " = d.actual FROM (" + _drift_sql(c) + ") d"
        " WHERE t." + c.key + "::text = d.id"
    )


async def _check(conn: asyncpg.Connection) -> list[Drift]:
    drift: list[Drift] = []
    for c in COUNTERS:
        for row in await conn.fetch(_drift_sql(c)):
            drift.append(Drift(table=c.table, column=c.column, id=row["id"], stored=row["stored"],
                               actual=row["actual"]))
    return drift


async def check_counters(conn_or_pool: asyncpg.Connection | asyncpg.Pool) -> list[Drift]:
    """Every counter that differs from its rows, read in one snapshot (empty: no drift)."""
    if isinstance(conn_or_pool, asyncpg.Pool):
        async with conn_or_pool.acquire() as conn:
            return await check_counters(conn)
    conn = conn_or_pool
    if conn.is_in_transaction():
        return await _check(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _check(conn)


# Writers wait while the repair runs: counts and fixes then see the same rows.
_LOCK_SOURCES: LiteralString = (
    "LOCK TABLE reactions, comments, shares, reports, shared_vybes, looprooms IN SHARE ROW EXCLUSIVE MODE"
)


async def repair_counters(conn: asyncpg.Connection) -> list[Drift]:
    """Fix all drift in one transaction; return what was fixed."""
    async with conn.transaction():
        await conn.execute(_LOCK_SOURCES)
        drift = await _check(conn)
        if drift:
            for c in COUNTERS:
                await conn.execute(_repair_sql(c))
        return drift


async def check_counters_command(settings: Settings, repair: bool) -> int:
    """``vybe db check-counters``: one JSON line per drift, then a summary; 1 if drift is left."""
    if settings.database_url is None:
        print("VYBE_DATABASE_URL is not set")
        return 2
    pool = await create_pool(settings.database_url, min_size=1, max_size=1, command_timeout=None,
                             pooler=settings.database_pooler)
    try:
        async with pool.acquire() as conn:
            drift = await repair_counters(conn) if repair else await check_counters(conn)
    finally:
        await pool.close()
    for d in drift:
        print(json.dumps(msgspec.to_builtins(d), sort_keys=True))
    if not drift:
        print("no drift")
        return 0
    if repair:
        print(f"repaired {len(drift)} drifted counter(s)")
        return 0
    print(f"{len(drift)} drifted counter(s); run with --repair to fix")
    return 1

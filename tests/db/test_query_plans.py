"""Moderation queries reach vybes and comments by primary key, never by scanning the table.

The moderation functions run for real on one connection, inside a transaction that
holds 50,000 vybes and 50,000 comments and is rolled back at the end; every statement
they send is captured and EXPLAINed with its own parameters.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from db import moderation as mdb

if TYPE_CHECKING:
    import uuid
    from collections.abc import AsyncIterator, Iterator

    import asyncpg

pytestmark = pytest.mark.anyio

ROWS = 50_000
BIG_TABLES = {"shared_vybes", "comments"}

_FILL = f"""
INSERT INTO users (id) SELECT 'u' || g FROM generate_series(1, 1000) g;
INSERT INTO users (id, role) VALUES ('mod1', 'MODERATOR');
INSERT INTO shared_vybes (user_id, content, moderation_state, created_at)
SELECT 'u' || (g % 1000 + 1), repeat('a calm morning walk by the river ', 6), 'approved',
       now() - g * interval '1 minute'
  FROM generate_series(1, {ROWS}) g;
INSERT INTO comments (user_id, shared_vybe_id, content, moderation_state, created_at)
SELECT user_id, id, 'so glad you shared this', 'approved', created_at FROM shared_vybes;
-- A realistic queue: a few hundred flagged vybes and comments, some reported users.
INSERT INTO moderation_cases (target_type, target_id, reasons, scores, model_flagged, opened_at)
SELECT 'shared_vybe', id::text, '{{"toxicity>=0.80 (0.91)"}}', '{{"toxicity": 0.91}}', true, created_at
  FROM shared_vybes ORDER BY created_at LIMIT 300;
INSERT INTO moderation_cases (target_type, target_id, reasons, scores, model_flagged, opened_at)
SELECT 'comment', id::text, '{{"insult>=0.60 (0.72)"}}', '{{"insult": 0.72}}', true, created_at
  FROM comments ORDER BY created_at DESC LIMIT 300;
INSERT INTO moderation_cases (target_type, target_id, reasons)
SELECT 'user', id, '{{"reports>=3 (3)"}}' FROM users WHERE id LIKE 'u%' LIMIT 50;
INSERT INTO reports (reporter_id, reported_type, reported_id, type)
SELECT 'u' || g, c.target_type, c.target_id, 'HARASSMENT'
  FROM moderation_cases c, generate_series(1, 3) g;
ANALYZE users, shared_vybes, comments, moderation_cases, reports;
"""


class _OneConnection:
    """A pool stand-in that lends the test's connection: the functions' own transactions become
    savepoints inside the test's, so the rollback takes everything away."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self._conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield plan["Node Type"], plan.get("Relation Name", "")
    for child in plan.get("Plans", ()):
        yield from _scans(child)


async def _targets(conn: asyncpg.Connection) -> tuple[list[uuid.UUID], uuid.UUID, uuid.UUID]:
    """(The oldest case of each kind, the newest vybe, the oldest comment), chosen before logging starts."""
    cases = await conn.fetch(
        "SELECT DISTINCT ON (target_type) id FROM moderation_cases ORDER BY target_type, opened_at")
    vybe = await conn.fetchval("SELECT id FROM shared_vybes ORDER BY created_at DESC LIMIT 1")
    reply = await conn.fetchval("SELECT id FROM comments ORDER BY created_at LIMIT 1")
    await conn.execute("INSERT INTO reports (reporter_id, reported_type, reported_id, type) "
                       "VALUES ('u7', 'shared_vybe', $1, 'SPAM')", str(vybe))
    return [r["id"] for r in cases], vybe, reply


async def _moderate(conn: asyncpg.Connection, cases: list[uuid.UUID], vybe: uuid.UUID, reply: uuid.UUID) -> None:
    """What moderators and workers do: the queue, case views, claims, resolutions, scores, reports."""
    pool: Any = _OneConnection(conn)
    await mdb.open_queue(pool, limit=100)
    views = await mdb.case_views(conn, cases)
    assert {v.target_type for v in views} == {"shared_vybe", "comment", "user"}
    for view in views:
        claimed = await mdb.claim(pool, str(view.case_id), view.version, "mod1", 60.0)
        await mdb.resolve(pool, str(view.case_id), claimed.case.version,
                          "dismiss" if view.target_type == "user" else "hide", "checked", "mod1")
    for item in await mdb.fetch_items(conn, [vybe], [reply]):
        await mdb.record_score(conn, item, ("light", "1"), {"toxicity": 0.9}, "flag", ["toxicity>=0.80 (0.90)"])
    await mdb.on_user_report(conn, "shared_vybe", str(vybe), 3)
    await mdb.unscored(pool, 60.0)


async def test_moderation_queries_use_primary_keys_not_table_scans(pool: asyncpg.Pool) -> None:
    """No statement of the queue, case views, claims, resolutions, scoring or reports scans
    shared_vybes or comments: a text-cast key (``id::text = target_id``) would."""
    statements: list[tuple[str, tuple[Any, ...]]] = []
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(_FILL)
            targets = await _targets(conn)
            def log(query: Any) -> None:
                statements.append((query.query, tuple(query.args or ())))

            conn.add_query_logger(log)
            try:
                await _moderate(conn, *targets)
            finally:
                conn.remove_query_logger(log)
            seen = [(sql, args) for sql, args in statements
                    if sql.lstrip().split(None, 1)[0].upper() in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}]
            scans: dict[str, list[tuple[str, str]]] = {}
            for sql, args in seen:
                plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
                scans[sql] = list(_scans(plan[0]["Plan"]))
        finally:
            await tx.rollback()
    assert any("LEFT JOIN shared_vybes v" in sql for sql in scans), "the case view was not exercised"
    assert len(scans) >= 15, list(scans)
    bad = {sql: [s for s in nodes if s[0] == "Seq Scan" and s[1] in BIG_TABLES] for sql, nodes in scans.items()}
    assert not {sql: s for sql, s in bad.items() if s}

"""Helpers shared by the write-path tests (no tests here).

Counter checks are written out in SQL here, independently of db.counters, so
that a bug there cannot hide a bug in the triggers.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from db.writes import upsert_user

if TYPE_CHECKING:
    import asyncpg

TABLES = ("users", "user_profiles", "looprooms", "shared_vybes", "comments", "shares", "reactions", "reports",
          "idempotency_keys")

EXACT_SQL = """
SELECT 'vybe.reaction_count' AS what, count(*) FROM shared_vybes v
 WHERE v.reaction_count <> (SELECT count(*) FROM reactions r
                             WHERE r.reactable_type = 'SHARED_VYBE' AND r.reactable_id = v.id)
UNION ALL SELECT 'vybe.comment_count', count(*) FROM shared_vybes v
 WHERE v.comment_count <> (SELECT count(*) FROM comments c WHERE c.shared_vybe_id = v.id)
UNION ALL SELECT 'vybe.share_count', count(*) FROM shared_vybes v
 WHERE v.share_count <> (SELECT count(*) FROM shares s WHERE s.shared_vybe_id = v.id)
UNION ALL SELECT 'vybe.report_count', count(*) FROM shared_vybes v
 WHERE v.report_count <> (SELECT count(*) FROM reports p
                           WHERE p.reported_type = 'shared_vybe' AND p.reported_id = v.id::text)
UNION ALL SELECT 'comment.reaction_count', count(*) FROM comments c
 WHERE c.reaction_count <> (SELECT count(*) FROM reactions r
                             WHERE r.reactable_type = 'COMMENT' AND r.reactable_id = c.id)
UNION ALL SELECT 'comment.report_count', count(*) FROM comments c
 WHERE c.report_count <> (SELECT count(*) FROM reports p
                           WHERE p.reported_type = 'comment' AND p.reported_id = c.id::text)
UNION ALL SELECT 'looproom.reaction_count', count(*) FROM looprooms l
 WHERE l.reaction_count <> (SELECT count(*) FROM reactions r
                             WHERE r.reactable_type = 'LOOPROOM' AND r.reactable_id = l.id)
UNION ALL SELECT 'profile.vibes_shared', count(*) FROM user_profiles p
 WHERE p.vibes_shared <> (SELECT count(*) FROM shared_vybes v WHERE v.user_id = p.user_id)
UNION ALL SELECT 'profile.positive_reactions', count(*) FROM user_profiles p
 WHERE p.positive_reactions <> (
       (SELECT count(*) FROM reactions r
          JOIN shared_vybes v ON r.reactable_type = 'SHARED_VYBE' AND v.id = r.reactable_id
         WHERE v.user_id = p.user_id)
     + (SELECT count(*) FROM reactions r JOIN comments c ON r.reactable_type = 'COMMENT' AND c.id = r.reactable_id
         WHERE c.user_id = p.user_id)
     + (SELECT count(*) FROM reactions r JOIN looprooms l ON r.reactable_type = 'LOOPROOM' AND l.id = r.reactable_id
         WHERE l.creator_id = p.user_id))
UNION ALL SELECT 'user.report_count', count(*) FROM users u
 WHERE u.report_count <> (SELECT count(*) FROM reports p WHERE p.reported_type = 'user' AND p.reported_id = u.id)
UNION ALL SELECT 'orphan reactions', count(*) FROM reactions r
 WHERE NOT EXISTS (SELECT 1 FROM shared_vybes v WHERE r.reactable_type = 'SHARED_VYBE' AND v.id = r.reactable_id)
   AND NOT EXISTS (SELECT 1 FROM comments c WHERE r.reactable_type = 'COMMENT' AND c.id = r.reactable_id)
   AND NOT EXISTS (SELECT 1 FROM looprooms l WHERE r.reactable_type = 'LOOPROOM' AND l.id = r.reactable_id)
"""


async def wrong_counters(pool: asyncpg.Pool) -> dict[str, int]:
    """Counters that differ from a count of their rows, by kind (empty: all exact)."""
    return {r["what"]: r["count"] for r in await pool.fetch(EXACT_SQL) if r["count"]}


async def snapshot(pool: asyncpg.Pool) -> dict[str, object]:
    """Row counts of every table and every counter value: equal snapshots, nothing was stored."""
    state: dict[str, object] = {}
    for table in TABLES:
        state[table] = await pool.fetchval(f"SELECT count(*) FROM {table}")  # fixed names: TABLES
    state["vybes"] = await pool.fetch(
        "SELECT id, reaction_count, comment_count, share_count, report_count FROM shared_vybes ORDER BY id")
    state["comments"] = await pool.fetch("SELECT id, reaction_count, report_count FROM comments ORDER BY id")
    state["profiles"] = await pool.fetch(
        "SELECT user_id, vibes_shared, positive_reactions FROM user_profiles ORDER BY user_id")
    state["looprooms"] = await pool.fetch("SELECT id, reaction_count FROM looprooms ORDER BY id")
    return state


async def users(pool: asyncpg.Pool, *ids: str) -> None:
    for uid in ids:
        await upsert_user(pool, uid, "MEMBER", f"name of {uid}")


async def looproom(pool: asyncpg.Pool, creator: str, slug: str = "room") -> object:
    return await pool.fetchval(
        "INSERT INTO looprooms (title, slug, creator_id, status) VALUES ('Room', $1, $2, 'PUBLISHED') RETURNING id",
        slug, creator)


async def set_state(pool: asyncpg.Pool, table: str, row_id: object, state: str) -> None:
    assert table in ("shared_vybes", "comments")
    await pool.execute(f"UPDATE {table} SET moderation_state = $2 WHERE id = $1", row_id, state)


async def wait_for_lock_waiter(pool: asyncpg.Pool, timeout: float = 5.0) -> int:
    """The pid of a backend of this database waiting on a lock (the blocked write)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        pid = await pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() LIMIT 1")
        if pid is not None:
            return int(pid)
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("no write blocked on a lock")
        await asyncio.sleep(0.01)

"""Counters: exact under concurrency, drift detected and repaired, the CLI's exit codes."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from db.counters import check_counters, check_counters_command, repair_counters
from db.writes import (
    ReactionWriter,
    WriteError,
    comment,
    delete_comment,
    delete_vybe,
    post_vybe,
    react,
    report,
    share,
    unreact,
)
from test_writes_support import looproom, users, wrong_counters

if TYPE_CHECKING:
    import asyncpg

    from common.settings import Settings

pytestmark = pytest.mark.anyio
TYPES = ["HEART", "CLAP", "FIRE", "PEACE"]


async def _small_world(pool: asyncpg.Pool) -> tuple[object, object]:
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    c = await comment(pool, "bob", vybe_id=v.id, content="y")
    await react(pool, "bob", target_type="SHARED_VYBE", target_id=v.id, reaction_type="HEART")
    await report(pool, "bob", target_type="comment", target_id=c.id, report_type="SPAM")
    return v.id, c.id


async def test_drift_from_raw_sql_is_detected_and_repaired(pool: asyncpg.Pool) -> None:
    """UPDATE ... SET reaction_count = 99 and friends show up as drift; repair restores the true counts."""
    vid, cid = await _small_world(pool)
    assert await check_counters(pool) == []
    await pool.execute("UPDATE shared_vybes SET reaction_count = 99, share_count = 3 WHERE id = $1", vid)
    await pool.execute("UPDATE comments SET report_count = 0 WHERE id = $1", cid)
    await pool.execute("UPDATE user_profiles SET positive_reactions = 7, vibes_shared = 0 WHERE user_id = 'ann'")
    drift = {(d.table, d.column, d.stored, d.actual) for d in await check_counters(pool)}
    assert drift == {
        ("shared_vybes", "reaction_count", 99, 1), ("shared_vybes", "share_count", 3, 0),
        ("comments", "report_count", 0, 1), ("user_profiles", "positive_reactions", 7, 1),
        ("user_profiles", "vibes_shared", 0, 1),
    }
    async with pool.acquire() as conn:
        fixed = await repair_counters(conn)
    assert len(fixed) == 5
    assert await check_counters(pool) == []
    assert await wrong_counters(pool) == {}


async def test_check_counters_command_prints_and_exits(pool: asyncpg.Pool, settings: Settings,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 0 and "no drift" when clean; 1 with one JSON line per drift; --repair fixes it and exits 0."""
    vid, _ = await _small_world(pool)
    assert await check_counters_command(settings, repair=False) == 0
    assert "no drift" in capsys.readouterr().out
    await pool.execute("UPDATE shared_vybes SET reaction_count = 99 WHERE id = $1", vid)
    assert await check_counters_command(settings, repair=False) == 1
    out = capsys.readouterr().out
    assert f'"id": "{vid}"' in out and '"stored": 99' in out and '"actual": 1' in out
    assert await check_counters_command(settings, repair=True) == 0
    assert "repaired 1" in capsys.readouterr().out
    assert await pool.fetchval("SELECT reaction_count FROM shared_vybes WHERE id = $1", vid) == 1
    assert await check_counters_command(settings, repair=False) == 0


async def test_cli_exit_codes(pool: asyncpg.Pool, database_url: str) -> None:
    """`vybe db check-counters` exits 1 on drift, `--repair` exits 0, then a check exits 0."""
    vid, _ = await _small_world(pool)
    await pool.execute("UPDATE shared_vybes SET comment_count = 42 WHERE id = $1", vid)
    env = {**os.environ, "VYBE_DATABASE_URL": database_url}
    cmd = [sys.executable, "-m", "cli", "db", "check-counters"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True, timeout=60, check=False)

    found, repaired, clean = await asyncio.to_thread(lambda: (run(), run("--repair"), run()))
    assert (found.returncode, repaired.returncode, clean.returncode) == (1, 0, 0), (found, repaired, clean)
    assert "comment_count" in found.stdout and "no drift" in clean.stdout


async def test_hundreds_of_concurrent_users_keep_every_counter_exact(pool: asyncpg.Pool) -> None:
    """300 users doing random react/unreact/comment/report/share/delete on hot targets: every counter exact."""
    n = 300
    await users(pool, "ann", "bob", *(f"u{i}" for i in range(n)))
    room = await looproom(pool, "bob")
    vybes = [(await post_vybe(pool, "ann" if i % 2 else "bob", content=f"hot {i}")).id for i in range(3)]
    seed_comments = [(await comment(pool, "bob", vybe_id=v, content="seed")).id for v in vybes]
    rng = random.Random(7)
    errors: list[str] = []

    async def user(i: int, writer: ReactionWriter) -> None:
        uid = f"u{i}"
        mine: list[object] = []
        my_vybes: list[object] = []
        for _ in range(8):
            kind = rng.choice(["react", "react", "unreact", "react1", "comment", "report", "share", "delete", "post"])
            target = rng.choice([("SHARED_VYBE", rng.choice(vybes)), ("COMMENT", rng.choice(seed_comments)),
                                 ("LOOPROOM", room)] + [("COMMENT", c) for c in mine[-1:]])
            try:
                if kind in ("react", "unreact"):
                    op = writer.react if kind == "react" else writer.unreact
                    await op(uid, target_type=target[0], target_id=target[1], reaction_type=rng.choice(TYPES))
                elif kind == "react1":  # the single-transaction path, concurrently with the writer
                    await (react if rng.random() < 0.6 else unreact)(
                        pool, uid, target_type=target[0], target_id=target[1], reaction_type=rng.choice(TYPES))
                elif kind == "comment":
                    parent = rng.choice([None, *mine[-1:]])
                    on = rng.choice(vybes) if parent is None else None
                    if parent is not None:
                        on = await pool.fetchval("SELECT shared_vybe_id FROM comments WHERE id = $1", parent)
                    if on is not None:
                        mine.append((await comment(pool, uid, vybe_id=on, content="c", parent_id=parent)).id)
                elif kind == "report":
                    t = rng.choice([("shared_vybe", rng.choice(vybes)), ("comment", rng.choice(seed_comments)),
                                    ("user", "ann")])
                    await report(pool, uid, target_type=t[0], target_id=t[1], report_type="SPAM")
                elif kind == "share":
                    await share(pool, uid, rng.choice(vybes + my_vybes))
                elif kind == "post":
                    v = (await post_vybe(pool, uid, content="mine")).id
                    my_vybes.append(v)
                    await writer.react("ann", target_type="SHARED_VYBE", target_id=v, reaction_type="HEART")
                    await comment(pool, "bob", vybe_id=v, content="on yours")
                elif mine and rng.random() < 0.5:
                    await delete_comment(pool, uid, mine.pop())
                elif my_vybes:
                    await delete_vybe(pool, uid, my_vybes.pop())
            except WriteError as err:  # e.g. a comment deleted with its parent meanwhile
                errors.append(err.code)

    async with ReactionWriter(pool, batch_ms=2) as writer:
        await asyncio.gather(*(user(i, writer) for i in range(n)))
    assert set(errors) <= {"not_found"}, errors
    assert await pool.fetchval("SELECT count(*) FROM reactions") > n
    assert await wrong_counters(pool) == {}
    assert await check_counters(pool) == []
    assert await pool.fetchval(
        "SELECT count(*) FROM shared_vybes WHERE reaction_count < 0 OR comment_count < 0 OR share_count < 0") == 0

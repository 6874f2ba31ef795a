"""Our own processes die at the worst moment: a gateway between COMMIT and publish, a
worker mid-batch; and user reports race the worker scoring the same vybes."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import TYPE_CHECKING

import asyncpg
import pytest

from checks import case_version_problems, counter_drift, feed_vs_rows, read_history, settle, unanswered
from load import call_with_retry
from scenario import wait_until

if TYPE_CHECKING:
    from conftest import Rig
    from load import Client
    from services import Proc

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

RELAY_WITHIN_S = 5.0
CRASH_EXIT = 137


async def _announced(rig: Rig, channel: str, vybe_id: str) -> int:
    return sum(1 for h in await read_history(rig.redis.url, rig.prefix, channel)
               if h.event == "vybe.created" and h.data.get("id") == vybe_id)


async def _has(rig: Rig, vybe_id: str) -> bool:
    return await _announced(rig, "feed", vybe_id) > 0


@pytest.mark.timeout(120)
async def test_gateway_killed_between_commit_and_publish_is_relayed(rig: Rig) -> None:
    """A gateway dies right after COMMIT (VYBE_TEST_CRASH_AFTER_COMMIT): another node's relay publishes the vybe."""
    crashing = await rig.add_gateway(VYBE_TEST_CRASH_AFTER_COMMIT="1")
    healthy = await rig.add_gateway()
    reader = await rig.client("reader", healthy)
    await reader.subscribe("feed")
    writer = await rig.client("writer", crashing, healthy)
    content = f"committed, never announced {secrets.token_hex(4)}"
    first = await writer.call("post_vybe", "crash-post", content=content)
    rc = await asyncio.to_thread(crashing.wait, 10.0)
    died = time.time()
    vybe_id = await rig.fetchval("SELECT id::text FROM shared_vybes WHERE content = $1", content)
    relay_s = await wait_until(lambda: _has(rig, vybe_id), RELAY_WITHIN_S) if vybe_id else None
    retry = await call_with_retry(writer, "post_vybe", "crash-post", content=content)
    deliveries = await settle([reader], rig.redis.url, rig.prefix, {"feed": None})
    print(json.dumps({"scenario": "gateway_crash_after_commit", "exit": rc, "first_answer": first.kind,
                      "relay_s": relay_s, "since_death_s": round(time.time() - died, 2)}))
    assert rc == CRASH_EXIT, f"the gateway did not exit {CRASH_EXIT} after COMMIT (exit {rc}, answer {first.kind}: " \
                             f"{first.result}); is the VYBE_TEST_CRASH_AFTER_COMMIT hook in?"
    assert vybe_id is not None, "the post was not committed before the crash"
    assert relay_s is not None, f"vybe {vybe_id} not in feed history {RELAY_WITHIN_S} s after its gateway died"
    assert retry.kind == "ack" and retry.result["id"] == vybe_id and retry.result.get("replayed"), retry
    assert await _announced(rig, "feed", vybe_id) == 1, "the vybe was announced more than once"
    assert all(d.ok for d in deliveries), deliveries


async def _post_many(rig: Rig, gw: Proc, n: int, writers: int, text: str) -> list[str]:
    """``n`` vybes posted over ``writers`` sockets at once; their ids."""
    clients = [await rig.client(f"poster{i}", gw) for i in range(writers)]

    async def post(c: Client, k: int) -> list[str]:
        return [(await c.ok("post_vybe", content=f"{text} {k}-{j}"))["id"] for j in range(n // writers)]

    return [i for ids in await asyncio.gather(*(post(c, k) for k, c in enumerate(clients))) for i in ids]


async def _scored(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(DISTINCT target_id) FROM moderation_scores"))


async def _scored_at_least(conn: asyncpg.Connection, n: int) -> bool:
    return await _scored(conn) >= n


@pytest.mark.timeout(120)
async def test_worker_sigkilled_mid_batch_every_post_scored(rig: Rig) -> None:
    """A worker SIGKILLed mid-stream: a second worker reclaims its pending jobs; every post gets one score."""
    gw = await rig.add_gateway()
    ids = await _post_many(rig, gw, 240, 6, "a calm morning walk")
    env = {"VYBE_WORKER_BATCH": "16", "VYBE_WORKER_CLAIM_IDLE_MS": "1000"}
    first = rig.add_worker(**env)
    conn = await asyncpg.connect(rig.dsn)
    try:
        started = await wait_until(lambda: _scored_at_least(conn, 1), 30, every=0.005)
        assert started is not None, f"the first worker scored nothing in 30 s:\n{first.tail()}"
        await asyncio.to_thread(first.kill)
        killed_at, killed = await _scored(conn), time.time()
        rig.add_worker(**env)
        done_s = await wait_until(lambda: _scored_at_least(conn, len(ids)), 45, every=0.2)
        final = await _scored(conn)
        dupes = await conn.fetchval("SELECT count(*) FROM (SELECT target_id FROM moderation_scores "
                                    "GROUP BY target_id, model_name, model_version HAVING count(*) > 1) d")
    finally:
        await conn.close()
    print(json.dumps({"scenario": "worker_sigkill_mid_batch", "posts": len(ids), "scored_at_kill": killed_at,
                      "all_scored_after_kill_s": done_s, "since_kill_s": round(time.time() - killed, 2)}))
    assert 0 < killed_at < len(ids), f"the kill should land mid-stream (scored {killed_at} of {len(ids)})"
    assert final == len(ids), f"only {final} of {len(ids)} posts scored 45 s after the worker died"
    assert dupes == 0


@pytest.mark.timeout(120)
async def test_reports_racing_scoring_never_deadlock(rig: Rig) -> None:
    """Three members report each of 16 toxic vybes while the worker scores them: all answered, no deadlock,
    every case change carries a higher version."""
    gw = await rig.add_gateway()
    ids = await _post_many(rig, gw, 16, 2, "you stupid idiot I will kill you")
    reporters = [await rig.client(f"member{i}", gw) for i in range(3)]
    # One vybe per transaction (more interleavings); a failed batch is retried after 2 s, not 30.
    rig.add_worker(VYBE_WORKER_BATCH="1", VYBE_WORKER_CLAIM_IDLE_MS="2000")
    conn = await asyncpg.connect(rig.dsn)
    try:
        assert await wait_until(lambda: _scored_at_least(conn, 1), 30, every=0.005) is not None

        async def report_all(k: int, c: Client) -> None:
            for vid in ids[k:] + ids[:k]:  # each member in another order: more interleavings
                await c.call("report", target_type="shared_vybe", target_id=vid, report_type="HARASSMENT")

        await asyncio.gather(*(report_all(5 * k, c) for k, c in enumerate(reporters)))
        scored_s = await wait_until(lambda: _scored_at_least(conn, len(ids)), 30, every=0.2)
        versions = {r["target_id"]: r["version"] for r in await conn.fetch(
            "SELECT target_id, version FROM moderation_cases WHERE target_type = 'shared_vybe'")}
    finally:
        await conn.close()
    outcomes = [o for c in reporters for o in c.outcomes]
    history = await read_history(rig.redis.url, rig.prefix, "mod:flagged")
    problems = case_version_problems(history, versions)
    # PostgreSQL logs every deadlock it breaks, also those the gateway then retried transparently.
    deadlocks = rig.logs().lower().count("deadlock") + rig.pg.log.read_text(errors="replace").count("deadlock detected")
    print(json.dumps({"scenario": "reports_racing_scoring", "reports": len(outcomes), "deadlocks_logged": deadlocks,
                      "scored_s": scored_s, "cases": len(versions), "case_events": len(history)}))
    refused = [o for o in outcomes if o.kind != "ack"]
    assert not refused, f"{len(refused)} reports not acknowledged, e.g. {refused[:3]} (unanswered: " \
                        f"{len(unanswered(outcomes))})"
    assert deadlocks == 0, "deadlock detected (in the PostgreSQL, gateway or worker logs)"
    assert scored_s is not None, "not every vybe was scored"
    assert len(versions) == len(ids), f"{len(versions)} cases for {len(ids)} reported and flagged vybes"
    assert not problems, "case versions: " + "; ".join(problems[:5])
    assert not await counter_drift(rig.dsn)
    assert (await feed_vs_rows(rig.dsn, rig.redis.url, rig.prefix)).ok

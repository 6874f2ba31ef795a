"""The moderation worker through outages: PostgreSQL down for longer than a job's attempts, and content the
model cannot score while Redis and PostgreSQL restart between its rounds of attempts."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from checks import read_history
from common.bus import Keys
from common.redisconn import connect
from poison_worker import MARK
from scenario import wait_until

if TYPE_CHECKING:
    from conftest import Rig
    from load import Client

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

POISON_WORKER = Path(__file__).with_name("poison_worker.py")
# Two attempts, a second apart: an outage of seconds outlasts them (90 s with the defaults).
FEW_ATTEMPTS = {"VYBE_WORKER_CLAIM_IDLE_MS": "1000", "VYBE_WORKER_MAX_ATTEMPTS": "2"}
DOWN_S = 8.0
SCORED_WITHIN_S = 20.0  # after PostgreSQL is back: the consumer loop's backoff (at most 2 s), a claim and a margin


async def _count(rig: Rig, sql: str, *args: object) -> int:
    return int(await rig.fetchval(sql, *args))


async def _unscored(rig: Rig, but: str | None = None) -> int:
    return await _count(rig, """SELECT count(*) FROM shared_vybes v WHERE id::text IS DISTINCT FROM $1
                                   AND NOT EXISTS (SELECT 1 FROM moderation_scores s WHERE s.target_id = v.id)""", but)


async def _xlen(rig: Rig, stream: str) -> int:
    client = await connect(rig.redis.url)
    try:
        return int(await client.xlen(stream))
    finally:
        await client.aclose()


@pytest.mark.timeout(120)
async def test_postgres_down_through_every_attempt_dead_letters_nothing(rig: Rig) -> None:
    """PostgreSQL stopped for 8 s with 20 jobs in the worker's hands, longer than their two attempts: no job is
    dead-lettered for the outage, and every post is scored once within seconds of its return, not when the
    sweeper finds it a minute later (or, had the dead letter been recorded, ten minutes later)."""
    gw = await rig.add_gateway()
    worker = rig.add_worker(**FEW_ATTEMPTS)
    writer = await rig.client("writer", gw)
    await writer.ok("post_vybe", content="the worker is up")
    assert await wait_until(lambda: _unscored_is(rig, 0), 30) is not None, worker.tail()
    os.kill(worker.pid, signal.SIGSTOP)  # the jobs wait for it in the stream
    try:
        ids = [(await writer.ok("post_vybe", content=f"a quiet evening {k}"))["id"] for k in range(20)]
        assert await wait_until(lambda: _jobs_at_least(rig, 20), 10) is not None, "the jobs were not enqueued"
        await asyncio.to_thread(rig.pg.stop)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(rig.pg.start)
    scored_s = await wait_until(lambda: _unscored_is(rig, 0), SCORED_WITHIN_S, every=0.2)
    dead = await _xlen(rig, Keys(rig.prefix).dead_letter)
    twice = await _count(rig, "SELECT count(*) FROM (SELECT target_id FROM moderation_scores GROUP BY target_id "
                              "HAVING count(*) > 1) d")
    print(json.dumps({"scenario": "postgres_down_through_every_attempt", "posts": len(ids), "down_s": DOWN_S,
                      "scored_after_back_s": scored_s, "dead_letters": dead}))
    assert dead == 0, f"{dead} jobs dead-lettered for an outage:\n{worker.tail()}"
    assert scored_s is not None, f"{await _unscored(rig)} posts unscored {SCORED_WITHIN_S} s after PostgreSQL " \
                                 f"was back:\n{worker.tail()}"
    assert twice == 0


async def _unscored_is(rig: Rig, n: int, but: str | None = None) -> bool:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        return await _unscored(rig, but) == n
    return False


async def _jobs_at_least(rig: Rig, n: int) -> bool:
    return await _xlen(rig, Keys(rig.prefix).jobs) >= n


async def _failures(rig: Rig, vybe_id: str) -> int:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        return await _count(rig, "SELECT coalesce(max(failures), 0) FROM moderation_failures WHERE item_id = $1::uuid",
                            vybe_id)
    return 0


async def _case(rig: Rig, vybe_id: str) -> bool:
    with contextlib.suppress(OSError, asyncpg.PostgresError):
        return await _count(rig, "SELECT count(*) FROM moderation_cases WHERE target_id = $1", vybe_id) > 0
    return False


async def _keep_posting(writer: Client, stop: asyncio.Event) -> None:
    """Other posts, scored as usual (the model is not down: it fails on one text), outages or not."""
    k = 0
    while not stop.is_set():
        await writer.call("post_vybe", content=f"a walk by the river {k}")
        k += 1
        await asyncio.sleep(0.2)


@pytest.mark.timeout(150)
async def test_a_post_the_model_cannot_score_reaches_moderators_once_through_outages(rig: Rig) -> None:
    """A post the model fails on (``poison_worker``), other posts scored meanwhile, Redis restarted (2 s, its data
    kept) and PostgreSQL stopped (5 s) between its rounds of attempts (the second is due 4 s after the first, and
    needs PostgreSQL): after its second round it reaches moderators
    as one case with the reason ``unscored``, announced once on mod:flagged; it stays pending with no score; every
    other post is scored, once."""
    gw = await rig.add_gateway()
    worker = rig.add_worker(POISON_WORKER, VYBE_SWEEP_AFTER_S="1", **FEW_ATTEMPTS)
    writer = await rig.client("writer", gw)
    poison = (await writer.ok("post_vybe", content=f"{MARK} hello everyone"))["id"]
    stop = asyncio.Event()
    posting = asyncio.create_task(_keep_posting(writer, stop))
    try:
        first_s = await wait_until(lambda: _has_failures(rig, poison, 1), 30)
        assert first_s is not None, f"no first round of failures:\n{worker.tail()}"
        assert not await _case(rig, poison), "a case after one round"
        await asyncio.to_thread(rig.redis.restart, 2.0)
        await asyncio.to_thread(rig.pg.restart, 5.0)
        back = dt.datetime.now(dt.UTC)
        case_s = await wait_until(lambda: _case(rig, poison), 60)
    finally:
        stop.set()
        await posting
    others_s = await wait_until(lambda: _unscored_is(rig, 0, but=poison), 30, every=0.2)
    case = await rig.fetchval("SELECT row_to_json(c)::text FROM moderation_cases c WHERE target_id = $1", poison)
    state = await rig.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid", poison)
    scores = await _count(rig, "SELECT count(*) FROM moderation_scores WHERE target_id = $1::uuid", poison)
    posts = await _count(rig, "SELECT count(*) FROM shared_vybes")
    twice = await _count(rig, "SELECT count(*) FROM (SELECT target_id FROM moderation_scores GROUP BY target_id "
                              "HAVING count(*) > 1) d")
    announced = [h for h in await read_history(rig.redis.url, rig.prefix, "mod:flagged")
                 if h.data.get("target_id") == poison]
    print(json.dumps({"scenario": "unscored_through_outages", "posts": posts, "first_round_s": first_s,
                      "case_after_faults_s": case_s, "announcements": len(announced)}))
    assert case_s is not None, f"no case 60 s after the faults:\n{worker.tail()}"
    assert case is not None and json.loads(case)["reasons"] == ["unscored"], case
    opened = dt.datetime.fromisoformat(json.loads(case)["opened_at"])
    assert opened > back, f"the second round ({opened}) came before PostgreSQL was back ({back}): no fault between"
    assert [(h.event, h.data.get("reasons")) for h in announced] == [("report.flagged", ["unscored"])], announced
    assert state == "pending" and scores == 0
    assert others_s is not None, f"{await _unscored(rig, poison)} other posts unscored:\n{worker.tail()}"
    assert posts > 20 and twice == 0


async def _has_failures(rig: Rig, vybe_id: str, n: int) -> bool:
    return await _failures(rig, vybe_id) >= n

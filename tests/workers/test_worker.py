"""The moderation worker against real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import asyncpg
import msgspec
import pytest

from common.bus import Keys
from common.tasks import Heartbeat, alive_within
from db import moderation as mdb
from db import writes
from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers import consumer
from workers.consumer import GROUP, Worker

pytestmark = pytest.mark.anyio

FLAG_ALL = "toxicity=0:1"
NEVER = ",".join(f"{label}=1" for label in ("toxicity", "severe_toxicity", "obscene", "threat", "insult",
                                            "identity_attack", "sexual_explicit"))


def _worker(settings, pool, redis, mode: str = "flag", thresholds: str = FLAG_ALL, scorer=None, **over) -> Worker:
    s = msgspec.structs.replace(settings, worker_block_ms=10, **over)
    return Worker(s, pool, redis, scorer or load_scorer("light"), Policy.from_settings(mode, thresholds), "w-test")


async def _post(pool, redis, settings, content: str = "hello there", user: str = "poster", **kw):
    await writes.upsert_user(pool, user, "MEMBER")
    vybe = await writes.post_vybe(pool, user, content=content, **kw)
    await redis.xadd(Keys(settings.redis_prefix).jobs, {"kind": "vybe", "id": str(vybe.id)})
    return vybe


async def _events(redis, settings, channel: str) -> list[dict]:
    entries = await redis.xrange(Keys(settings.redis_prefix).stream(channel))
    return [msgspec.json.decode(f[b"m"].split(b"\n", 1)[1]) for _, f in entries]


async def test_flag_opens_case_files_system_report_and_notifies_moderators(settings, pool, redis) -> None:
    """A flagged vybe: score stored, state flagged, one system report, one case, report.flagged on mod:flagged."""
    w = _worker(settings, pool, redis)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings, "you are worthless", is_anonymous=True)
    assert await w.step() == 1
    row = await pool.fetchrow(
        "SELECT moderation_state::text AS s, report_count FROM shared_vybes WHERE id = $1", vybe.id)
    assert (row["s"], row["report_count"]) == ("flagged", 1)
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores") == 1
    assert await pool.fetchval("SELECT reporter_id FROM reports") == "system:moderation"
    [event] = await _events(redis, settings, "mod:flagged")
    assert event["event"] == "report.flagged"
    case = event["data"]
    assert case["text"] == "you are worthless" and case["author_id"] == "poster" and case["is_anonymous"]
    assert set(case["scores"]) >= {"toxicity", "threat", "insult"} and case["reasons"]
    assert await redis.xpending(Keys(settings.redis_prefix).jobs, GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []}
    assert await redis.xlen(Keys(settings.redis_prefix).jobs) == 0  # done: gone from the stream


async def test_a_later_hide_score_of_flagged_content_announces_nothing(settings, pool, redis,
                                                                     keyword_scorer) -> None:
    """A flag stands until a moderator decides: a newer model's score over the hide threshold leaves a flagged
    vybe flagged (still visible), so it announces no `vybe.hidden` and tells the author of no hiding (before, both
    went out while the vybe stayed in every feed)."""
    flagger = _worker(settings, pool, redis)
    await flagger.ensure_group()
    vybe = await _post(pool, redis, settings, "you are worthless")
    assert await flagger.step() == 1
    hider = _worker(settings, pool, redis, mode="hide", thresholds="threat=0.5:0.9",
                    scorer=keyword_scorer({"worthless": {"threat": 0.97}}))
    await redis.xadd(Keys(settings.redis_prefix).jobs, {"kind": "vybe", "id": str(vybe.id), "rescore": "1"})
    assert await hider.step() == 1
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores WHERE decision = 'hide'") == 1
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "flagged"
    assert [e["event"] for e in await _events(redis, settings, "feed")] == []
    assert [e["event"] for e in await _events(redis, settings, "user:poster")] == []


async def test_benign_is_approved_and_redelivery_is_idempotent(settings, pool, redis) -> None:
    """Under the thresholds an item is approved; scoring the same job twice stores one result."""
    w = _worker(settings, pool, redis, thresholds=NEVER)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings, "grateful for today's walk")
    await w.step()
    await redis.xadd(Keys(settings.redis_prefix).jobs, {"kind": "vybe", "id": str(vybe.id)})
    await w.step()
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "approved"
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores") == 1
    assert await pool.fetchval("SELECT count(*) FROM moderation_cases") == 0


async def test_shadow_mode_scores_without_acting(settings, pool, redis) -> None:
    """Shadow mode stores scores and a 'shadow' decision but flags nothing."""
    w = _worker(settings, pool, redis, mode="shadow")
    await w.ensure_group()
    await _post(pool, redis, settings, "you are worthless")
    await w.step()
    assert await pool.fetchval("SELECT decision FROM moderation_scores") == "shadow"
    assert await pool.fetchval("SELECT count(*) FROM moderation_cases") == 0
    assert await pool.fetchval("SELECT count(*) FROM reports") == 0


async def test_off_mode_scores_nothing(settings, pool, redis) -> None:
    """Mode off consumes jobs without scoring."""
    w = _worker(settings, pool, redis, mode="off")
    await w.ensure_group()
    await _post(pool, redis, settings, "anything")
    assert await w.step() == 1
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores") == 0


async def test_hide_mode_hides_and_announces(settings, pool, redis) -> None:
    """Over a hide threshold in hide mode: hidden at once, vybe.hidden on the feed, the author told."""
    w = _worker(settings, pool, redis, mode="hide", thresholds="toxicity=0:0")
    await w.ensure_group()
    vybe = await _post(pool, redis, settings, "vile stuff")
    await w.step()
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "hidden"
    assert [e["event"] for e in await _events(redis, settings, "feed")] == ["vybe.hidden"]
    [outcome] = await _events(redis, settings, "user:poster")
    assert outcome["event"] == "moderation.outcome" and outcome["data"]["target_id"] == str(vybe.id)


async def test_premoderation_publishes_after_scoring(settings, pool, redis) -> None:
    """With pre-moderation the worker, not the gateway, announces vybe.created, and only if not hidden."""
    w = _worker(settings, pool, redis, thresholds=NEVER, premoderation=True)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings, "a calm morning")
    assert await _events(redis, settings, "feed") == []
    await w.step()
    [created] = await _events(redis, settings, "feed")
    assert created["event"] == "vybe.created" and created["data"]["id"] == str(vybe.id)


async def test_comments_are_scored(settings, pool, redis) -> None:
    """Comments go through the same path as vybes."""
    w = _worker(settings, pool, redis)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings)
    c = await writes.comment(pool, "poster", vybe_id=vybe.id, content="nobody likes you")
    await redis.xadd(Keys(settings.redis_prefix).jobs, {"kind": "comment", "id": str(c.id)})
    await w.step()
    assert await pool.fetchval("SELECT moderation_state::text FROM comments") == "flagged"
    assert await pool.fetchval("SELECT target_type FROM moderation_cases WHERE target_id = $1", str(c.id)) == "comment"


class _Broken:
    """A scorer whose model fails on every batch (a real failure path, not a fake store)."""

    name, version, labels = "broken", "0", ("toxicity",)

    def score(self, texts):
        raise RuntimeError("model exploded")


async def test_failing_item_goes_to_dead_letter_after_k_attempts(settings, pool, redis) -> None:
    """A job that fails worker_max_attempts times lands on the dead-letter stream with its error."""
    w = _worker(settings, pool, redis, scorer=_Broken(), worker_claim_idle_ms=0, worker_max_attempts=3)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings)
    for _ in range(5):
        await w.step()
    keys = Keys(settings.redis_prefix)
    [(_, dead)] = await redis.xrange(keys.dead_letter)
    assert dead[b"id"].decode() == str(vybe.id) and b"model exploded" in dead[b"error"]
    assert (await redis.xpending(keys.jobs, GROUP))["pending"] == 0
    assert await redis.xlen(keys.jobs) == 0 and not await redis.hgetall(keys.jobs + ":errors")


async def test_attempts_that_failed_for_an_outage_do_not_count(settings, pool, redis, free_tcp_port) -> None:
    """PostgreSQL unreachable (the worker's pool points at a port where nothing listens: connections are refused,
    as from a database that is down) through more attempts than worker_max_attempts: the job is not dead-lettered
    but kept, marked as an outage's; once the database answers, it is scored and leaves nothing behind."""
    keys = Keys(settings.redis_prefix)
    nowhere = await asyncpg.create_pool(f"postgresql://postgres@127.0.0.1:{free_tcp_port}/postgres", min_size=0)
    down = _worker(settings, nowhere, redis, worker_claim_idle_ms=0, worker_max_attempts=2)
    await down.ensure_group()
    vybe = await _post(pool, redis, settings)
    try:
        for _ in range(5):  # each attempt raises (for the consumer loop's backoff)
            with pytest.raises(OSError):
                await down.step()
    finally:
        await nowhere.close()
    assert await redis.xlen(keys.dead_letter) == 0, "dead-lettered for an outage"
    [(entry, _)] = await redis.xrange(keys.jobs)
    assert b"ConnectionRefusedError" in await redis.hget(keys.jobs + consumer.OUTAGE, entry)
    back = _worker(settings, pool, redis, worker_claim_idle_ms=0, worker_max_attempts=2)
    await back.step()
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores WHERE target_id = $1", vybe.id) == 1
    assert await redis.xlen(keys.dead_letter) == 0 and await redis.xlen(keys.jobs) == 0
    assert not await redis.hgetall(keys.jobs + ":errors") and not await redis.hgetall(keys.jobs + consumer.OUTAGE)


class _Died(BaseException):
    """A worker's death mid-batch: nothing is recorded (as after a SIGKILL)."""


class _Dies:
    name, version, labels = "dies", "0", ("toxicity",)

    def score(self, texts):
        raise _Died


async def test_a_worker_dying_on_a_job_counts_even_after_an_outage(settings, pool, redis) -> None:
    """A job whose last attempt met an outage gets a fresh count, and the mark goes with the new delivery: deliveries
    that end in their worker's death count again, so a text that kills its worker is still dead-lettered."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, scorer=_Dies(), worker_claim_idle_ms=0, worker_max_attempts=2)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings)
    [[_, [(entry, _)]]] = await redis.xreadgroup(GROUP, "dying", {keys.jobs: ">"}, count=1)
    await redis.xclaim(keys.jobs, GROUP, "dying", min_idle_time=0, message_ids=[entry])  # delivered twice
    await redis.hset(keys.jobs + consumer.OUTAGE, entry, "ConnectionRefusedError()")  # the second met an outage
    with pytest.raises(_Died):
        await w.reclaim()  # out of attempts, but claimed afresh (and it dies on it)
    assert await redis.xlen(keys.dead_letter) == 0 and not await redis.hexists(keys.jobs + consumer.OUTAGE, entry)
    with pytest.raises(_Died):
        await w.reclaim()  # its second delivery of the fresh count
    assert await w.reclaim() == 0
    [(_, dead)] = await redis.xrange(keys.dead_letter)
    assert dead[b"id"].decode() == str(vybe.id) and dead[b"error"] == b"unknown"


async def test_a_claim_another_worker_won_leaves_its_mark(settings, pool, redis) -> None:
    """Worker A listed a job; worker B claimed it first, and its attempt met an outage: A's claim fails, and A leaves
    B's mark alone (deleting it would dead-letter the job for that outage at the end of its attempts)."""
    keys = Keys(settings.redis_prefix)
    a = _worker(settings, pool, redis, worker_claim_idle_ms=60_000, worker_max_attempts=2)
    await a.ensure_group()
    await redis.xadd(keys.jobs, {"kind": "vybe", "id": "contested"})
    [[_, [(entry, _)]]] = await redis.xreadgroup(GROUP, "b", {keys.jobs: ">"}, count=1)
    await redis.hset(keys.jobs + consumer.OUTAGE, entry, "ConnectionRefusedError()")
    assert await a._claim(entry.decode()) is None  # from A's listing, read before B's claim
    assert await redis.hexists(keys.jobs + consumer.OUTAGE, entry)
    assert await redis.xlen(keys.dead_letter) == 0


async def test_a_job_listed_as_spent_is_decided_by_its_count_now(settings, pool, redis) -> None:
    """The listing said the job was out of attempts, but another worker has since given it a fresh count: the
    worker that takes it reads the count again and attempts it instead of dead-lettering it."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, worker_claim_idle_ms=0, worker_max_attempts=2)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings)
    [[_, [(entry, _)]]] = await redis.xreadgroup(GROUP, "other", {keys.jobs: ">"}, count=1)
    await redis.xclaim(keys.jobs, GROUP, "other", min_idle_time=0, message_ids=[entry])  # twice: spent
    [listed] = await redis.xpending_range(keys.jobs, GROUP, min="-", max="+", count=1)
    assert listed["times_delivered"] == 2
    await redis.xclaim(keys.jobs, GROUP, "other", min_idle_time=0, message_ids=[entry], retrycount=1)  # fresh
    taken = await w._claim(entry.decode())
    assert taken is not None and taken[0] == entry.decode()
    assert await redis.xlen(keys.dead_letter) == 0
    await w._attempt([taken])
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores WHERE target_id = $1", vybe.id) == 1


async def test_after_an_hour_an_outage_no_longer_saves_a_job(settings, pool, redis) -> None:
    """A job enqueued more than OUTAGE_GIVES_UP_S ago is dead-lettered when out of attempts, outage or not (so that
    an error taken for an outage cannot keep a job for ever)."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, worker_claim_idle_ms=0, worker_max_attempts=1)
    await w.ensure_group()
    old = f"{int((time.time() - consumer.OUTAGE_GIVES_UP_S - 60) * 1000)}-0"
    await redis.xadd(keys.jobs, {"kind": "vybe", "id": "long-stuck"}, id=old)
    await redis.xreadgroup(GROUP, "gone", {keys.jobs: ">"}, count=1)
    await redis.hset(keys.jobs + consumer.OUTAGE, old, "TimeoutError()")
    assert await w.reclaim() == 0
    [(_, dead)] = await redis.xrange(keys.dead_letter)
    assert dead[b"id"] == b"long-stuck" and dead[b"error"] == b"TimeoutError()"


def test_only_an_unreachable_service_is_an_outage() -> None:
    """Refused, lost or timed-out connections and a failing-over Redis are outages; a value asyncpg could not send
    (its DataError is an InterfaceError, and a ValueError), a bad Redis command and a model's error are not."""
    from asyncpg.exceptions import _base as asyncpg_base
    from redis.exceptions import ClusterDownError, ResponseError

    outages = [ConnectionRefusedError(), TimeoutError(), asyncpg.CannotConnectNowError(), ClusterDownError("down"),
               asyncpg.InterfaceError("connection is closed")]
    failures = [asyncpg_base.DataError("invalid input for query argument $1"), ResponseError("ERR bad script"),
                consumer.ModelError("OSError: disk"), asyncpg.UniqueViolationError(), ValueError("bad")]
    assert [consumer._is_outage(e) for e in outages] == [True] * len(outages)
    assert [consumer._is_outage(e) for e in failures] == [False] * len(failures)


async def test_a_job_gone_from_the_stream_but_pending_is_finished(settings, pool, redis) -> None:
    """An entry deleted from the stream while still pending (Redis 7 drops it from the pending list when claimed,
    6.2 answers (None, None) and keeps it): reclaiming it leaves nothing pending, and attempts nothing."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, worker_claim_idle_ms=0, worker_max_attempts=2)
    await w.ensure_group()
    entry = await redis.xadd(keys.jobs, {"kind": "vybe", "id": "vanished"})
    await redis.xreadgroup(GROUP, "gone", {keys.jobs: ">"}, count=1)
    await redis.xdel(keys.jobs, entry)
    assert await w.reclaim() == 0
    assert (await redis.xpending(keys.jobs, GROUP))["pending"] == 0 and await redis.xlen(keys.dead_letter) == 0


class _BrokenFile:
    """A scorer whose model raises OSError (a model file gone unreadable): the model's failure, not an outage."""

    name, version, labels = "broken-file", "0", ("toxicity",)

    def score(self, texts):
        raise OSError(5, "Input/output error", "/models/minilm.onnx")


async def test_an_oserror_from_the_model_counts_as_the_items_failure(settings, pool, redis) -> None:
    """Only PostgreSQL and Redis being unreachable is an outage: a model raising OSError dead-letters its job after
    worker_max_attempts, with the error, as any failure of the model does."""
    w = _worker(settings, pool, redis, scorer=_BrokenFile(), worker_claim_idle_ms=0, worker_max_attempts=2)
    await w.ensure_group()
    await _post(pool, redis, settings)
    for _ in range(4):
        await w.step()
    [(_, dead)] = await redis.xrange(Keys(settings.redis_prefix).dead_letter)
    assert b"OSError" in dead[b"error"] and b"Input/output error" in dead[b"error"]


async def test_a_dead_lettered_item_is_retried_later_not_at_every_sweep(settings, pool, redis) -> None:
    """The sweeper re-enqueues unscored items; one whose job was dead-lettered waits 10 minutes, then twice as long
    after each further dead letter, instead of cycling through the dead-letter stream at every sweep."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, scorer=_Broken(), worker_claim_idle_ms=0, worker_max_attempts=2,
                sweep_after_s=0.0)
    await w.ensure_group()
    vybe = await _post(pool, redis, settings)

    async def fail_until_dead_lettered(expected: int) -> dict:
        for _ in range(4):
            await w.step()
        assert await redis.xlen(keys.dead_letter) == expected
        return await pool.fetchrow("SELECT failures, extract(epoch FROM retry_after - now()) AS wait "
                                   "FROM moderation_failures WHERE kind = 'vybe' AND item_id = $1", vybe.id)

    first = await fail_until_dead_lettered(1)
    assert first is not None and first["failures"] == 1 and 590 < first["wait"] <= 600
    assert await w.sweep() == 0  # not due
    await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
    assert await w.sweep() == 1  # due: retried
    assert await w.sweep() == 1  # and enqueued again while that job is still being tried: one round all the same
    second = await fail_until_dead_lettered(3)
    assert second["failures"] == 2 and 1190 < second["wait"] <= 1200
    assert await w.sweep() == 0
    await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second', failures = 30")
    assert await w.sweep() == 1
    capped = await fail_until_dead_lettered(4)
    assert capped["failures"] == 31 and 86_390 < capped["wait"] <= 86_400  # at most a day


async def test_an_item_the_model_cannot_score_goes_to_moderators_after_two_rounds(settings, pool, redis) -> None:
    """A poison item must not leave content unmoderated with nobody told: after the second round of failures
    (10 minutes after the first), if the model has scored other posts since, its content gets a case with the reason
    ``unscored``, announced on mod:flagged, once; the content stays as it was. A model that scores nothing (an
    outage) opens no case. When a retry succeeds, the case shows the scores (cleared, as the model finds it fine),
    and the failure record goes."""
    keys = Keys(settings.redis_prefix)
    broken = _worker(settings, pool, redis, scorer=_Broken(), worker_claim_idle_ms=0, worker_max_attempts=2,
                     sweep_after_s=0.0)
    healthy = _worker(settings, pool, redis, thresholds=NEVER, sweep_after_s=0.0)
    await broken.ensure_group()
    vybe = await _post(pool, redis, settings, "a text the model chokes on")
    cases = "SELECT id, reasons, version, scores, model_cleared_by FROM moderation_cases WHERE target_id = $1"

    async def round_of_failures() -> None:
        await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
        assert await broken.sweep() == 1  # due: retried
        for _ in range(4):
            await broken.step()

    for _ in range(4):
        await broken.step()
    assert await redis.xlen(keys.dead_letter) == 1
    assert await pool.fetchrow(cases, str(vybe.id)) is None  # one round may be an outage: no case yet
    await round_of_failures()
    assert await pool.fetchval("SELECT failures FROM moderation_failures WHERE item_id = $1", vybe.id) == 2
    assert await pool.fetchrow(cases, str(vybe.id)) is None  # nothing scored since it first failed: an outage
    assert await _events(redis, settings, "mod:flagged") == []

    await _post(pool, redis, settings, "another post, scored fine")
    assert await healthy.step() == 1  # the model works for other posts
    await round_of_failures()
    case = await pool.fetchrow(cases, str(vybe.id))
    assert case is not None and list(case["reasons"]) == ["unscored"] and case["scores"] is None
    [event] = await _events(redis, settings, "mod:flagged")
    assert event["event"] == "report.flagged" and event["data"]["reasons"] == ["unscored"]
    assert event["data"]["text"] == "a text the model chokes on" and event["data"]["moderation_state"] == "pending"
    assert event["data"]["scores"] is None
    await round_of_failures()  # a further round: the open case is not reopened or announced again
    assert await pool.fetchval("SELECT failures FROM moderation_failures WHERE item_id = $1", vybe.id) == 4
    assert (await pool.fetchrow(cases, str(vybe.id)))["version"] == case["version"]
    assert len(await _events(redis, settings, "mod:flagged")) == 1

    await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
    assert await healthy.sweep() == 1
    assert await healthy.step() == 1
    assert await pool.fetchval("SELECT count(*) FROM moderation_failures") == 0
    scored = await pool.fetchrow(cases, str(vybe.id))
    assert scored["model_cleared_by"] == healthy.scorer.version and scored["version"] > case["version"]
    rescored = (await _events(redis, settings, "mod:flagged"))[-1]
    assert rescored["event"] == "case.rescored" and set(rescored["data"]["scores"]) >= {"toxicity", "insult"}
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1", vybe.id) == "approved"


async def test_in_shadow_mode_a_retry_that_scores_an_unscored_case_announces_its_scores(settings, pool, redis) -> None:
    """Shadow mode opens and changes no case, but an open ``unscored`` case shows its content's first score: the case
    gets a new version and ``case.rescored`` with the scores, so a console that has it open shows them (before, only
    a reload did). It is not made model-flagged, and a case of a scored item is left alone."""
    w = _worker(settings, pool, redis, mode="shadow")
    await w.ensure_group()
    vybe = await _post(pool, redis, settings, "you are worthless")
    case_id = await mdb.open_case(pool, "shared_vybe", str(vybe.id), ["unscored"], None)
    version = await pool.fetchval("SELECT version FROM moderation_cases WHERE id = $1", case_id)
    assert await w.step() == 1
    case = await pool.fetchrow("SELECT version, model_flagged, state::text FROM moderation_cases WHERE id = $1",
                               case_id)
    assert (case["version"], case["model_flagged"], case["state"]) == (version + 1, False, "open")
    [event] = await _events(redis, settings, "mod:flagged")
    assert event["event"] == "case.rescored" and event["data"]["version"] == version + 1
    stored = await pool.fetchval("SELECT scores FROM moderation_scores WHERE target_id = $1", vybe.id)
    assert event["data"]["scores"] == stored and event["data"]["reasons"] == ["unscored"]

    reported = await _post(pool, redis, settings, "you are worthless too")  # a user's case: its view has no scores
    others = [await mdb.open_case(pool, "shared_vybe", str(reported.id), ["reports>=3 (3)"], None)]
    kept = await _post(pool, redis, settings, "you are worthless as well")  # an unscored case that has scores
    others.append(await mdb.open_case(pool, "shared_vybe", str(kept.id), ["unscored"], {"toxicity": 0.9}))
    versions = "SELECT version FROM moderation_cases WHERE id = ANY($1::uuid[]) ORDER BY id"
    before = await pool.fetch(versions, others)
    assert await w.step() == 2
    assert await pool.fetch(versions, others) == before
    assert len(await _events(redis, settings, "mod:flagged")) == 1


async def test_an_item_with_a_score_gets_no_unscored_case(settings, pool, redis) -> None:
    """An item that has a score (a rescoring failure keeps the previous model's) is retried later but gets no
    case, even while pending."""
    keys = Keys(settings.redis_prefix)
    healthy = _worker(settings, pool, redis, thresholds=NEVER)
    await healthy.ensure_group()
    vybe = await _post(pool, redis, settings, "scored once")
    assert await healthy.step() == 1
    await pool.execute("UPDATE shared_vybes SET moderation_state = 'pending' WHERE id = $1", vybe.id)
    broken = _worker(settings, pool, redis, scorer=_Broken(), worker_claim_idle_ms=0, worker_max_attempts=2)
    for n in range(3):
        await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
        await redis.xadd(keys.jobs, {"kind": "vybe", "id": str(vybe.id), "rescore": "1"})
        for _ in range(4):
            await broken.step()
        await _post(pool, redis, settings, f"another post {n}")
        assert await healthy.step() == 1  # the model scores other posts meanwhile
    assert await pool.fetchval("SELECT failures FROM moderation_failures WHERE item_id = $1", vybe.id) == 3
    assert await pool.fetchval("SELECT count(*) FROM moderation_cases") == 0


async def test_the_sweeper_prunes_failure_records_of_items_no_longer_retried(settings, pool, redis) -> None:
    """A failure record whose retry has been due for a week (its item deleted or decided by hand) goes with a sweep;
    one not yet due, or due for less, stays."""
    from db import moderation as mdb

    w = _worker(settings, pool, redis, sweep_after_s=3600.0)
    await w.ensure_group()
    old, recent, waiting = [await _post(pool, redis, settings, f"post {n}") for n in range(3)]
    for vybe in (old, recent, waiting):
        await mdb.record_failure(pool, "vybe", vybe.id, "model exploded", 600.0, 86_400.0)
    await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '8 days' WHERE item_id = $1",
                       old.id)
    await pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '6 days' WHERE item_id = $1",
                       recent.id)
    await w.sweep()
    left = {r["item_id"] for r in await pool.fetch("SELECT item_id FROM moderation_failures")}
    assert left == {recent.id, waiting.id}


async def test_a_job_that_failed_once_leaves_nothing_behind_when_it_succeeds(settings, pool, redis) -> None:
    """The stream keeps no job that is done (it would grow by one entry per post for as long as Redis runs),
    and the error of a failed attempt goes with it."""
    keys = Keys(settings.redis_prefix)
    broken = _worker(settings, pool, redis, scorer=_Broken(), worker_claim_idle_ms=0)
    await broken.ensure_group()
    await _post(pool, redis, settings, "first try fails")
    await broken.step()
    assert await redis.xlen(keys.jobs) == 1 and len(await redis.hgetall(keys.jobs + ":errors")) == 1
    healthy = _worker(settings, pool, redis, worker_claim_idle_ms=0)
    for n in range(3):
        await _post(pool, redis, settings, f"post {n}")
    assert await healthy.step() == 3  # the new ones
    assert await healthy.step() == 1  # the reclaimed one
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores") == 4
    assert await redis.xlen(keys.jobs) == 0 and not await redis.hgetall(keys.jobs + ":errors")


async def test_sweeper_enqueues_items_that_were_never_enqueued(settings, pool, redis) -> None:
    """A vybe committed without a job (the gateway died) is found by the sweeper and scored."""
    w = _worker(settings, pool, redis, thresholds=NEVER, sweep_after_s=0.0)
    await w.ensure_group()
    await writes.upsert_user(pool, "ghost", "MEMBER")
    await writes.post_vybe(pool, "ghost", content="committed, never enqueued")
    assert await w.sweep() == 1
    await w.step()
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "approved"
    assert await w.sweep() == 0


async def test_sigkill_mid_batch_loses_nothing(settings, pool, redis) -> None:
    """A worker process SIGKILLed mid-stream: a second worker reclaims its pending entries; every item
    ends up scored exactly once."""
    n = 300
    await writes.upsert_user(pool, "bulk", "MEMBER")
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, thresholds=NEVER, worker_claim_idle_ms=200, worker_batch=16)
    await w.ensure_group()
    for i in range(n):
        v = await writes.post_vybe(pool, "bulk", content=f"item {i}")
        await redis.xadd(keys.jobs, {"kind": "vybe", "id": str(v.id)})
    env = {**os.environ, "VYBE_DATABASE_URL": settings.database_url, "VYBE_REDIS_URL": settings.redis_url,
           "VYBE_REDIS_PREFIX": settings.redis_prefix, "VYBE_SCORER": "light", "VYBE_MODERATION_MODE": "flag",
           "VYBE_MODERATION_THRESHOLDS": NEVER,
           "VYBE_WORKER_BATCH": "16", "VYBE_LOG_LEVEL": "WARNING"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "worker", env=env)
    try:
        for _ in range(400):
            done = await pool.fetchval("SELECT count(*) FROM moderation_scores")
            if done >= 16:
                break
            await asyncio.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        await asyncio.wait_for(proc.wait(), timeout=10)
    killed_at = await pool.fetchval("SELECT count(*) FROM moderation_scores")
    assert 0 < killed_at < n, "the kill should land mid-stream"
    for _ in range(200):
        await w.step()
        if await pool.fetchval("SELECT count(*) FROM moderation_scores") == n:
            break
        await asyncio.sleep(0.02)
    assert await pool.fetchval("SELECT count(*) FROM moderation_scores") == n
    assert await pool.fetchval(
        "SELECT count(*) FROM shared_vybes WHERE moderation_state <> 'approved'") == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM (SELECT target_id FROM moderation_scores GROUP BY 1 HAVING count(*) > 1) d") == 0


async def test_a_running_worker_keeps_its_alive_file_fresh_and_a_hung_one_does_not(settings, pool, redis, tmp_path,
                                                                                    monkeypatch) -> None:
    """The consumer loop touches VYBE_WORKER_ALIVE_FILE again and again as it turns (what `vybe worker --alive`
    reads); a loop stuck in a call (a model that never returns) leaves it to go stale, so the probe restarts it."""
    monkeypatch.setattr(Heartbeat, "EVERY_S", 0.05)
    path = tmp_path / "alive"
    release = threading.Event()

    class _Hangs:
        name, version, labels = "hangs", "0", ("toxicity",)

        def score(self, texts):
            release.wait(30)
            raise RuntimeError("released")

    w = _worker(settings, pool, redis, scorer=_Hangs(), worker_alive_file=str(path))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for _ in range(3):  # touched again after each backdating: the loop turns
            for _ in range(200):
                if alive_within(str(path), 1):
                    break
                await asyncio.sleep(0.02)
            assert alive_within(str(path), 1)
            os.utime(path, (time.time() - 60, time.time() - 60))
        await _post(pool, redis, settings)  # the loop now hangs in the model
        await asyncio.sleep(1.0)
        assert not alive_within(str(path), 0.5), "a hung loop kept its file fresh"
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(task, 15)


def test_auto_mode_flags_with_every_scorer_and_an_explicit_mode_is_kept() -> None:
    """VYBE_MODERATION_MODE=auto (the default) flags with the embedded scorer and with the light
    fallback (whose heads now flag few short friendly messages); an explicit mode is kept as set."""
    from common.settings import load_settings
    from moderation.scorers import load_scorer
    from workers.main import build_policy

    light = load_scorer("light")
    assert build_policy(load_settings({}), light).mode == "flag"
    assert build_policy(load_settings({"VYBE_MODERATION_MODE": "shadow"}), light).mode == "shadow"
    embedded = type("Embedded", (), {"name": "vybe-minilm-lr"})()
    assert build_policy(load_settings({}), embedded).mode == "flag"  # type: ignore[arg-type]
    shadowed = build_policy(load_settings({"VYBE_MODERATION_MODE": "shadow"}), light).decide({"toxicity": 0.99})
    assert shadowed.action == "shadow" and shadowed.reasons
    assert build_policy(load_settings({}), light).decide({"toxicity": 0.99}).action == "flag"


async def test_jobs_done_before_the_upgrade_are_trimmed_and_the_rest_kept(settings, pool, redis,
                                                                         monkeypatch) -> None:
    """Jobs an older version acknowledged without deleting them go, in slices; a pending job, one not yet
    delivered, and everything after them stay."""
    monkeypatch.setattr(consumer, "TRIM_SLICE", 100)
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis)
    assert await w.trim() == 0  # no stream yet
    await w.ensure_group()
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1000):
            pipe.xadd(keys.jobs, {"kind": "vybe", "id": f"old-{n}"})
        await pipe.execute()
    old = await redis.xreadgroup(GROUP, "old-version", {keys.jobs: ">"}, count=1000)
    await redis.xack(keys.jobs, GROUP, *[i for i, _ in old[0][1]])  # acknowledged, not deleted
    await redis.xadd(keys.jobs, {"kind": "vybe", "id": "pending"})
    await redis.xreadgroup(GROUP, "crashed", {keys.jobs: ">"}, count=1)  # delivered, never acknowledged
    await redis.xadd(keys.jobs, {"kind": "vybe", "id": "new"})
    await redis.xadd(keys.jobs, {"kind": "vybe", "id": "newer"})
    [(pending, _)] = await redis.xrange(keys.jobs, count=1, min=f"({old[0][1][-1][0].decode()}")
    await redis.hset(keys.jobs + ":errors", mapping={old[0][1][0][0]: "failed once, done since", pending: "failed",
                                                     "not-an-id": "kept"})
    assert await w.trim() == 1000
    assert [f[b"id"] for _, f in await redis.xrange(keys.jobs)] == [b"pending", b"new", b"newer"]
    assert set(await redis.hgetall(keys.jobs + ":errors")) == {pending, b"not-an-id"}  # a done job's error goes
    assert await w.trim() == 0
    await redis.xack(keys.jobs, GROUP, *[i for i, f in await redis.xrange(keys.jobs) if f[b"id"] == b"pending"])
    assert await w.trim() == 1  # with nothing pending, the bound is the delivery point
    assert [f[b"id"] for _, f in await redis.xrange(keys.jobs)] == [b"new", b"newer"]
    assert set(await redis.hgetall(keys.jobs + ":errors")) == {b"not-an-id"}


async def test_a_running_worker_trims_what_an_old_one_left(settings, pool, redis) -> None:
    """The sweep loop trims too (at start and then with each sweep): jobs an old worker acknowledged during
    a rolling update do not stay in the stream or in the backlog figures."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, sweep_after_s=1.0)
    await w.ensure_group()
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for n in range(3):
            await redis.xadd(keys.jobs, {"kind": "vybe", "id": f"old-{n}"})
        old = await redis.xreadgroup(GROUP, "old-version", {keys.jobs: ">"}, count=3)
        await redis.xack(keys.jobs, GROUP, *[i for i, _ in old[0][1]])
        for _ in range(100):
            if await redis.xlen(keys.jobs) == 0:
                break
            await asyncio.sleep(0.05)
        assert await redis.xlen(keys.jobs) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_job_finished_while_it_was_being_dead_lettered_leaves_no_record(settings, pool, redis) -> None:
    """Out of attempts, but gone from the stream by the time it is dead-lettered (its last attempt finished it):
    no empty record on the dead-letter stream, and nothing left pending."""
    keys = Keys(settings.redis_prefix)
    w = _worker(settings, pool, redis, worker_claim_idle_ms=0, worker_max_attempts=1)
    await w.ensure_group()
    entry = await redis.xadd(keys.jobs, {"kind": "vybe", "id": "slow"})
    await redis.xreadgroup(GROUP, "slow-worker", {keys.jobs: ">"}, count=1)
    await redis.xdel(keys.jobs, entry)  # what remains of DONE's work when XPENDING was read just before it
    await w.step()
    assert await redis.xlen(keys.dead_letter) == 0
    assert (await redis.xpending(keys.jobs, GROUP))["pending"] == 0

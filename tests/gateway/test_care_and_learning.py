"""The care route and the model's flag accuracy, end to end through a live gateway: the socket, REST
and /metrics, with a real worker, PostgreSQL and Redis."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from common.labels import SELF_HARM_RISK
from moderation.policy import Policy
from workers.consumer import Worker

pytestmark = pytest.mark.anyio


TABLE = {"anyone would notice": {SELF_HARM_RISK: 0.9}, "where you live": {"threat": 0.95, "toxicity": 0.9}}


async def _score_all(live, scorer) -> None:
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    w = Worker(s, gw.pool, gw.redis, scorer(TABLE), Policy.from_settings("flag", ""), "w-care")
    await w.ensure_group()
    while await w.step():
        pass


async def test_disclosure_reaches_its_author_and_the_care_queue(live, connect, keyword_scorer) -> None:
    author = await connect(live, live.token("sam"))
    mod = await connect(live, live.token("mod", "MODERATOR"))
    await mod.ok("subscribe", channel="mod:flagged")
    vybe = await author.ok("post_vybe", content="some days I wonder if anyone would notice I'm gone")
    await _score_all(live, keyword_scorer)
    notice = await author.wait_for(lambda m: m.get("event") == "care.notice")
    assert notice["data"]["target_id"] == vybe["id"] and notice["data"]["resources"]
    opened = await mod.wait_for(lambda m: m.get("event") == "care.opened")
    care = opened["data"]
    assert care["author_id"] == "sam" and care["state"] == "open"

    headers = {"Authorization": "Bearer " + live.token("mod", "MODERATOR")}
    member = {"Authorization": "Bearer " + live.token("sam")}
    async with httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.get("/api/mod/care", headers=member)).json()["code"] == "forbidden"
        [queued] = (await http.get("/api/mod/care", headers=headers)).json()
        assert queued["care_id"] == care["care_id"]
        url = f"/api/mod/care/{care['care_id']}/close"
        stale = await http.post(url, headers=headers, json={"version": care["version"] + 5})
        assert (stale.status_code, stale.json()["code"]) == (409, "conflict")
        closed = await http.post(url, headers=headers, json={"version": care["version"], "note": "sent a DM"})
        assert closed.status_code == 200 and closed.json()["state"] == "closed"
        assert (await http.get("/api/mod/care", headers=headers)).json() == []
        missing = await http.post("/api/mod/care/nope/close", headers=headers, json={"version": 1})
        assert missing.status_code == 404
    await mod.wait_for(lambda m: m.get("event") == "care.closed")
    # The post was never hidden.
    feed = await live.gateway.pool.fetchval("SELECT moderation_state::text FROM shared_vybes")
    assert feed == "approved"


async def test_resolve_labels_feed_the_stats_on_rest_and_metrics(live, connect, keyword_scorer) -> None:
    mod = await connect(live, live.token("mod", "MODERATOR"))
    author = await connect(live, live.token("ash"))
    await mod.ok("subscribe", channel="mod:flagged")
    await author.ok("post_vybe", content="I know where you live")
    await _score_all(live, keyword_scorer)
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    bad = await mod.call("resolve", case_id=case["case_id"], version=case["version"], action="hide",
                         labels=["not-a-label"])
    assert bad["code"] == "invalid"
    await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="hide", labels=["threat"])

    headers = {"Authorization": "Bearer " + live.token("mod", "MODERATOR")}
    async with httpx.AsyncClient(base_url=live.http) as http:
        stats = (await http.get("/api/mod/stats", headers=headers, params={"window": 3600})).json()
        by_label = {s["label"]: s for s in stats["labels"]}
        assert stats["decisions"] == 1
        assert by_label["threat"]["precision"] == 1.0 and by_label["toxicity"]["precision"] == 1.0
        too_short = await http.get("/api/mod/stats", headers=headers, params={"window": 1})
        assert too_short.status_code == 422
        await live.gateway.refresh_flag_stats()  # what its background loop does every minute
        metrics = (await http.get("/metrics")).text
        assert 'vybe_moderation_flag_precision{label="threat"} 1.0' in metrics
        assert "vybe_moderation_decisions 1.0" in metrics



async def test_metrics_show_how_far_scoring_is_behind(live, connect, keyword_scorer) -> None:
    """/metrics reads the job stream: posts waiting for a worker and the age of the oldest; both fall to 0
    once a worker has done them. With Redis not answering, the two figures are left out, not stale."""
    import asyncio

    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    author = await connect(live, live.token("kim"))
    for n in range(3):
        await author.ok("post_vybe", content=f"post {n}")
    async with httpx.AsyncClient(base_url=live.http) as http:
        for _ in range(100):  # the jobs reach the stream through the outbox relay, just after COMMIT
            metrics = (await http.get("/metrics")).text
            if "vybe_moderation_jobs_waiting 3.0" in metrics:
                break
            await asyncio.sleep(0.05)
        assert "vybe_moderation_jobs_waiting 3.0" in metrics
        await asyncio.sleep(0.2)
        oldest = _gauge(metrics, "vybe_moderation_oldest_job_seconds")
        assert _gauge((await http.get("/metrics")).text, "vybe_moderation_oldest_job_seconds") >= oldest + 0.2
        await _score_all(live, keyword_scorer)
        done = (await http.get("/metrics")).text
        assert "vybe_moderation_jobs_waiting 0.0" in done and "vybe_moderation_oldest_job_seconds 0.0" in done
        gw, real = live.gateway, live.gateway.redis
        gw.redis = aioredis.Redis(port=1, retry=Retry(NoBackoff(), 0))  # nothing listens there: Redis is down
        try:
            down = await http.get("/metrics")
        finally:
            await gw.redis.aclose()
            gw.redis = real
        assert down.status_code == 200 and "vybe_moderation_jobs_waiting" not in down.text
        assert "vybe_frames_out" in down.text


def _gauge(metrics: str, name: str) -> float:
    [value] = [line.split()[1] for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(value)

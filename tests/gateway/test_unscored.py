"""Content the model cannot score, end to end through a live gateway under premoderation: it is held, a moderator
hears of it after the second round of failures, and their decision lets it out to the feed."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from moderation.policy import Policy
from workers.consumer import Worker

pytestmark = pytest.mark.anyio


class _Broken:
    """A model that fails on every batch (the real failure path of the worker, not a fake store)."""

    name, version, labels = "broken", "0", ("toxicity",)

    def score(self, texts):
        raise RuntimeError("model exploded")


async def test_held_content_the_model_cannot_score_reaches_a_moderator_and_then_the_feed(start_gateway,
                                                                                         connect) -> None:
    live = await start_gateway(premoderation=True)
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10, worker_claim_idle_ms=0, worker_max_attempts=2,
                                sweep_after_s=0.0)
    worker = Worker(s, gw.pool, gw.redis, _Broken(), Policy.from_settings("flag", ""), "w-broken")
    await worker.ensure_group()
    reader = await connect(live, live.token("reader"))
    mod = await connect(live, live.token("mod", "MODERATOR"))
    author = await connect(live, live.token("ash"))
    await reader.ok("subscribe", channel="feed")
    await mod.ok("subscribe", channel="mod:flagged")
    vybe = await author.ok("post_vybe", content="a text the model chokes on")

    async def a_round() -> None:
        for _ in range(50):  # the job reaches the stream through the outbox relay, just after COMMIT
            if await gw.redis.xlen(worker.keys.jobs):
                break
            await asyncio.sleep(0.02)
        for _ in range(4):
            await worker.step()

    await a_round()
    await gw.pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
    assert await worker.sweep() == 1
    await a_round()
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    assert case["target_id"] == vybe["id"] and case["reasons"] == ["unscored"] and case["scores"] is None
    assert case["moderation_state"] == "pending"
    assert not [m for m in reader.messages if m.get("event") == "vybe.created"]  # held: never shown yet

    await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="dismiss")
    created = await reader.wait_for(lambda m: m.get("event") == "vybe.created")
    assert created["data"]["id"] == vybe["id"]
    assert await gw.pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid",
                                  vybe["id"]) == "approved"

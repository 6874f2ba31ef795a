"""Content the model cannot score, end to end through a live gateway under premoderation: it is held, a moderator
hears of it after the second round of failures, and their decision lets it out to the feed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
import pytest

from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import Worker

pytestmark = pytest.mark.anyio
NEVER = ",".join(f"{label}=1" for label in ("toxicity", "severe_toxicity", "obscene", "threat", "insult",
                                            "identity_attack", "sexual_explicit"))


class _Broken:
    """A model that fails on every batch (the real failure path of the worker, not a fake store)."""

    name, version, labels = "broken", "0", ("toxicity",)

    def score(self, texts):
        raise RuntimeError("model exploded")


async def _people(live, connect) -> tuple[Any, Any, Any]:
    """A reader on the feed, a moderator on mod:flagged, and an author."""
    reader = await connect(live, live.token("reader"))
    mod = await connect(live, live.token("mod", "MODERATOR"))
    author = await connect(live, live.token("ash"))
    await reader.ok("subscribe", channel="feed")
    await mod.ok("subscribe", channel="mod:flagged")
    return reader, mod, author


async def test_held_content_the_model_cannot_score_reaches_a_moderator_and_then_the_feed(start_gateway,
                                                                                         connect) -> None:
    live = await start_gateway(premoderation=True)
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10, worker_claim_idle_ms=0, worker_max_attempts=2,
                                sweep_after_s=0.0)
    worker = Worker(s, gw.pool, gw.redis, _Broken(), Policy.from_settings("flag", ""), "w-broken")
    healthy = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings("flag", NEVER), "w-healthy")
    await worker.ensure_group()
    reader, mod, author = await _people(live, connect)
    vybe = await author.ok("post_vybe", content="a text the model chokes on")

    async def until_queued() -> None:
        for _ in range(50):  # the job reaches the stream through the outbox relay, just after COMMIT
            if await gw.redis.xlen(worker.keys.jobs):
                return
            await asyncio.sleep(0.02)

    async def a_round() -> None:
        await until_queued()
        for _ in range(4):
            await worker.step()

    await a_round()
    await author.ok("post_vybe", content="another post, which the model scores")
    await until_queued()
    assert await healthy.step() == 1
    await gw.pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
    assert await worker.sweep() == 1
    await a_round()
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    assert case["target_id"] == vybe["id"] and case["reasons"] == ["unscored"] and case["scores"] is None
    assert case["moderation_state"] == "pending"
    shown = [m["data"]["id"] for m in reader.messages if m.get("event") == "vybe.created"]
    assert vybe["id"] not in shown  # held: never shown yet

    await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="dismiss")
    created = await reader.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == vybe["id"])
    assert created["data"]["content"] == "a text the model chokes on"
    assert not [m for m in reader.messages if m.get("event") == "vybe.restored"]  # never shown: nothing restored
    assert await gw.pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid",
                                  vybe["id"]) == "approved"
    # A later score of it (a new model's rescoring pass) announces it no second time.
    await gw.redis.xadd(worker.keys.jobs, {"kind": "vybe", "id": vybe["id"], "rescore": "1"})
    assert await healthy.step() == 1
    await mod.ok("subscribe", channel="feed")  # a round trip through the gateway after the worker's publish
    await asyncio.sleep(0.2)
    assert [m["data"]["id"] for m in reader.messages if m.get("event") == "vybe.created"].count(vybe["id"]) == 1


async def test_an_app_item_the_model_cannot_score_reaches_moderators_and_the_apps_webhook(start_gateway,
                                                                                          connect) -> None:
    """A sister app's item: the case is opened as for a vybe, and the app's webhook hears ``moderation.unscored``
    (the item still pending, with its case); the moderator's decision then reaches it as ``moderation.decided``."""
    from db import apps

    live = await start_gateway()
    gw = live.gateway
    _, key = await apps.create_app(gw.pool, "miel", "Miel")
    await apps.set_webhook(gw.pool, "miel", "http://127.0.0.1:9/hook")  # deliveries are read from the table
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10, worker_claim_idle_ms=0, worker_max_attempts=2,
                                sweep_after_s=0.0)
    broken = Worker(s, gw.pool, gw.redis, _Broken(), Policy.from_settings("flag", ""), "w-broken")
    healthy = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings("flag", NEVER), "w-healthy")
    await broken.ensure_group()
    async with httpx.AsyncClient(base_url=live.http, headers={"authorization": f"Bearer {key}"}) as http:
        sent = await http.post("/api/server/moderate", json={"content_type": "message", "content_id": "m-1",
                                                             "author_id": "u-1", "text": "poison", "wait": False})
        assert sent.status_code == 202, sent.text
        item_id = sent.json()["item_id"]
        await asyncio.sleep(0.2)  # the job reaches the stream through the outbox relay
        for _ in range(4):
            await broken.step()
        other = await http.post("/api/server/moderate", json={"content_type": "message", "content_id": "m-2",
                                                              "author_id": "u-2", "text": "hi", "wait": False})
        assert other.status_code == 202
        await asyncio.sleep(0.2)
        assert await healthy.step() == 1
        await gw.pool.execute("UPDATE moderation_failures SET retry_after = now() - interval '1 second'")
        assert await broken.sweep() == 1
        for _ in range(4):
            await broken.step()
        hooks = await gw.pool.fetch("SELECT event, body FROM webhook_deliveries WHERE event = 'moderation.unscored'")
        assert len(hooks) == 1
        data = (hooks[0]["body"] if isinstance(hooks[0]["body"], dict) else json.loads(hooks[0]["body"]))["data"]
        assert data["item_id"] == item_id and data["state"] == "pending" and data["case_id"]
        read = (await http.get(f"/api/server/moderation/{item_id}")).json()
        assert read["state"] == "pending" and read["case_id"] == data["case_id"]
    mod = await connect(live, live.token("mod", "MODERATOR"))
    version = await gw.pool.fetchval("SELECT version FROM moderation_cases WHERE id = $1::uuid", data["case_id"])
    await mod.ok("resolve", case_id=data["case_id"], version=version, action="dismiss")
    assert await gw.pool.fetchval("SELECT count(*) FROM webhook_deliveries WHERE event = 'moderation.decided'") == 1
    # No model scored it: the decision is not a label (it would count as the model's miss, and retraining would
    # score the text with the model).
    assert await gw.pool.fetchval("SELECT count(*) FROM moderation_labels") == 0


async def test_under_premoderation_a_vybe_the_model_hid_at_once_is_created_when_a_moderator_lets_it_out(
        start_gateway, connect, keyword_scorer) -> None:
    """Under premoderation a vybe the model hides at its first score was never shown: viewers hear nothing of it
    (before, `vybe.hidden`); a reopen leaves it out of view (before, `flagged`: visible, with nobody told); when a
    moderator restores it viewers hear `vybe.created`, with its content (before, `vybe.restored` of an id they
    never had). A public marker post after each step proves nothing came before it."""
    live = await start_gateway(premoderation=True)
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    worker = Worker(s, gw.pool, gw.redis, keyword_scorer({"chess": {"threat": 0.97}}),
                    Policy.from_settings("hide", "threat=0.5:0.9"), "w-premod")
    await worker.ensure_group()
    reader, mod, author = await _people(live, connect)
    vybe = await author.ok("post_vybe", content="I will end you at chess tonight")
    # Held for its score: its channel is not found by others, as its REST read is not (before, anyone who knew
    # the id could follow it); its author may.
    refused = await reader.call("subscribe", channel=f"vybe:{vybe['id']}")
    assert refused["type"] == "error" and refused["code"] == "not_found"
    await author.ok("subscribe", channel=f"vybe:{vybe['id']}")

    async def score_all() -> None:
        for _ in range(50):  # the job reaches the stream through the outbox relay, just after COMMIT
            if await worker.step():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("nothing to score")

    async def heard_before_marker(n: int) -> list[str]:
        marker = await author.ok("post_vybe", content=f"marker {n}")
        await score_all()
        await reader.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == marker["id"])
        return [m["event"] for m in reader.messages if m.get("data", {}).get("id") == vybe["id"]]

    async def state() -> str:
        return await gw.pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid",
                                      vybe["id"])

    await score_all()
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    assert case["moderation_state"] == "hidden"
    assert await heard_before_marker(1) == []
    outcome = await author.wait_for(lambda m: m.get("event") == "moderation.outcome")
    assert outcome["data"]["target_id"] == vybe["id"] and outcome["data"]["by"] == "model"

    kept = await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="hide")
    reopened = await mod.ok("reopen", case_id=case["case_id"], version=kept["version"])
    assert reopened["state"] == "open" and await state() == "hidden"
    assert await heard_before_marker(2) == []

    await mod.ok("resolve", case_id=case["case_id"], version=reopened["version"], action="restore")
    created = await reader.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == vybe["id"])
    assert created["data"]["content"] == "I will end you at chess tonight" and await state() == "approved"
    assert await heard_before_marker(3) == ["vybe.created"]
    # Shown now: a moderator who takes it down again and brings it back is heard as usual.
    restored = (await mod.wait_for(lambda m: m.get("event") == "report.resolved"
                                   and m["data"]["resolution"] == "restore"))["data"]
    again = await mod.ok("reopen", case_id=case["case_id"], version=restored["version"])
    hidden = await mod.ok("resolve", case_id=case["case_id"], version=again["version"], action="hide")
    await mod.ok("reopen", case_id=case["case_id"], version=hidden["version"])  # out of view until decided again
    assert await heard_before_marker(4) == ["vybe.created", "vybe.hidden"]

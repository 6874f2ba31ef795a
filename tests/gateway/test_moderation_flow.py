"""Moderators on the socket: the live flagged stream, claims with leases and versions, resolutions."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import Worker

pytestmark = pytest.mark.anyio


async def _score_all(live) -> None:
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    w = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings("flag", "toxicity=0:1"), "w")
    await w.ensure_group()
    while await w.step():
        pass


async def test_flag_claim_conflict_resolve_hide(live, connect) -> None:
    """A flagged vybe reaches moderators; claims conflict; hiding it removes it for viewers and tells
    the author, once, even when the moderator resends the command with its id; everything is audited."""
    mod1 = await connect(live, live.token("mod1", "MODERATOR"))
    mod2 = await connect(live, live.token("mod2", "ADMIN"))
    author = await connect(live, live.token("author"))
    viewer = await connect(live, live.token("viewer"))
    for m in (mod1, mod2):
        await m.ok("subscribe", channel="mod:flagged")
    await viewer.ok("subscribe", channel="feed")
    vybe = await author.ok("post_vybe", content="I know where you live", is_anonymous=True)
    await _score_all(live)
    flagged = (await mod1.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    assert flagged["author_id"] == "author" and flagged["text"] == "I know where you live"
    assert flagged["target_id"] == vybe["id"] and flagged["state"] == "open"
    case, version = flagged["case_id"], flagged["version"]

    claimed = await mod1.ok("claim", case_id=case, version=version)
    assert claimed["claimed_by"] == "mod1"
    seen = await mod2.wait_for(lambda m: m.get("event") == "case.claimed")
    assert seen["data"]["claimed_by"] == "mod1"
    stale = await mod2.call("resolve", case_id=case, version=version, action="dismiss")
    assert stale["code"] == "conflict"
    busy = await mod2.call("resolve", case_id=case, version=claimed["version"], action="dismiss")
    assert busy["code"] == "conflict" and "claimed by mod1" in busy["message"]

    done = await mod1.ok("resolve", id="hide-1", case_id=case, version=claimed["version"], action="hide",
                         note="threat")
    assert done["state"] == "resolved" and done["resolution"] == "hide" and done["replayed"] is False
    await viewer.wait_for(lambda m: m.get("event") == "vybe.hidden" and m["data"]["id"] == vybe["id"])
    outcome = await author.wait_for(lambda m: m.get("event") == "moderation.outcome")
    assert outcome["data"]["action"] == "hide"
    await mod2.wait_for(lambda m: m.get("event") == "report.resolved")
    # The same command again (its answer lost): the first answer, replayed; nothing applied or announced again.
    again = await mod1.ok("resolve", id="hide-1", case_id=case, version=claimed["version"], action="hide",
                          note="threat")
    assert again == {**done, "replayed": True}
    marker = await author.ok("post_vybe", content="a marker after the retry")
    await viewer.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == marker["id"])
    assert [m["event"] for m in viewer.messages if m.get("event") == "vybe.hidden"] == ["vybe.hidden"]
    assert [m["event"] for m in author.messages if m.get("event") == "moderation.outcome"] == ["moderation.outcome"]
    assert [m["event"] for m in mod2.messages if m.get("event") == "report.resolved"] == ["report.resolved"]
    audit = await live.gateway.pool.fetch("SELECT actor_id, action FROM moderation_audit ORDER BY id")
    assert [(r["actor_id"], r["action"]) for r in audit] == [("mod1", "claim"), ("mod1", "hide")]
    # Hidden content can no longer be reacted to.
    assert (await viewer.call("react", target_id=vybe["id"], reaction="HEART"))["code"] == "content_unavailable"


async def test_viewers_hear_restored_only_for_content_that_was_out_of_view(live, connect) -> None:
    """Dismissing the flag of a vybe that stayed in view, or reopening that decision, changes nothing viewers see:
    no `vybe.restored` (before, every feed subscriber heard one). Hiding it puts it out of view (`vybe.hidden`, for
    a PRIVATE vybe only to its author: before, every feed subscriber heard of its id); reopening that leaves it out
    of view until a moderator decides again (before, an undo put it back in view at once: `vybe.restored`); hiding
    it again announces nothing; a restore brings it back. A public marker post after each step proves nothing came
    before it."""
    mod = await connect(live, live.token("mod1", "MODERATOR"))
    author = await connect(live, live.token("author"))
    viewer = await connect(live, live.token("viewer"))
    await mod.ok("subscribe", channel="mod:flagged")
    for c in (author, viewer):
        await c.ok("subscribe", channel="feed")
    vybe = await author.ok("post_vybe", content="I know where you live", privacy_level="PRIVATE")
    await _score_all(live)
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]

    async def heard_before_marker(n: int) -> dict[str, list[str]]:
        marker = await author.ok("post_vybe", content=f"marker {n}")
        heard = {}
        for name, c in (("author", author), ("viewer", viewer)):
            await c.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == marker["id"])
            heard[name] = [m["event"] for m in c.messages
                           if m.get("event") in ("vybe.hidden", "vybe.removed", "vybe.restored")
                           and m["data"].get("id") == vybe["id"]]
        return heard

    dismissed = await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="dismiss")
    assert await heard_before_marker(1) == {"author": [], "viewer": []}
    reopened = await mod.ok("reopen", case_id=case["case_id"], version=dismissed["version"])
    assert await heard_before_marker(2) == {"author": [], "viewer": []}
    hidden = await mod.ok("resolve", case_id=case["case_id"], version=reopened["version"], action="hide")
    assert await heard_before_marker(3) == {"author": ["vybe.hidden"], "viewer": []}
    again = await mod.ok("reopen", case_id=case["case_id"], version=hidden["version"])
    assert await heard_before_marker(4) == {"author": ["vybe.hidden"], "viewer": []}
    state = await live.gateway.pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid",
                                             vybe["id"])
    assert state == "hidden"
    rehidden = await mod.ok("resolve", case_id=case["case_id"], version=again["version"], action="hide")
    assert await heard_before_marker(5) == {"author": ["vybe.hidden"], "viewer": []}
    again = await mod.ok("reopen", case_id=case["case_id"], version=rehidden["version"])
    await mod.ok("resolve", case_id=case["case_id"], version=again["version"], action="restore")
    assert await heard_before_marker(6) == {"author": ["vybe.hidden", "vybe.restored"], "viewer": []}


async def test_expired_claim_lets_another_moderator_act(start_gateway, connect) -> None:
    """A claim is a lease: once it expires another moderator may act (stale claims do not block)."""
    live = await start_gateway(claim_lease_s=0.3)
    mod1 = await connect(live, live.token("mod1", "MODERATOR"))
    mod2 = await connect(live, live.token("mod2", "MODERATOR"))
    author = await connect(live, live.token("author"))
    await mod1.ok("subscribe", channel="mod:flagged")
    await author.ok("post_vybe", content="rude words")
    await _score_all(live)
    case = (await mod1.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    claimed = await mod1.ok("claim", case_id=case["case_id"], version=case["version"])
    await asyncio.sleep(0.5)
    done = await mod2.ok("resolve", case_id=case["case_id"], version=claimed["version"], action="dismiss")
    assert done["resolved_by"] == "mod2"


async def test_user_reports_flag_at_threshold_and_reporters_learn_outcome(start_gateway, connect) -> None:
    """Reports are deduplicated per reporter; N distinct reporters open a case; each reporter hears the outcome."""
    live = await start_gateway(report_flag_threshold=2)
    mod = await connect(live, live.token("mod", "MODERATOR"))
    await mod.ok("subscribe", channel="mod:flagged")
    author = await connect(live, live.token("author"))
    r1 = await connect(live, live.token("r1"))
    r2 = await connect(live, live.token("r2"))
    vybe = await author.ok("post_vybe", content="buy followers cheap at my site")
    first = await r1.ok("report", target_type="shared_vybe", target_id=vybe["id"], report_type="SPAM",
                        description="spam link")
    again = await r1.ok("report", target_type="shared_vybe", target_id=vybe["id"], report_type="SPAM")
    assert first["created"] and not again["created"] and again["report_count"] == 1
    await r2.ok("report", target_type="shared_vybe", target_id=vybe["id"], report_type="SPAM", description="ad")
    case = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    assert case["report_count"] == 2
    assert sorted(r["description"] for r in case["reporters"]) == ["ad", "spam link"]
    await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="remove")
    for reporter in (r1, r2):
        done = await reporter.wait_for(lambda m: m.get("event") == "report.resolved")
        assert done["data"]["outcome"] == "remove"
    assert await live.gateway.pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "removed"
    assert await live.gateway.pool.fetchval("SELECT count(*) FROM reports WHERE status = 'RESOLVED'") == 2


async def test_members_cannot_moderate(live, connect) -> None:
    """claim and resolve from a MEMBER are forbidden."""
    c = await connect(live, live.token("member"))
    r = await c.call("claim", case_id="00000000-0000-0000-0000-000000000000", version=1)
    assert r["code"] == "forbidden"


async def test_every_case_change_bumps_its_version_with_a_consistent_payload(live, connect) -> None:
    """Reports on an open case each announce a new version, and every payload agrees with itself
    (report_count equals the reporters listed); acting on an older version gets `conflict`."""
    mod = await connect(live, live.token("mod", "MODERATOR"))
    await mod.ok("subscribe", channel="mod:flagged")
    author = await connect(live, live.token("author"))
    vybe = await author.ok("post_vybe", content="you are all worthless")
    await _score_all(live)
    first = (await mod.wait_for(lambda m: m.get("event") == "report.flagged"))["data"]
    reporters = [await connect(live, live.token(f"r{i}")) for i in range(3)]
    for r in reporters:
        await r.ok("report", target_type="shared_vybe", target_id=vybe["id"], report_type="HARASSMENT")
    await mod.wait_for(lambda m: m.get("event") == "report.flagged" and len(m["data"]["reporters"]) == 4)
    payloads = [m["data"] for m in mod.events("report.flagged")]
    versions = [p["version"] for p in payloads]
    assert versions == sorted(set(versions)) and len(versions) == 4, versions
    assert all(p["report_count"] == len(p["reporters"]) for p in payloads), payloads
    stale = await mod.call("claim", case_id=first["case_id"], version=first["version"])
    assert stale["code"] == "conflict"
    await mod.ok("claim", case_id=first["case_id"], version=versions[-1])


async def test_reports_racing_the_scorer_all_answered(live, connect) -> None:
    """Members reporting vybes while the worker scores them: every report is answered (no deadlock
    escapes as a dropped socket) and every vybe ends with one open case."""
    author = await connect(live, live.token("author"))
    vybes = [await author.ok("post_vybe", content=f"you are pathetic, number {i}") for i in range(12)]
    reporters = [await connect(live, live.token(f"rep{i}")) for i in range(3)]

    async def report_all(r) -> list[dict]:
        return [await r.call("report", target_type="shared_vybe", target_id=v["id"], report_type="HARASSMENT")
                for v in vybes]

    answers = await asyncio.gather(_score_all(live), *(report_all(r) for r in reporters))
    replies = [a for batch in answers[1:] for a in batch]
    assert len(replies) == 36 and all(a["type"] == "ack" for a in replies), replies
    cases = await live.gateway.pool.fetchval("SELECT count(*) FROM moderation_cases WHERE state = 'open'")
    assert cases == 12

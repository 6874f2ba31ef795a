"""Appeals over REST, and what the author is (and is not) told, through a live gateway."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import Worker

pytestmark = pytest.mark.anyio


async def _score_all(live, mode: str = "flag", thresholds: str = "toxicity=0:1") -> None:
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    w = Worker(s, gw.pool, gw.redis, load_scorer("light"), Policy.from_settings(mode, thresholds), "w-appeal")
    await w.ensure_group()
    while await w.step():
        pass


def _auth(live, user: str, role: str = "MEMBER") -> dict[str, str]:
    return {"Authorization": "Bearer " + live.token(user, role)}


async def test_appeal_over_rest_once_and_only_by_the_author(live, connect) -> None:
    author = await connect(live, live.token("kim"))
    vybe = await author.ok("post_vybe", content="this gym is killing me")
    await _score_all(live)
    async with httpx.AsyncClient(base_url=live.http) as http:
        [case] = (await http.get("/api/mod/queue", headers=_auth(live, "mod", "MODERATOR"))).json()
        body = {"version": case["version"], "action": "remove", "note": "internal: repeat offender?",
                "message": "Removed for violent language."}
        done = await http.post(f"/api/mod/cases/{case['case_id']}/resolve", headers=_auth(live, "mod", "MODERATOR"),
                               json={**body, "id": "rest-remove-1"})
        assert done.status_code == 200 and done.json()["replayed"] is False
        resent = await http.post(f"/api/mod/cases/{case['case_id']}/resolve", headers=_auth(live, "mod", "MODERATOR"),
                                 json={**body, "id": "rest-remove-1"})  # its answer lost: the same request again
        assert resent.status_code == 200 and resent.json() == {**done.json(), "replayed": True}
        outcome = await author.wait_for(lambda m: m.get("event") == "moderation.outcome")
        data = outcome["data"]
        assert data["message"] == "Removed for violent language." and "note" not in data  # the note is internal
        assert data["excerpt"] == "this gym is killing me" and data["appealable"] is True
        # What an app that was away (or speaks REST only) reads back: the author's own moderated content.
        [mine] = (await http.get("/api/me/moderated", headers=_auth(live, "kim"))).json()
        assert {k: mine[k] for k in ("target_type", "target_id", "state", "excerpt", "by", "message", "appeal",
                                     "appealable")} == {
            "target_type": "shared_vybe", "target_id": vybe["id"], "state": "removed",
            "excerpt": "this gym is killing me", "by": "moderator", "message": "Removed for violent language.",
            "appeal": None, "appealable": True}
        assert (await http.get("/api/me/moderated", headers=_auth(live, "lee"))).json() == []

        appeal = {"target_type": "SHARED_VYBE", "target_id": vybe["id"], "statement": "It means the workout is hard."}
        other = await http.post("/api/appeals", headers=_auth(live, "lee"), json=appeal)
        assert (other.status_code, other.json()["code"]) == (404, "not_found")
        blank = await http.post("/api/appeals", headers=_auth(live, "kim"), json={**appeal, "statement": "  "})
        assert (blank.status_code, blank.json()["code"]) == (422, "invalid_content")
        first = await http.post("/api/appeals", headers=_auth(live, "kim"), json={**appeal, "id": "appeal-1"})
        assert first.status_code == 200 and first.json()["state"] == "open"
        retried = await http.post("/api/appeals", headers=_auth(live, "kim"), json={**appeal, "id": "appeal-1"})
        assert retried.status_code == 200 and retried.json() == {**first.json(), "replayed": True}
        again = await http.post("/api/appeals", headers=_auth(live, "kim"), json=appeal)
        assert (again.status_code, again.json()["code"]) == (409, "conflict")

        mods = _auth(live, "mod2", "MODERATOR")
        [appealed] = (await http.get("/api/mod/queue", headers=mods, params={"appeals": "true"})).json()
        assert appealed["appeal_statement"] == "It means the workout is hard." and appealed["appeal_of"] == "mod"
        assert (await http.get("/api/mod/queue", headers=mods, params={"appeals": "false"})).json() == []
        same = await http.post(f"/api/mod/cases/{appealed['case_id']}/resolve", headers=_auth(live, "mod", "MODERATOR"),
                               json={"version": appealed["version"], "action": "dismiss"})
        assert (same.status_code, same.json()["code"]) == (403, "forbidden")
        # Nor may they claim it: a claim would hold it away from every moderator who may decide it for the lease.
        held = await http.post(f"/api/mod/cases/{appealed['case_id']}/claim", headers=_auth(live, "mod", "MODERATOR"),
                               json={"version": appealed["version"]})
        assert (held.status_code, held.json()["code"]) == (403, "forbidden")
        denied = await http.post(f"/api/mod/cases/{appealed['case_id']}/resolve", headers=mods,
                                 json={"version": appealed["version"], "action": "remove"})
        assert denied.json()["appeal_outcome"] == "denied"
        [mine] = (await http.get("/api/me/moderated", headers=_auth(live, "kim"))).json()
        assert (mine["appeal"], mine["appealable"]) == ("denied", False)
    told = await author.wait_for(lambda m: m.get("event") == "moderation.outcome" and m["data"]["appeal"] == "denied")
    assert told["data"]["appealable"] is False
    # Each decision reached the author once: the resent resolve and appeal announced nothing.
    assert [m["data"]["action"] for m in author.messages if m.get("event") == "moderation.outcome"] == [
        "remove", "remove"]


async def test_model_hidden_content_can_be_appealed_by_anyone_moderating(live, connect) -> None:
    """Hidden by the model (hide mode): the author is told it may appeal; any moderator decides."""
    author = await connect(live, live.token("ren"))
    vybe = await author.ok("post_vybe", content="crushed it today")
    await _score_all(live, mode="hide", thresholds="toxicity=0:0")
    told = await author.wait_for(lambda m: m.get("event") == "moderation.outcome")
    assert told["data"]["by"] == "model" and told["data"]["appealable"] is True
    appealed = await author.ok("appeal", target_type="SHARED_VYBE", target_id=vybe["id"], statement="Gym talk!")
    assert appealed["state"] == "open"
    async with httpx.AsyncClient(base_url=live.http) as http:
        [mine] = (await http.get("/api/me/moderated", headers=_auth(live, "ren"))).json()
        assert (mine["state"], mine["by"], mine["appeal"], mine["appealable"]) == ("hidden", "model", "open", False)
        [case] = (await http.get("/api/mod/queue", headers=_auth(live, "mod", "MODERATOR"),
                                 params={"appeals": "true"})).json()
        assert case["appeal_of"] is None
        granted = await http.post(f"/api/mod/cases/{case['case_id']}/resolve",
                                  headers=_auth(live, "mod", "MODERATOR"), json={"version": case["version"],
                                                                                 "action": "restore"})
        assert granted.json()["appeal_outcome"] == "granted"
        assert (await http.get("/api/me/moderated", headers=_auth(live, "ren"))).json() == [], "restored: back in view"
    state = await live.gateway.pool.fetchval("SELECT moderation_state::text FROM shared_vybes")
    assert state == "approved"


async def test_reopen_undoes_a_resolution_and_context_tells_the_story(live, connect) -> None:
    """Reopen puts the case back (the decision no longer a label; removed content stays out of view until a
    moderator decides again); the context shows the parent vybe, the author's earlier cases and each reporter's
    record."""
    author = await connect(live, live.token("ivy"))
    viewer = await connect(live, live.token("vic"))
    mod = await connect(live, live.token("mod", "MODERATOR"))
    await viewer.ok("subscribe", channel="feed")
    first = await author.ok("post_vybe", content="first post that gets flagged")
    await _score_all(live)
    async with httpx.AsyncClient(base_url=live.http) as http:
        mods = _auth(live, "mod", "MODERATOR")
        [case] = (await http.get("/api/mod/queue", headers=mods)).json()
        await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="remove")
        await viewer.wait_for(lambda m: m.get("event") == "vybe.removed")
        assert await live.gateway.pool.fetchval("SELECT count(*) FROM moderation_labels") == 1
        [done] = (await http.get("/api/mod/resolved", headers=mods)).json()
        assert done["case_id"] == case["case_id"]
        stale = await http.post(f"/api/mod/cases/{case['case_id']}/reopen", headers=mods,
                                json={"version": case["version"]})
        assert stale.json()["code"] == "conflict"
        back = await http.post(f"/api/mod/cases/{case['case_id']}/reopen", headers=mods,
                               json={"version": done["version"]})
        assert back.status_code == 200 and back.json()["state"] == "open" and back.json()["resolution"] is None
        assert await live.gateway.pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid",
                                                first["id"]) == "removed"
        assert await live.gateway.pool.fetchval("SELECT count(*) FROM moderation_labels") == 0
        again = await http.post(f"/api/mod/cases/{case['case_id']}/reopen", headers=mods,
                                json={"version": back.json()["version"]})
        assert again.json()["code"] == "conflict"  # open already
        restored = await mod.ok("resolve", case_id=case["case_id"], version=back.json()["version"], action="restore")
        await viewer.wait_for(lambda m: m.get("event") == "vybe.restored" and m["data"]["id"] == first["id"])
        seen = [m["event"] for m in viewer.messages
                if m.get("event") in ("vybe.removed", "vybe.restored") and m["data"]["id"] == first["id"]]
        assert seen == ["vybe.removed", "vybe.restored"], "back in view once, at the restore"
        await mod.ok("reopen", case_id=case["case_id"], version=restored["version"])  # in view, under review

        # A comment on another vybe, reported by a member with a record.
        vybe = await author.ok("post_vybe", content="second post")
        comment = await author.ok("comment", vybe_id=vybe["id"], content="a reply")
        await viewer.ok("report", target_type="COMMENT", target_id=comment["id"], report_type="HARASSMENT")
        await viewer.ok("report", target_type="SHARED_VYBE", target_id=first["id"], report_type="HARASSMENT")
        await _score_all(live)
        queue = (await http.get("/api/mod/queue", headers=mods)).json()
        on_comment = next(c for c in queue if c["target_id"] == comment["id"])
        on_first = next(c for c in queue if c["target_id"] == first["id"])
        await mod.ok("resolve", case_id=on_first["case_id"], version=on_first["version"], action="hide")
        ctx = (await http.get(f"/api/mod/cases/{on_comment['case_id']}/context", headers=mods)).json()
        assert ctx["parent"]["id"] == vybe["id"] and ctx["parent"]["text"] == "second post"
        assert {p["target_id"]: p["resolution"] for p in ctx["author_history"]}[first["id"]] == "hide"
        assert ctx["reporters"] == [{"reporter_id": "vic", "reports": 1, "upheld": 1, "accuracy": 1.0}]
        missing = await http.get("/api/mod/cases/nope/context", headers=mods)
        assert missing.status_code == 404
        member = await http.get(f"/api/mod/cases/{on_comment['case_id']}/context", headers=_auth(live, "vic"))
        assert member.status_code == 403

"""What members' pages read and hear: display names (anonymity kept), the reaction breakdown with your
own, `mine`, the block list at auth, and deletes announced live."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_reads_carry_names_breakdown_and_mine(live, connect) -> None:
    ana = await connect(live, live.token("ana"))  # the live fixture's tokens carry no name claim
    await live.gateway.pool.execute("UPDATE user_profiles SET display_name = 'Ana Lima' WHERE user_id = 'ana'")
    bo = await connect(live, live.token("bo"))
    named = await ana.ok("post_vybe", content="named post")
    hidden = await ana.ok("post_vybe", content="anonymous post", is_anonymous=True)
    for kind in ("HEART", "CLAP"):
        await bo.ok("react", target_type="SHARED_VYBE", target_id=named["id"], reaction=kind)
    await ana.ok("react", target_type="SHARED_VYBE", target_id=named["id"], reaction="HEART")
    async with httpx.AsyncClient(base_url=live.http) as http:
        as_bo = (await http.get("/api/feed", headers={"Authorization": "Bearer " + live.token("bo")})).json()
        as_ana = (await http.get("/api/feed", headers={"Authorization": "Bearer " + live.token("ana")})).json()
        one = (await http.get(f"/api/vybes/{named['id']}",
                              headers={"Authorization": "Bearer " + live.token("bo")})).json()
    by_id = {v["id"]: v for v in as_bo["items"]}
    assert by_id[named["id"]]["author_name"] == "Ana Lima" and by_id[named["id"]]["mine"] is False
    assert by_id[named["id"]]["reactions"] == {"HEART": 2, "CLAP": 1}
    assert by_id[named["id"]]["my_reactions"] == ["CLAP", "HEART"]
    assert "author_name" not in by_id[hidden["id"]] and by_id[hidden["id"]]["user_id"] is None
    mine = {v["id"]: v for v in as_ana["items"]}
    assert mine[hidden["id"]]["mine"] is True and mine[hidden["id"]]["user_id"] is None  # still anonymous
    assert mine[named["id"]]["my_reactions"] == ["HEART"]
    assert one["vybe"]["reactions"] == {"HEART": 2, "CLAP": 1} and one["vybe"]["my_reactions"] == ["CLAP", "HEART"]


async def test_live_events_name_authors_and_count_by_type(live, connect) -> None:
    ana = await connect(live, live.token("ana"))
    await live.gateway.pool.execute("UPDATE user_profiles SET display_name = 'Ana Lima' WHERE user_id = 'ana'")
    bo = await connect(live, live.token("bo"))
    await bo.ok("subscribe", channel="feed")
    vybe = await ana.ok("post_vybe", content="hello")
    created = await bo.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == vybe["id"])
    assert created["data"]["author_name"] == "Ana Lima"
    await ana.ok("post_vybe", content="secret", is_anonymous=True)
    anon = await bo.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["content"] == "secret")
    assert anon["data"]["user_id"] is None and "author_name" not in anon["data"]
    await bo.ok("subscribe", channel=f"vybe:{vybe['id']}")
    await bo.ok("react", target_type="SHARED_VYBE", target_id=vybe["id"], reaction="FIRE")
    changed = await bo.wait_for(lambda m: m.get("event") == "reactions.changed")
    assert changed["data"]["by_type"] == {"FIRE": 1}


async def test_deletes_are_announced_and_auth_returns_the_block_list(live, connect) -> None:
    ana = await connect(live, live.token("ana"))
    bo = await connect(live, live.token("bo"))
    await bo.ok("subscribe", channel="feed")
    vybe = await ana.ok("post_vybe", content="soon gone")
    await bo.ok("subscribe", channel=f"vybe:{vybe['id']}")
    top = await ana.ok("comment", vybe_id=vybe["id"], content="top")
    reply = await bo.ok("comment", vybe_id=vybe["id"], content="reply", parent_id=top["id"])
    headers = {"Authorization": "Bearer " + live.token("ana")}
    async with httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.delete(f"/api/comments/{top['id']}", headers=headers)).status_code == 204
        gone = await bo.wait_for(lambda m: m.get("event") == "comment.deleted")
        assert gone["data"]["id"] == top["id"] and set(gone["data"]["ids"]) == {top["id"], reply["id"]}
        assert (await http.delete(f"/api/vybes/{vybe['id']}", headers=headers)).status_code == 204
    deleted = await bo.wait_for(lambda m: m.get("event") == "vybe.deleted" and m["channel"] == "feed")
    assert deleted["data"]["id"] == vybe["id"]

    await ana.ok("block", user_id="bo")
    again = await connect(live)
    assert (await again.ok("auth", token=live.token("ana")))["blocked"] == ["bo"]
    header = await connect(live, live.token("ana"), header=True)
    first = await header.wait_for(lambda m: m.get("type") == "ack" and m["id"] == "")
    assert first["result"]["blocked"] == ["bo"]

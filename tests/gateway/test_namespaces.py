"""Channel namespaces from configuration: validation at start, subscribe rules, client publications
(limits, idempotency, moderation after and before delivery), presence and history per namespace."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from common import namespaces
from common.settings import SettingsError, load_settings
from db import moderation as mdb
from gateway.auth import mint_token
from moderation.policy import Policy
from workers.consumer import Worker

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

CONFIG = """
[namespaces.chat]
subscribe = "claims"
publish = true
moderation = "before"
app = "miel"
rate_per_s = 1
rate_burst = 2
max_bytes = 200

[namespaces.lobby]
subscribe = "open"
publish = true
moderation = "off"
history_len = 3

[namespaces.room]
subscribe = "open"
publish = true
moderation = "after"
presence = true

[namespaces.notes]
subscribe = "owner"

[namespaces.staff]
subscribe = "moderators"
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "namespaces.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(("text", "needle"), [
    ("[namespaces.chat\n", "not valid TOML"),
    ("[channels.chat]\n", "unknown top-level key"),
    ("[namespaces.Chat]\n", "a namespace name is"),
    ("[namespaces.chat]\nsubscribe = \"everyone\"\n", "subscribe"),
    ("[namespaces.chat]\npublsh = true\n", "publsh"),
    ("[namespaces.chat]\nsubscribe = \"visible\"\n", "built-in vybe namespace's rule"),
    ("[namespaces.user]\nsubscribe = \"open\"\n", "is fixed"),
    ("[namespaces.mod]\npublish = true\n", "is fixed"),
    ("[namespaces.chat]\napp = \"Miel App\"\n", "`app` is an app id"),
    ("[namespaces.chat]\nrate_per_s = 0\n", "must be positive"),
    ("[namespaces.chat]\nid_pattern = \"(\"\n", "not a regular expression"),
])
def test_a_bad_file_is_refused_at_start_naming_file_namespace_and_key(tmp_path: Path, text: str,
                                                                      needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        load_settings({"VYBE_NAMESPACES": path})
    assert "VYBE_NAMESPACES" in str(err.value) and needle in str(err.value)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({"VYBE_NAMESPACES": str(tmp_path / "missing.toml")})


def test_built_in_channels_are_the_default_namespaces_and_may_be_tuned(tmp_path: Path) -> None:
    ns = namespaces.load(None)
    assert ns.of("feed") is not None and ns.of("feed:x") is None
    assert ns.of("mod:flagged") is not None and ns.of("mod:other") is None
    assert ns.of("looproom:not-a-uuid") is None and ns.of("chat:a") is None
    tuned = namespaces.load(_write(tmp_path, "[namespaces.feed]\nhistory_len = 50\n[namespaces.chat]\n"),
                            history_len=1000, history_ttl_s=60)
    assert tuned.history_of("feed") == (50, 60) and tuned.history_of("vybe:x") == (1000, 60)
    assert tuned.of("chat:match-1") is not None and tuned.of("chat:has space") is None


async def _gateway(start_gateway: Any, tmp_path: Path, **overrides: Any) -> Any:
    return await start_gateway(namespaces=_write(tmp_path, CONFIG), **overrides)


async def test_subscribe_rules_open_claims_owner_moderators(start_gateway, connect, tmp_path) -> None:
    live = await _gateway(start_gateway, tmp_path)
    listed = mint_token(live.settings, "ann", channels=["chat:m1"])
    ann = await connect(live, listed)
    bob = await connect(live, live.token("bob"))
    mod = await connect(live, live.token("mia", "MODERATOR"))
    assert (await ann.ok("subscribe", channel="chat:m1"))["channel"] == "chat:m1"
    assert (await ann.call("subscribe", channel="chat:m2"))["code"] == "forbidden"
    assert (await bob.call("subscribe", channel="chat:m1"))["code"] == "forbidden"
    wildcard = await connect(live, mint_token(live.settings, "cy", channels=["chat:*"]))
    await wildcard.ok("subscribe", channel="chat:anything")
    await bob.ok("subscribe", channel="lobby:main")
    await bob.ok("subscribe", channel="notes:bob")
    assert (await bob.call("subscribe", channel="notes:bob:drafts"))["code"] == "forbidden"  # exactly the owner's
    assert (await bob.call("subscribe", channel="notes:ann"))["code"] == "forbidden"
    assert (await bob.call("subscribe", channel="staff:all"))["code"] == "forbidden"
    await mod.ok("subscribe", channel="staff:all")
    unknown = await bob.call("subscribe", channel="nope:1")
    assert unknown["code"] == "unknown_channel" and "chat:{id}" in unknown["message"]


async def test_publish_delivers_once_with_limits_and_idempotent_retries(start_gateway, connect, tmp_path) -> None:
    live = await _gateway(start_gateway, tmp_path)
    ann = await connect(live, live.token("ann"))
    bob = await connect(live, live.token("bob"))
    await bob.ok("subscribe", channel="lobby:main")
    assert (await ann.call("publish", channel="feed", data={"text": "hi"}))["code"] == "forbidden"
    assert (await ann.call("publish", channel="notes:ann", data={}))["code"] == "forbidden"
    sent = await ann.ok("publish", id="p-1", channel="lobby:main", data={"text": "hello", "n": 1})
    assert sent["state"] == "accepted" and sent["channel"] == "lobby:main" and not sent["replayed"]
    again = await ann.ok("publish", id="p-1", channel="lobby:main", data={"text": "hello", "n": 1})
    assert again["replayed"] and again["id"] == sent["id"]
    got = await bob.wait_for(lambda m: m.get("event") == "publication")
    assert got["data"] == {"id": sent["id"], "user_id": "ann", "data": {"text": "hello", "n": 1}}
    await asyncio.sleep(0.3)
    assert len(bob.events("publication")) == 1  # the retry published nothing

    # chat: 200 bytes at most, 1/s with bursts of 2 (claims: ann's token must list it).
    chat = await connect(live, mint_token(live.settings, "ann", channels=["chat:*"]))
    big = await chat.call("publish", channel="chat:m1", data={"text": "x" * 300})
    assert big["code"] == "content_too_long"
    codes = [(await chat.call("publish", channel="chat:m1", data={"text": f"m{i}"})).get("code") for i in range(4)]
    assert codes[:2] == [None, None] and "rate_limited" in codes[2:]
    limited = next(r for r in [await chat.call("publish", channel="chat:m1", data={"text": "again"})]
                   if r.get("code") == "rate_limited")
    assert 0 < limited["retry_after"] <= 1.0


async def _drain(live: Any, scorer: Any, mode: str = "flag") -> None:
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    w = Worker(s, gw.pool, gw.redis, scorer, Policy.from_settings(mode, ""), "w")
    await w.ensure_group()
    await asyncio.sleep(0.2)  # the outbox relay hands the jobs to Redis
    while await w.step():
        pass


async def test_held_publications_go_out_when_scored_clean_or_when_a_moderator_clears_them(
        start_gateway, connect, tmp_path, keyword_scorer) -> None:
    live = await _gateway(start_gateway, tmp_path)
    scorer = keyword_scorer({"creep": {"insult": 0.75}, "die": {"threat": 0.99}})
    ann = await connect(live, mint_token(live.settings, "ann", channels=["chat:m1"]))
    bob = await connect(live, mint_token(live.settings, "bob", channels=["chat:m1"]))
    mod = await connect(live, live.token("mia", "MODERATOR"))
    await bob.ok("subscribe", channel="chat:m1")
    await mod.ok("subscribe", channel="mod:flagged")
    fine = await ann.ok("publish", channel="chat:m1", data={"text": "see you at eight?"})
    rude = await ann.ok("publish", channel="chat:m1", data={"text": "you creep"})
    await asyncio.sleep(1.0)  # chat allows bursts of 2, then 1/s
    threat = await ann.ok("publish", channel="chat:m1", data={"text": "die tonight"})
    assert {fine["state"], rude["state"], threat["state"]} == {"held"}
    await asyncio.sleep(0.3)
    assert bob.events("publication") == []  # nothing goes out before it is scored
    await _drain(live, scorer, mode="hide")
    first = await bob.wait_for(lambda m: m.get("event") == "publication")
    assert first["data"]["id"] == fine["id"]
    await mod.wait_for(lambda m: m.get("event") == "report.flagged")
    await asyncio.sleep(0.3)
    cases = {c["content_id"]: c for c in (m["data"] for m in mod.events("report.flagged"))}
    assert set(cases) == {rude["id"], threat["id"]}
    case = cases[rude["id"]]
    assert case["app"] == "miel" and case["content_type"] == "chat" and case["channel"] == "chat:m1"
    assert case["text"] == "you creep" and case["author_id"] == "ann"
    outcome = await ann.wait_for(lambda m: m.get("event") == "moderation.outcome")
    assert outcome["data"]["target_id"] == threat["id"] and outcome["data"]["action"] == "hide"
    assert outcome["data"]["appealable"] is False  # appeals are for vybes and comments
    waiting = await ann.wait_for(lambda m: m.get("event") == "publication.held")
    assert waiting["data"] == {"id": rude["id"], "channel": "chat:m1", "waiting_for": "moderator"}
    assert [m["data"]["id"] for m in bob.events("publication")] == [fine["id"]]
    # The console filters by app.
    assert {v.content_id for v in await mdb.open_queue(live.gateway.pool, app="miel")} == {rude["id"], threat["id"]}
    assert await mdb.open_queue(live.gateway.pool, app="vybe") == []
    # A moderator dismisses the flag: the held message goes out, once.
    await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="dismiss")
    late = await bob.wait_for(lambda m: m.get("event") == "publication" and m["data"]["id"] == rude["id"])
    assert late["data"]["data"] == {"text": "you creep"}


async def test_after_mode_delivers_at_once_and_takes_back_what_the_model_hides(
        start_gateway, connect, tmp_path, keyword_scorer) -> None:
    live = await _gateway(start_gateway, tmp_path)
    ann = await connect(live, live.token("ann"))
    bob = await connect(live, live.token("bob"))
    await bob.ok("subscribe", channel="room:r1")
    bad = await ann.ok("publish", channel="room:r1", data={"text": "die tonight"})
    assert bad["state"] == "accepted"
    await bob.wait_for(lambda m: m.get("event") == "publication" and m["data"]["id"] == bad["id"])
    await _drain(live, keyword_scorer({"die": {"threat": 0.99}}), mode="hide")
    hidden = await bob.wait_for(lambda m: m.get("event") == "publication.hidden")
    assert hidden["data"] == {"id": bad["id"], "channel": "room:r1"}


async def test_presence_and_history_follow_the_namespace(start_gateway, connect, tmp_path) -> None:
    live = await _gateway(start_gateway, tmp_path, presence_interval_s=0.2)
    ann = await connect(live, live.token("ann"))
    bob = await connect(live, live.token("bob"))
    await ann.ok("subscribe", channel="room:r9")
    await bob.ok("subscribe", channel="room:r9")
    seen = await ann.wait_for(lambda m: m.get("event") == "room.presence" and m["data"]["viewers"] == 2)
    assert seen["data"] == {"channel": "room:r9", "room_id": "r9", "viewers": 2}
    # lobby keeps 3 events: a resume from before them is told recovered:false.
    await bob.ok("subscribe", channel="lobby:h")
    first = await ann.ok("publish", channel="lobby:h", data={"n": 0})
    offset = (await bob.wait_for(lambda m: m.get("event") == "publication" and m["data"]["id"] == first["id"]))
    await bob.ok("unsubscribe", channel="lobby:h")
    for i in range(1, 300):  # MAXLEN ~ trims whole nodes of 100 entries: go well past one
        await live.gateway.publisher.publish("lobby:h", "publication", {"n": i})
    stream = live.gateway.keys.stream("lobby:h")
    assert await live.gateway.redis.xlen(stream) <= 3 + 100
    resumed = await bob.ok("subscribe", channel="lobby:h", since=offset["offset"])
    assert resumed["recovered"] is False
    await ann.ok("subscribe", channel="feed")  # feed keeps the default 1,000: nothing trimmed there
    for i in range(300):
        await live.gateway.publisher.publish("feed", "test.n", {"n": i})
    # 300 events, and the resume point ann's subscribe marked in the empty feed
    assert await live.gateway.redis.xlen(live.gateway.keys.stream("feed")) == 301


DIGEST = """
[namespaces.feed]
delivery = "digest"
digest_interval_s = 0.4
digest_items = 2
"""


async def test_a_digest_feed_sends_one_frame_per_interval_in_order_with_take_downs(
        start_gateway, connect, tmp_path) -> None:
    live = await start_gateway(namespaces=_write(tmp_path, DIGEST))
    poster = await connect(live, live.token("poster"))
    other = await connect(live, live.token("other"))
    reader = await connect(live, live.token("reader"))
    blocker = await connect(live, live.token("blocker"))
    await blocker.ok("block", user_id="other")
    for c in (reader, blocker):
        await c.ok("subscribe", channel="feed")
    ids = [(await poster.ok("post_vybe", content=f"v{i}"))["id"] for i in range(4)]
    mine = await other.ok("post_vybe", content="from other")
    digest = await reader.wait_for(lambda m: m.get("event") == "feed.digest")
    assert digest["data"]["count"] == 5
    assert [i["data"]["id"] for i in digest["data"]["items"]] == [ids[3], mine["id"]]
    assert all(i["event"] == "vybe.created" and i["channel"] == "feed" for i in digest["data"]["items"])
    assert digest["offset"] == digest["data"]["items"][-1]["offset"]
    assert reader.events("vybe.created") == []  # nothing one by one
    theirs = await blocker.wait_for(lambda m: m.get("event") == "feed.digest")
    assert theirs["data"]["count"] == 4 and mine["id"] not in [i["data"]["id"] for i in theirs["data"]["items"]]
    # A take-down never overtakes the item it takes down: the pending digest goes first.
    fresh = await poster.ok("post_vybe", content="soon gone")
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.delete(f"/api/vybes/{fresh['id']}", headers={"authorization": f"Bearer {live.token('poster')}"})
        assert r.status_code in (200, 204), r.text
    gone = await reader.wait_for(lambda m: m.get("event") == "vybe.deleted")
    names = [m.get("event") for m in reader.messages if m.get("type") == "event"]
    assert names.index("vybe.deleted") > max(i for i, n in enumerate(names) if n == "feed.digest")
    last = [m for m in reader.messages if m.get("event") == "feed.digest"][-1]
    assert fresh["id"] in [i["data"]["id"] for i in last["data"]["items"]] and gone["data"]["id"] == fresh["id"]
    # The digest's offset is a resume point.
    again = await connect(live, live.token("reader"))
    resumed = await again.ok("subscribe", channel="feed", since=gone["offset"])
    assert resumed["recovered"] is True and resumed["missed"] == 0

"""Per-viewer rules at fan-out: PRIVATE, ANONYMOUS, blocks, moderators."""

from __future__ import annotations

import json

import pytest

from gateway.auth import mint_token

pytestmark = pytest.mark.anyio


async def _settle(*clients, marker: str = "sync") -> None:
    """Post a public marker from the first client and wait until the others have it: anything
    published before it has been delivered (one Redis connection keeps publish order)."""
    poster = clients[0]
    await poster.ok("post_vybe", content=f"marker {marker}")
    for c in clients[1:]:
        await c.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["content"] == f"marker {marker}")


async def test_private_goes_only_to_author(live, connect) -> None:
    """A PRIVATE vybe's event reaches its author's feed subscription and no one else's."""
    alice = await connect(live, live.token("alice"))
    bob = await connect(live, live.token("bob"))
    for c in (alice, bob):
        await c.ok("subscribe", channel="feed")
    await alice.ok("post_vybe", content="just for me", privacy_level="PRIVATE")
    await _settle(alice, bob)
    assert [e["data"]["content"] for e in alice.events("vybe.created")] == ["just for me", "marker sync"]
    assert [e["data"]["content"] for e in bob.events("vybe.created")] == ["marker sync"]


async def test_anonymous_author_never_in_frames_to_members(live, connect) -> None:
    """The author id of an anonymous vybe appears in no frame a non-moderator receives, its owner's ack included
    (it says `mine: true`, as reads do: an app showing the ack must not print the author on an anonymous post)."""
    author = await connect(live, mint_token(live.settings, "anon-author-7f3a", name="Ana"))
    viewer = await connect(live, live.token("viewer"))
    await viewer.ok("subscribe", channel="feed")
    vybe = await author.ok("post_vybe", content="something heavy today", is_anonymous=True)
    assert (vybe["user_id"], vybe.get("author_name"), vybe["mine"]) == (None, None, True)
    await viewer.ok("subscribe", channel=f"vybe:{vybe['id']}")
    await author.ok("comment", vybe_id=vybe["id"], content="replying anonymously", is_anonymous=True)
    await viewer.wait_for(lambda m: m.get("event") == "comment.created")
    await _settle(await connect(live, live.token("marker")), viewer)
    assert "anon-author-7f3a" not in json.dumps(viewer.messages)
    ev = viewer.events("vybe.created")[0]
    assert ev["data"]["user_id"] is None and ev["data"]["content"] == "something heavy today"


async def test_blocked_authors_are_filtered_and_blocks_propagate(live, connect) -> None:
    """After bob blocks alice, none of bob's sockets receive alice's posts; unblocking restores them."""
    alice = await connect(live, live.token("alice"))
    bob1 = await connect(live, live.token("bob"))
    bob2 = await connect(live, live.token("bob"))
    carol = await connect(live, live.token("carol"))
    for c in (bob1, bob2):
        await c.ok("subscribe", channel="feed")
    assert (await bob1.ok("block", user_id="alice"))["blocked"] == ["alice"]
    # bob2 learns the new list through the user:bob channel.
    await bob2.wait_for(lambda m: m.get("event") == "blocks.changed")
    await alice.ok("post_vybe", content="from alice while blocked")
    await alice.ok("post_vybe", content="from alice, anonymously", is_anonymous=True)
    await _settle(carol, bob1, bob2, marker="after-block")
    for c in (bob1, bob2):
        heard = [e["data"]["content"] for e in c.events("vybe.created")]
        # An anonymous post reaches a blocker: holding it back would tell them whose it is.
        assert "from alice while blocked" not in heard and "from alice, anonymously" in heard
    await bob1.ok("unblock", user_id="alice")
    await bob2.wait_for(lambda m: m.get("event") == "blocks.changed" and m["data"]["blocked"] == [])
    await alice.ok("post_vybe", content="from alice after unblock")
    for c in (bob1, bob2):
        await c.wait_for(
            lambda m: m.get("event") == "vybe.created" and m["data"]["content"] == "from alice after unblock")
    assert (await bob1.call("block", user_id="bob"))["code"] == "invalid_value"


async def test_blocked_users_rest_feed_excludes_them(live, connect) -> None:
    """The REST feed honours blocks and privacy like the socket does."""
    import httpx

    alice = await connect(live, live.token("alice"))
    bob = await connect(live, live.token("bob"))
    await alice.ok("post_vybe", content="public from alice")
    await alice.ok("post_vybe", content="private from alice", privacy_level="PRIVATE")
    await bob.ok("post_vybe", content="public from bob")
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.get("/api/feed", headers={"Authorization": f"Bearer {live.token('bob')}"})
        assert r.status_code == 200, r.text
        assert [v["content"] for v in r.json()["items"]] == ["public from bob", "public from alice"]
        await bob.ok("block", user_id="alice")
        r = await http.get("/api/feed", headers={"Authorization": f"Bearer {live.token('bob')}"})
        assert [v["content"] for v in r.json()["items"]] == ["public from bob"]
        r = await http.get("/api/feed")
        assert r.status_code == 401 and r.json()["code"] == "auth_required"


async def test_retry_is_acked_once_announced_once(live, connect) -> None:
    """A retried post (same id) acks the first result with replayed=true and publishes no second event."""
    poster = await connect(live, live.token("retrier"))
    watcher = await connect(live, live.token("watcher"))
    await watcher.ok("subscribe", channel="feed")
    first = await poster.ok("post_vybe", id="same-id", content="only once")
    again = await poster.ok("post_vybe", id="same-id", content="only once")
    assert again["id"] == first["id"] and again["replayed"] is True and "replayed" not in first
    await _settle(await connect(live, live.token("marker")), watcher, marker="after-retry")
    assert [e["data"]["content"] for e in watcher.events("vybe.created")] == ["only once", "marker after-retry"]
    jobs = await live.gateway.redis.xlen(live.gateway.keys.jobs)
    assert jobs == 2  # the vybe and the marker, not the retry


async def test_acks_never_reveal_an_anonymous_author(live, connect) -> None:
    """Reacting to, commenting on or sharing an anonymous vybe never tells the actor who wrote it."""
    author = await connect(live, live.token("secret-author-91"))
    actor = await connect(live, live.token("actor"))
    vybe = await author.ok("post_vybe", content="hard day", is_anonymous=True)
    await actor.ok("react", target_id=vybe["id"], reaction="HEART")
    await actor.ok("comment", vybe_id=vybe["id"], content="sending love")
    await actor.ok("share", vybe_id=vybe["id"])
    assert "secret-author-91" not in json.dumps(actor.messages)

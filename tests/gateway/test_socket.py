"""The socket protocol against a live gateway, real PostgreSQL and Redis."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio


async def test_post_reaches_feed_subscriber(live, connect) -> None:
    """A vybe posted on one socket arrives on another's feed subscription after the ack."""
    alice = await connect(live, live.token("alice"))
    bob = await connect(live, live.token("bob"))
    await bob.ok("subscribe", channel="feed")
    vybe = await alice.ok("post_vybe", content="Grateful for this morning's breathwork")
    ev = await bob.wait_for(lambda m: m.get("event") == "vybe.created")
    assert ev["channel"] == "feed" and ev["data"]["id"] == vybe["id"]
    assert ev["data"]["user_id"] == "alice"
    assert isinstance(ev["offset"], str) and ev["ts"] > 0


async def test_header_auth_and_ping(live, connect) -> None:
    """A token in the Authorization header authenticates without an auth frame."""
    c = await connect(live, live.token("carol"), header=True)
    r = await c.ok("ping")
    assert r["time"] > 0


async def test_react_counts_and_notifies_author(live, connect) -> None:
    """A reaction acks the new count, fans out on vybe:{id}, and notifies the author on user:{id}."""
    alice = await connect(live, live.token("alice"))
    bob = await connect(live, live.token("bob"))
    vybe = await alice.ok("post_vybe", content="Hit my 30-day streak")
    await alice.ok("subscribe", channel=f"vybe:{vybe['id']}")
    r = await bob.ok("react", target_id=vybe["id"], reaction="CLAP")
    assert r["applied"] is True and r["reaction_count"] == 1
    again = await bob.ok("react", target_id=vybe["id"], reaction="CLAP")
    assert again["applied"] is False and again["reaction_count"] == 1
    ev = await alice.wait_for(lambda m: m.get("event") == "reactions.changed" and m["channel"].startswith("vybe:"))
    assert ev["data"]["reaction_count"] == 1 and ev["data"]["user_id"] == "bob" and ev["data"]["added"] == 1
    note = await alice.wait_for(lambda m: m.get("event") == "reaction.added" and m["channel"] == "user:alice")
    assert note["data"]["user_id"] == "bob" and note["data"]["added"] == 1 and "removed" not in note["data"]

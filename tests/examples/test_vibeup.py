"""examples/vibeup: a community feed published by the backend; a member resumes with `since`; history."""

from __future__ import annotations

import pytest

from examples.vibeup.flow import run
from vybe_client import VybeServer

pytestmark = pytest.mark.anyio


async def test_a_member_who_was_away_resumes_where_she_left(example_env, connect) -> None:
    env = await example_env("flag")
    report = await run(env.config)
    assert report["ok"], report
    assert report["live_before_leaving"] == ["vibe.created"]
    assert report["resume"] == {"recovered": True, "missed": 2}
    assert report["missed_events_received"] == ["vibe.created", "reaction.added"]
    assert report["received_after_return"] == ["vibe.created (vibe 2)", "reaction.added (vibe 1)",
                                               "vibe.created (vibe 3)"]
    assert report["history_events"] == ["vibe.created", "vibe.created", "reaction.added", "vibe.created"]

    # The channel as Redis keeps it, read directly: the same four events.
    channel = f"community:{report['community_id']}"
    gw = env.live.gateway
    kept = await gw.redis.xrange(gw.keys.stream(channel))  # (and the resume point Sky's subscribe marked)
    assert sum(b"z" not in fields for _, fields in kept) == 4
    # An offset from the server API's history resumes a plain socket too (another reader, raw protocol).
    async with VybeServer(env.config.http, env.config.api_keys["vibeup"]) as api:
        first = (await api.history(channel, limit=4))["events"][0]
    reader = await connect(env.live, env.live.token("noor"))
    ack = await reader.ok("subscribe", channel=channel, since=first["offset"])
    assert ack["recovered"] is True and ack["missed"] == 3
    await reader.wait_for(lambda m: m.get("event") == "vibe.created" and m["data"]["content"].startswith("Who is"))
    assert [m["event"] for m in reader.events(channel=channel)] == ["vibe.created", "reaction.added", "vibe.created"]

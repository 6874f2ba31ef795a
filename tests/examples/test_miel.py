"""examples/miel: the match announced on both user channels, the moderated chat (before delivery)."""

from __future__ import annotations

import asyncio

import pytest

from db import moderation as mdb
from examples.miel.flow import FRIENDLY, HARASSMENT, run
from vybe_client import VybeServer

pytestmark = pytest.mark.anyio


async def test_match_chat_and_harassment_hidden_by_the_model(example_env, connect, pool) -> None:
    # hide mode: the blend scorer gives HARASSMENT toxicity and sexual_explicit of about 1.0, over their hide
    # thresholds (0.98 and 0.97), and FRIENDLY scores under every flag threshold.
    env = await example_env("hide")
    anns_laptop = await connect(env.live, env.live.token("ann"))  # a second socket of Ann's, not the example's
    report = await run(env.config)
    assert report["ok"], report
    assert report["match_notified"] == ["ann", "bob"] and report["match_retry_replayed"] is True
    assert report["friendly_state"] == "held" and report["friendly_delivered"] is True
    assert report["harassment_state"] == "held" and report["harassment_delivered"] is False
    assert report["harassment_outcome"] == "hide" and report["waiting_for_moderator"] is False
    assert report["case_app"] == "miel" and any(r.startswith("sexual_explicit") for r in report["case_reasons"])
    assert report["story_reaction_notified"] is True

    # Ann's other socket got the match once (the retry published nothing) and nothing of the chat it does not hold.
    match_id = report["match_id"]
    await asyncio.sleep(0.2)
    matches = anns_laptop.events("match.created")
    assert len(matches) == 1 and matches[0]["channel"] == "user:ann"
    assert matches[0]["data"] == {"matchId": match_id, "userIds": ["bob", "ann"], "with": {"bob": "ann", "ann": "bob"},
                                  "channel": f"chat:{match_id}"}

    # The moderators' queue, read from the database: one case, Miel's, naming the chat, the text and its author.
    cases = await mdb.open_queue(pool, app="miel")
    assert [(c.app, c.content_type, c.channel, c.author_id, c.text) for c in cases] == [
        ("miel", "chat", f"chat:{match_id}", "bob", HARASSMENT)]
    # The chat's history holds the friendly message only.
    async with VybeServer(env.config.http, env.config.api_keys["miel"]) as api:
        history = await api.history(f"chat:{match_id}")
    texts = [e["data"]["data"]["text"] for e in history["events"] if e["event"] == "publication"]
    assert texts == [FRIENDLY]


async def test_harassment_waits_for_a_moderator_in_flag_mode(example_env, pool) -> None:
    # flag mode (what `vybe dev` runs with the blend scorer): HARASSMENT is flagged, not hidden, so it stays held.
    env = await example_env("flag")
    report = await run(env.config)
    assert report["ok"], report
    assert report["harassment_delivered"] is False and report["harassment_outcome"] is None
    assert report["waiting_for_moderator"] is True and report["case_app"] == "miel"
    (case,) = await mdb.open_queue(pool, app="miel")
    async with VybeServer(env.config.http, env.config.api_keys["miel"]) as api:
        item = await api.moderation(case.target_id)
    assert item["state"] == "flagged" and item["held"] is True and item["decision"] == "flag"

"""examples/soulseer: viewer counts of a session room, chat moderated after delivery and taken back."""

from __future__ import annotations

import pytest

from db import moderation as mdb
from examples.soulseer.flow import ABUSE, THANKS, run
from vybe_client import VybeServer

pytestmark = pytest.mark.anyio


async def _history(env, channel: str) -> list[tuple[str, str]]:
    async with VybeServer(env.config.http, env.config.api_keys["soulseer"]) as api:
        history = await api.history(channel)
    return [(e["event"], e["data"].get("data", {}).get("text") if e["event"] == "publication" else e["data"]["id"])
            for e in history["events"] if e["event"].startswith("publication")]


async def test_session_room_presence_and_abuse_hidden_by_the_model(example_env, pool) -> None:
    # hide mode: the blend scorer gives ABUSE toxicity about 1.0 (hide threshold 0.98); THANKS passes.
    env = await example_env("hide")
    report = await run(env.config)
    assert report["ok"], report
    assert report["viewers_peak"] == 3 and report["backend_presence"] == 3
    assert report["chat_state"] == "accepted" and report["chat_delivered"] is True
    assert report["abuse_state"] == "accepted" and report["abuse_delivered_first"] is True
    assert report["taken_back_by"] == "model" and report["author_told"] == "hide"
    assert report["viewers_after_leave"] == report["backend_presence_after_leave"] == 2

    # The room's history: both messages went out, then the abuse was taken back.
    (case,) = await mdb.open_queue(pool, app="soulseer")
    assert (case.content_type, case.author_id, case.text) == ("session", "client-max", ABUSE)
    history = await _history(env, f"session:{report['session_id']}")
    assert history == [("publication", THANKS), ("publication", ABUSE), ("publication.hidden", case.content_id)]


async def test_in_flag_mode_a_moderator_takes_the_abuse_back(example_env, pool) -> None:
    env = await example_env("flag")
    report = await run(env.config)
    assert report["ok"], report
    assert report["taken_back_by"] == "moderator" and report["author_told"] == "hide"
    assert await mdb.open_queue(pool, app="soulseer") == []  # resolved
    (resolved,) = [c for c in await mdb.recently_resolved(pool, 10) if c.app == "soulseer"]
    assert resolved.resolution == "hide" and resolved.text == ABUSE

"""examples/opencircle: a space's post and nested replies, moderated as a service before the backend publishes."""

from __future__ import annotations

import asyncio

import pytest

from db import moderation as mdb
from examples.opencircle.flow import COMMENT, INSULT, REPLY, run
from vybe_client import VybeServer

pytestmark = pytest.mark.anyio


async def test_nested_reply_notifies_the_parent_comments_author_and_an_insult_is_not_published(
        example_env, connect, pool) -> None:
    # flag mode, as `vybe dev` runs: the blend scorer flags INSULT (toxicity and insult about 1.0) and approves
    # COMMENT and REPLY (every score under its flag threshold).
    env = await example_env("flag")
    leos_phone = await connect(env.live, env.live.token("leo"))  # other sockets of theirs, not the example's
    mayas_phone = await connect(env.live, env.live.token("maya"))
    report = await run(env.config)
    assert report["ok"], report
    assert report["post_seen_by"] == ["maya", "leo", "zoe"]
    assert report["comment_state"] == report["reply_state"] == "approved"
    assert report["reply_parent_id_is_comment"] is True and report["reply_notified"] == "leo"
    assert report["post_author_notified_of_reply"] is False
    assert report["insult_state"] == "flagged" and report["insult_published"] is False
    assert report["case_app"] == "opencircle"

    # The space's history: the post and the two approved comments, in order; the reply names its parent.
    async with VybeServer(env.config.http, env.config.api_keys["opencircle"]) as api:
        history = (await api.history(f"space:{report['space_id']}"))["events"]
    assert [(e["event"], e["data"].get("content")) for e in history] == [
        ("post.created", "What is one habit that changed your mornings?"),
        ("comment.created", COMMENT), ("comment.created", REPLY)]
    post, comment, reply = (e["data"] for e in history)
    assert comment["parent_id"] is None and reply["parent_id"] == comment["id"]
    assert comment["post_id"] == reply["post_id"] == post["id"]

    # Leo is told of Zoe's reply to his comment; Maya only of Leo's comment on her post.
    await asyncio.sleep(0.2)
    assert [e["data"]["comment_id"] for e in leos_phone.events("reply.notification")] == [reply["id"]]
    assert [e["data"]["comment_id"] for e in mayas_phone.events("reply.notification")] == [comment["id"]]
    assert leos_phone.events("reply.notification")[0]["channel"] == "user:leo"

    # The insult is a case of OpenCircle's in the console, not a publication.
    (case,) = await mdb.open_queue(pool, app="opencircle")
    assert (case.content_type, case.author_id, case.text, case.channel) == ("comment", "kai", INSULT, None)

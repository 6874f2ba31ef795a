"""OpenCircle (communities): a space's posts and nested replies, live; each comment moderated before it is published.

What it shows, as OpenCircle's backend and its members' apps would do it:

1. Maya, Leo and Zoe follow a space: their apps subscribe to ``space:<space id>`` (an ``open`` namespace; only
   OpenCircle's backend publishes there, with its API key).
2. Maya posts: the backend stores the post and publishes ``post.created`` to the space.
3. Leo comments on the post, then Zoe replies to Leo's comment. For each, the backend first moderates the text as a
   service (``POST /api/server/moderate`` with ``wait``, ``VybeServer.moderate``), and only when it is approved
   publishes ``comment.created`` (``post_id``, ``parent_id``) to the space and a ``reply.notification`` to the
   author of what it answers: the post's author for Leo's comment, the PARENT comment's author (Leo, not Maya)
   for Zoe's reply.
4. Kai replies to Zoe with an insult: the answer is ``flagged`` (``hidden`` in ``VYBE_MODERATION_MODE=hide``), so
   the backend publishes nothing; the case waits in Vybe's moderator console under app ``opencircle``.

Run: ``VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev``, then ``.venv/bin/python -m examples.opencircle``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from examples.common import Config, Inbox, ModeratorDesk

if TYPE_CHECKING:
    from vybe_client import VybeServer

COMMENT = "Totally agree, thanks for sharing this with the circle"
REPLY = "Great point, I tried this in my morning routine and it worked"
INSULT = "you are a pathetic moron and everyone here hates you"
"""The default scorer (blend) gives it toxicity and insult about 1.0; COMMENT and REPLY pass."""


class OpenCircleBackend:
    """The parts of OpenCircle's backend that talk to Vybe Live (its tables are dicts here)."""

    def __init__(self, api: VybeServer, space_id: str) -> None:
        self.api, self.space_id = api, space_id
        self.channel = f"space:{space_id}"
        self.posts: dict[str, dict[str, Any]] = {}
        self.comments: dict[str, dict[str, Any]] = {}

    async def create_post(self, author_id: str, title: str, content: str) -> dict[str, Any]:
        post: dict[str, Any] = {"id": str(uuid.uuid4()), "space_id": self.space_id, "author_id": author_id,
                                "title": title, "content": content, "content_format": "markdown"}
        self.posts[post["id"]] = post
        await self.api.publish([self.channel], "post.created", post, idempotency_key=f"post-{post['id']}")
        return post

    async def create_comment(self, post_id: str, author_id: str, content: str,
                             parent_id: str | None = None) -> tuple[dict[str, Any], str]:
        """Moderate, then publish if approved. Returns the comment and the moderation state (``approved``,
        ``flagged``, ``hidden``; ``pending`` when scoring took longer than the wait: the webhook tells later)."""
        comment: dict[str, Any] = {"id": str(uuid.uuid4()), "post_id": post_id, "parent_id": parent_id,
                                   "author_id": author_id, "content": content}
        self.comments[comment["id"]] = comment
        verdict = await self.api.moderate("comment", comment["id"], author_id, content, wait=True)
        if verdict["state"] != "approved":
            return comment, verdict["state"]  # not shown: a moderator decides (moderation.decided webhook)
        await self.api.publish([self.channel], "comment.created", comment, idempotency_key=f"comment-{comment['id']}")
        # Notify the author of what it answers: the parent comment's, else the post's.
        answered = self.comments[parent_id] if parent_id else self.posts[post_id]
        if answered["author_id"] != author_id:
            notification = {"id": str(uuid.uuid4()), "type": "reply", "title": f"{author_id} replied to you",
                            "body": content[:140], "link": f"/spaces/{self.space_id}/posts/{post_id}#{comment['id']}",
                            "post_id": post_id, "comment_id": comment["id"], "parent_id": parent_id}
            await self.api.publish([f"user:{answered['author_id']}"], "reply.notification", notification,
                                   idempotency_key=f"reply-notification-{comment['id']}")
        return comment, "approved"


async def run(config: Config) -> dict[str, Any]:
    space_id = str(uuid.uuid4())
    desk = ModeratorDesk(config)
    async with config.api("opencircle") as api:
        circle = OpenCircleBackend(api, space_id)
        maya, leo, zoe = (config.member(u, name=u.title()) for u in ("maya", "leo", "zoe"))
        maya_inbox, leo_inbox, zoe_inbox = Inbox(maya), Inbox(leo), Inbox(zoe)
        async with maya, leo, zoe:
            for member in (maya, leo, zoe):  # 1. they follow the space
                await member.subscribe(circle.channel)

            post = await circle.create_post("maya", "Morning routines", "What is one habit that changed your mornings?")
            comment, comment_state = await circle.create_comment(post["id"], "leo", COMMENT)
            reply, reply_state = await circle.create_comment(post["id"], "zoe", REPLY, parent_id=comment["id"])
            insult, insult_state = await circle.create_comment(post["id"], "kai", INSULT, parent_id=reply["id"])
            case = await desk.wait_for_case("opencircle", insult["id"], timeout=config.wait_s)

            seen_reply = await maya_inbox.wait_for("comment.created", channel=circle.channel,
                                                   where=lambda d: d["id"] == reply["id"], timeout=config.wait_s)
            leo_notified = await leo_inbox.wait_for("reply.notification", timeout=config.wait_s,
                                                    where=lambda d: d["comment_id"] == reply["id"])
            await asyncio.sleep(0.3)  # time for what should not arrive
            post_seen_by = [name for name, inbox in (("maya", maya_inbox), ("leo", leo_inbox), ("zoe", zoe_inbox))
                            if inbox.find("post.created", where=lambda d: d["id"] == post["id"])]
            maya_notified_of_reply = bool(maya_inbox.find("reply.notification",
                                                          where=lambda d: d["comment_id"] == reply["id"]))
            insult_seen = any(inbox.find("comment.created", where=lambda d: d["id"] == insult["id"])
                              for inbox in (maya_inbox, leo_inbox, zoe_inbox))
    report = {
        "space_id": space_id,
        "post_seen_by": post_seen_by,
        "comment_state": comment_state,
        "reply_state": reply_state,
        "reply_delivered": seen_reply is not None,
        "reply_parent_id_is_comment": seen_reply is not None and seen_reply.data["parent_id"] == comment["id"],
        "reply_notified": "leo" if leo_notified else None,
        "post_author_notified_of_reply": maya_notified_of_reply,
        "insult_state": insult_state,
        "insult_published": insult_seen,
        "case_app": case["app"] if case else None,
    }
    report["ok"] = (post_seen_by == ["maya", "leo", "zoe"] and comment_state == reply_state == "approved"
                    and report["reply_parent_id_is_comment"] and report["reply_notified"] == "leo"
                    and not maya_notified_of_reply and insult_state in ("flagged", "hidden") and not insult_seen
                    and report["case_app"] == "opencircle")
    return report

"""Miel (dating): a mutual like becomes a match both users see live; then they chat, moderated before delivery.

What it shows, as Miel's backend and two members' apps would do it:

1. Ann and Bob each hold a socket. Their tokens list no chat yet.
2. Ann likes Bob, Bob likes Ann back: a mutual match. Miel's backend stores it and publishes ONE
   ``match.created`` to both ``user:ann`` and ``user:bob`` through the server API, with an idempotency key
   (the retry it makes here publishes nothing: ``replayed: true``).
3. The backend mints each of them a fresh token whose ``channels`` claim lists ``chat:<match id>``; their apps
   hand it to the open socket (``refresh_token``) and subscribe. Nobody else may join that channel.
4. Bob writes a friendly message: ``chat`` is moderated ``before`` delivery, so the ack says ``held``, and Ann
   receives the ``publication`` once the model approves it.
5. Bob sends sexual harassment: it never reaches Ann. If the model hides it (``VYBE_MODERATION_MODE=hide``),
   Bob gets ``moderation.outcome``; if it flags it (the default), it waits for a moderator. Either way a case of
   app ``miel`` is in the moderator queue (``GET /api/mod/queue?app=miel``).
6. Ann reacts to Bob's story: the backend tells Bob on ``user:bob`` (``story.reaction``).

Run: ``VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev``, then ``.venv/bin/python -m examples.miel``.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

from examples.common import Config, Inbox, ModeratorDesk

if TYPE_CHECKING:
    from vybe_client import PublishAnswer, VybeServer

FRIENDLY = "Hi Ann, so happy we matched! Are you free for coffee on Friday?"
HARASSMENT = "send me nudes right now you slut"
"""The default scorer (blend) gives it toxicity and sexual_explicit about 1.0: flagged, and hidden in hide mode."""


class MielBackend:
    """The parts of Miel's backend that talk to Vybe Live (its database is two dicts here)."""

    def __init__(self, config: Config, api: VybeServer) -> None:
        self.config, self.api = config, api
        self.likes: set[tuple[str, str]] = set()  # Like(sourceUserId, targetUserId)
        self.chats: dict[str, list[str]] = {}  # user id -> the chat channels of their matches

    async def like(self, source_user_id: str, target_user_id: str) -> str | None:
        """A like; when the reverse like exists it is a match: returns its id, both users are told live."""
        self.likes.add((source_user_id, target_user_id))
        if (target_user_id, source_user_id) not in self.likes:
            return None
        match_id = f"m-{secrets.token_hex(6)}"
        for user_id in (source_user_id, target_user_id):
            self.chats.setdefault(user_id, []).append(f"chat:{match_id}")
        await self.announce_match(match_id, source_user_id, target_user_id)
        return match_id

    async def announce_match(self, match_id: str, a: str, b: str) -> PublishAnswer:
        """One publish, two channels. The idempotency key makes a retry (a timeout, a crash) safe."""
        return await self.api.publish(
            [f"user:{a}", f"user:{b}"], "match.created",
            {"matchId": match_id, "userIds": [a, b], "with": {a: b, b: a}, "channel": f"chat:{match_id}"},
            idempotency_key=f"match-{match_id}")

    def token(self, user_id: str, name: str) -> str:
        """What the app's "give me a Vybe token" endpoint answers: the member's chats listed, no others."""
        return self.config.token(user_id, name=name, channels=self.chats.get(user_id, []))

    async def react_to_story(self, story_id: str, owner_id: str, user_id: str, reaction_type: str) -> None:
        """StoryReaction(storyId, userId, reactionType) stored; the story's owner hears it live."""
        reaction_id = secrets.token_hex(8)  # the stored StoryReaction row's id: one per reaction given
        await self.api.publish([f"user:{owner_id}"], "story.reaction",
                               {"storyId": story_id, "userId": user_id, "reactionType": reaction_type},
                               # The key names this one reaction: a retry of it is safe, a later one (even the
                               # same type again) is a new event.
                               idempotency_key=f"story-reaction-{reaction_id}")


async def run(config: Config) -> dict[str, Any]:
    desk = ModeratorDesk(config)
    async with config.api("miel") as api:
        miel = MielBackend(config, api)
        ann, bob = config.member("ann", name="Ann"), config.member("bob", name="Bob")
        ann_inbox, bob_inbox = Inbox(ann), Inbox(bob)
        async with ann, bob:
            # 1-2. A mutual like: both users see the match at once.
            await miel.like("ann", "bob")
            match_id = await miel.like("bob", "ann")
            if match_id is None:
                return {"ok": False, "error": "no match"}
            retry = await miel.announce_match(match_id, "bob", "ann")  # as after a timeout: nothing goes out again
            notified = [user for user, inbox in (("ann", ann_inbox), ("bob", bob_inbox))
                        if await inbox.wait_for("match.created", where=lambda d: d["matchId"] == match_id,
                                                timeout=config.wait_s)]

            # 3. New tokens list the match's chat; the open sockets take them, then subscribe.
            chat = f"chat:{match_id}"
            await ann.refresh_token(miel.token("ann", "Ann"))
            await bob.refresh_token(miel.token("bob", "Bob"))
            await ann.subscribe(chat)
            await bob.subscribe(chat)

            # 4. A friendly message: held until scored, then delivered to Ann.
            friendly = await bob.publish(chat, {"text": FRIENDLY, "senderId": "bob", "recipientId": "ann"})
            delivered = await ann_inbox.wait_for("publication", channel=chat,
                                                 where=lambda d: d["id"] == friendly.id, timeout=config.wait_s)

            # 5. Harassment: never delivered; a case for Miel's moderators (hidden by the model, or waiting).
            rude = await bob.publish(chat, {"text": HARASSMENT, "senderId": "bob", "recipientId": "ann"})
            case = await desk.wait_for_case("miel", rude.id, timeout=config.wait_s)
            outcome = await bob_inbox.wait_for("moderation.outcome", where=lambda d: d["target_id"] == rude.id,
                                               timeout=1.0)

            # 6. A story reaction, told to the story's owner.
            story_id = f"st-{secrets.token_hex(4)}"
            await miel.react_to_story(story_id, "bob", "ann", "FIRE")
            reaction = await bob_inbox.wait_for("story.reaction", where=lambda d: d["storyId"] == story_id,
                                                timeout=config.wait_s)
            await asyncio.sleep(0.3)  # time for anything that should not arrive (a duplicate, the harassment)

            harassment_delivered = bool(ann_inbox.find("publication", where=lambda d: d["id"] == rude.id))
            match_events = {user: len(inbox.find("match.created", where=lambda d: d["matchId"] == match_id))
                            for user, inbox in (("ann", ann_inbox), ("bob", bob_inbox))}
    report = {
        "match_id": match_id,
        "match_notified": notified,
        "match_retry_replayed": retry["replayed"],
        "match_events_per_user": match_events,
        "friendly_state": friendly.state,
        "friendly_delivered": delivered is not None,
        "harassment_state": rude.state,
        "harassment_delivered": harassment_delivered,
        "harassment_outcome": outcome.data["action"] if outcome else None,
        "waiting_for_moderator": case is not None and outcome is None,
        "case_app": case["app"] if case else None,
        "case_reasons": case["reasons"] if case else None,
        "story_reaction_notified": reaction is not None,
    }
    report["ok"] = (notified == ["ann", "bob"] and retry["replayed"] and match_events == {"ann": 1, "bob": 1}
                    and report["friendly_delivered"] and not harassment_delivered and report["case_app"] == "miel"
                    and report["story_reaction_notified"])
    return report

"""VIBEUP: a community's live feed of vibes and reactions; a member who was away resumes where they left.

What it shows, as VIBEUP's backend and its members' apps would do it:

1. Sky opens a community's feed: her app subscribes to ``community:<community id>`` (an ``open`` namespace; only
   VIBEUP's backend publishes there, with its API key).
2. River shares a vibe: the backend stores it (``vibes``) and publishes ``vibe.created``; Sky sees it live.
3. Sky closes the app. The SDK knows the last offset she saw (``client.offset(channel)``); her app keeps it.
4. Meanwhile River shares another vibe and Noor reacts to River's first one (``reaction.added``).
5. Sky comes back: ``subscribe(channel, since=offset)``. The ack says ``recovered: true, missed: 2``, the two
   events follow in order, then live ones (River's third vibe) with no gap and no duplicate. Within one
   ``VybeClient`` the SDK does the same on its own after every reconnect (a lost network, a gateway restart).
6. The backend reads the channel's history through the server API (``GET /api/server/channels/{channel}/history``),
   all of it and since Sky's offset: what it kept for resumes (``history_len = 200`` for ``community``).

Run: ``VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev``, then ``.venv/bin/python -m examples.vibeup``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from examples.common import Config, Inbox

if TYPE_CHECKING:
    from vybe_client import Event, VybeServer


class VibeupBackend:
    """The parts of VIBEUP's backend that talk to Vybe Live (its tables are left out)."""

    def __init__(self, api: VybeServer, community_id: str) -> None:
        self.api, self.community_id = api, community_id
        self.channel = f"community:{community_id}"

    async def share_vibe(self, author_id: str, content: str) -> str:
        vibe_id = str(uuid.uuid4())
        vibe = {"id": vibe_id, "community_id": self.community_id, "author_id": author_id, "content": content}
        await self.api.publish([self.channel], "vibe.created", vibe, idempotency_key=f"vibe-{vibe_id}")
        return vibe_id

    async def react(self, vibe_id: str, user_id: str, reaction_type: str) -> None:
        """A row of ``vibe_reactions``: one per (vibe, user, type), hence the idempotency key."""
        await self.api.publish([self.channel], "reaction.added",
                               {"vibe_id": vibe_id, "user_id": user_id, "reaction_type": reaction_type},
                               idempotency_key=f"reaction-{vibe_id}-{user_id}-{reaction_type}")


def _names(events: list[Event]) -> list[str]:
    return [e.event for e in events]


async def run(config: Config) -> dict[str, Any]:
    community_id = str(uuid.uuid4())
    async with config.api("vibeup") as api:
        vibeup = VibeupBackend(api, community_id)
        channel = vibeup.channel

        # 1-2. Sky follows the feed live.
        sky = config.member("sky", name="Sky")
        inbox = Inbox(sky)
        async with sky:
            await sky.subscribe(channel)
            first = await vibeup.share_vibe("river", "Sunrise breathwork with the crew, feeling grounded")
            await inbox.wait_for("vibe.created", channel=channel, where=lambda d: d["id"] == first,
                                 timeout=config.wait_s)
            before = inbox.find("vibe.created", channel=channel)
            offset = sky.offset(channel)  # 3. what her app saves when it closes

        # 4. While she is away.
        second = await vibeup.share_vibe("river", "Day 12 of the gratitude journal streak")
        await vibeup.react(first, "noor", "heart")

        # 5. She comes back and resumes from her offset.
        sky = config.member("sky", name="Sky")
        inbox = Inbox(sky)
        async with sky:
            resumed = await sky.subscribe(channel, since=offset)
            missed = await inbox.wait_for("reaction.added", channel=channel, timeout=config.wait_s)
            missed_events = list(inbox.events)
            mark = inbox.mark()
            third = await vibeup.share_vibe("river", "Who is joining the Sunday beach cleanup?")
            live = await inbox.wait_for("vibe.created", channel=channel, where=lambda d: d["id"] == third,
                                        after=mark, timeout=config.wait_s)
            labels = {first: "vibe 1", second: "vibe 2", third: "vibe 3"}
            received_after_return = [f"{e.event} ({labels.get(str(e.data.get('id') or e.data.get('vibe_id')))})"
                                     for e in inbox.events]

        # 6. The backend reads the channel's history.
        history = await api.history(channel)
        since = await api.history(channel, since=offset)
    report = {
        "community_id": community_id,
        "live_before_leaving": _names(before),
        "resume": {"recovered": resumed.recovered, "missed": resumed.missed},
        "missed_events_received": _names(missed_events),
        "live_after_return": live is not None,
        "received_after_return": received_after_return,
        "history_events": [e["event"] for e in history["events"]],
        "history_since_offset": [e["event"] for e in since["events"]],
    }
    report["ok"] = (report["live_before_leaving"] == ["vibe.created"] and resumed.recovered is True
                    and resumed.missed == 2 and missed is not None
                    and report["missed_events_received"] == ["vibe.created", "reaction.added"]
                    and received_after_return == ["vibe.created (vibe 2)", "reaction.added (vibe 1)",
                                                  "vibe.created (vibe 3)"]
                    and report["history_events"] == ["vibe.created", "vibe.created", "reaction.added", "vibe.created"]
                    and since["recovered"] is True and len(since["events"]) == 3)
    return report

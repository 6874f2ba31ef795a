"""SoulSeer (consultations): a live session room with its viewer count, and chat moderated after delivery.

What it shows, as SoulSeer's backend and three members' apps would do it:

1. The backend mints the reader (Luna) and two clients (Ivy, Max) tokens whose ``channels`` claim lists
   ``session:<session id>`` (a ``claims`` namespace: only those it lists may join).
2. They join the room: ``session.presence`` counts 3 viewers, and the backend reads the same count through the
   server API (``GET /api/server/channels/session:<id>/presence``), say to show it in the readers' listing.
3. Ivy thanks the reader: ``session`` is moderated ``after`` delivery, so the ack says ``accepted`` and everyone
   has the message at once.
4. Max abuses the reader: delivered at once too, then taken back with ``publication.hidden`` (the apps remove
   it from the screen). The model hides it itself in ``VYBE_MODERATION_MODE=hide``; in the default flag mode it
   opens a case, and the example plays Vybe's moderator who hides it from the queue (``app=soulseer``).
5. The backend removes Max from the room (``POST /api/server/users/{id}/unsubscribe``; it also stops listing
   the room in his tokens): he leaves, and the viewer count drops to 2.

Run: ``VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev``, then ``.venv/bin/python -m examples.soulseer``.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from examples.common import Config, Inbox, ModeratorDesk

THANKS = "Thank you, the tarot reading really helped me tonight"
ABUSE = "you are a fraud and a liar, you stupid witch"
"""The default scorer (blend) gives it toxicity about 1.0 and insult 0.98: flagged, and hidden in hide mode."""


async def run(config: Config) -> dict[str, Any]:
    session_id = f"s-{secrets.token_hex(6)}"  # Session.sessionId
    room = f"session:{session_id}"
    desk = ModeratorDesk(config)
    async with config.api("soulseer") as api:
        # 1. Tokens list the session's room (a reader is a CREATOR in Vybe's roles).
        luna = config.member("reader-luna", name="Luna", role="CREATOR", channels=[room])
        ivy = config.member("client-ivy", name="Ivy", channels=[room])
        max_ = config.member("client-max", name="Max", channels=[room])
        luna_inbox, ivy_inbox, max_inbox = Inbox(luna), Inbox(ivy), Inbox(max_)
        async with luna, ivy, max_:
            # 2. Everyone joins; the live viewer count reaches 3, on the sockets and through the server API.
            for member in (luna, ivy, max_):
                await member.subscribe(room)
            full = await luna_inbox.wait_for("session.presence", channel=room, where=lambda d: d["viewers"] == 3,
                                             timeout=config.wait_s)
            presence = await api.presence(room)

            # 3. Chat is delivered at once (moderation after delivery).
            thanks = await ivy.publish(room, {"text": THANKS, "senderId": "client-ivy", "messageType": "TEXT"})
            thanks_seen = await luna_inbox.wait_for("publication", channel=room, where=lambda d: d["id"] == thanks.id,
                                                    timeout=config.wait_s)

            # 4. Abuse is delivered too, then taken back: by the model, or by a moderator from the queue.
            abuse = await max_.publish(room, {"text": ABUSE, "senderId": "client-max", "messageType": "TEXT"})
            abuse_seen = await luna_inbox.wait_for("publication", channel=room, where=lambda d: d["id"] == abuse.id,
                                                   timeout=config.wait_s)
            case = await desk.wait_for_case("soulseer", abuse.id, timeout=config.wait_s)
            hidden = await luna_inbox.wait_for("publication.hidden", channel=room,
                                               where=lambda d: d["id"] == abuse.id, timeout=1.0)
            taken_back_by = "model" if hidden else None
            if hidden is None and case is not None:
                await desk.resolve(case, "hide", note="abuse of a reader in a live session")
                hidden = await luna_inbox.wait_for("publication.hidden", channel=room,
                                                   where=lambda d: d["id"] == abuse.id, timeout=config.wait_s)
                taken_back_by = "moderator" if hidden else None
            ivy_told = await ivy_inbox.wait_for("publication.hidden", channel=room,
                                                where=lambda d: d["id"] == abuse.id, timeout=1.0)
            max_told = await max_inbox.wait_for("moderation.outcome", where=lambda d: d["target_id"] == abuse.id,
                                                timeout=1.0)

            # 5. The backend removes Max from the room: the count drops to 2.
            mark = luna_inbox.mark()
            await api.unsubscribe("client-max", [room])
            after = await luna_inbox.wait_for("session.presence", channel=room, where=lambda d: d["viewers"] == 2,
                                              after=mark, timeout=config.wait_s)
            presence_after = await api.presence(room)
            await asyncio.sleep(0.2)
            max_holds_room = room in max_.channels
    report = {
        "session_id": session_id,
        "viewers_peak": full.data["viewers"] if full else None,
        "backend_presence": presence["viewers"],
        "chat_state": thanks.state,
        "chat_delivered": thanks_seen is not None,
        "abuse_state": abuse.state,
        "abuse_delivered_first": abuse_seen is not None,
        "abuse_taken_back": hidden is not None and ivy_told is not None,
        "taken_back_by": taken_back_by,
        "author_told": max_told.data["action"] if max_told else None,
        "case_app": case["app"] if case else None,
        "viewers_after_leave": after.data["viewers"] if after else None,
        "backend_presence_after_leave": presence_after["viewers"],
        "removed_client_holds_room": max_holds_room,
    }
    report["ok"] = (report["viewers_peak"] == 3 and report["backend_presence"] == 3 and report["chat_delivered"]
                    and report["abuse_delivered_first"] and report["abuse_taken_back"]
                    and report["case_app"] == "soulseer" and report["viewers_after_leave"] == 2
                    and report["backend_presence_after_leave"] == 2 and not max_holds_room)
    return report

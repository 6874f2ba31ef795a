"""Events both gateways and workers publish, built the same way by both.

Works on any msgspec Struct with the named fields (the write path's rows), so
this pure library does not depend on the database package.
"""

from __future__ import annotations

from typing import Any

import msgspec

from moderation.bus import Meta, Publisher

LIVE_PRIVACY = ("PUBLIC", "ANONYMOUS")


def content_view(row: Any) -> dict[str, Any]:
    """The client-visible vybe or comment: the author is withheld when anonymous."""
    data: dict[str, Any] = msgspec.to_builtins(row)
    data.pop("vybe_author_id", None)
    if data.get("is_anonymous") or data.get("privacy_level") == "ANONYMOUS":
        data["user_id"] = None
    return data


def vybe_meta(author_id: str, privacy_level: str) -> Meta:
    """PRIVATE (and FRIENDS_ONLY, as we keep no friend graph) reach their author only."""
    return Meta(a=author_id, o=None if privacy_level in LIVE_PRIVACY else author_id)


async def publish_vybe_created(publisher: Publisher, vybe: Any) -> None:
    view, meta = content_view(vybe), vybe_meta(vybe.user_id, vybe.privacy_level)
    await publisher.publish("feed", "vybe.created", view, meta)
    if vybe.looproom_id:
        await publisher.publish(f"looproom:{vybe.looproom_id}", "vybe.created", view, meta)


async def publish_visibility(publisher: Publisher, kind: str, target_id: str, vybe_id: str | None,
                             looproom_id: str | None, event: str) -> None:
    """vybe.hidden / vybe.removed / vybe.restored (comment.* for comments) where viewers see it."""
    data = {"id": target_id, "target_type": kind}
    if kind == "shared_vybe":
        name = "vybe." + event
        await publisher.publish("feed", name, data)
        await publisher.publish(f"vybe:{target_id}", name, data)
        if looproom_id:
            await publisher.publish(f"looproom:{looproom_id}", name, data)
    elif vybe_id:
        await publisher.publish(f"vybe:{vybe_id}", "comment." + event, data)


async def publish_case(publisher: Publisher, event: str, case: Any) -> None:
    """A case change on mod:flagged (moderators only; the author is shown even when anonymous)."""
    await publisher.publish("mod:flagged", event, msgspec.to_builtins(case), Meta(m=True))

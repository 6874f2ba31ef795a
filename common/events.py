"""The events writes announce, built the same way by gateways and workers.

Each builder returns :class:`common.bus.Event` values: encoded once, stored in
the write's transaction (``db.outbox``), published after COMMIT. Works on any
msgspec Struct with the named fields (the write path's rows), so this pure
library does not depend on the database package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from common.bus import Event, Meta, event
from common.visibility import LIVE_PRIVACY, hides_author

if TYPE_CHECKING:
    from collections.abc import Sequence


def content_view(row: Any) -> dict[str, Any]:
    """The client-visible vybe or comment: the author is withheld when anonymous."""
    data: dict[str, Any] = msgspec.to_builtins(row)
    data.pop("vybe_author_id", None)
    if hides_author(bool(data.get("is_anonymous")), data.get("privacy_level")):
        data["user_id"] = None
        data.pop("author_name", None)
    return data


def vybe_meta(author_id: str, privacy_level: str, is_anonymous: bool = False) -> Meta:
    """PRIVATE (and FRIENDS_ONLY, as we keep no friend graph) reach their author only. Blockers of the author do
    not get it, unless it is anonymous (``common.visibility``: a block must not name an anonymous author)."""
    return Meta(a=None if hides_author(is_anonymous, privacy_level) else author_id,
                o=None if privacy_level in LIVE_PRIVACY else author_id)


def vybe_created(vybe: Any) -> list[Event]:
    """``vybe.created`` on the feed and on its looproom."""
    view, meta = content_view(vybe), vybe_meta(vybe.user_id, vybe.privacy_level, vybe.is_anonymous)
    out = [event("feed", "vybe.created", view, meta)]
    if vybe.looproom_id:
        out.append(event(f"looproom:{vybe.looproom_id}", "vybe.created", view, meta))
    return out


def comment_created(comment: Any) -> list[Event]:
    """``comment.created`` on its vybe, and to the vybe's author (unless it is theirs)."""
    view = content_view(comment)
    writer = None if comment.is_anonymous else comment.user_id  # blockers get anonymous comments (see vybe_meta)
    out = [event(f"vybe:{comment.shared_vybe_id}", "comment.created", view, Meta(a=writer))]
    author = comment.vybe_author_id
    if author and author != comment.user_id:
        out.append(event(f"user:{author}", "comment.created", view, Meta(a=writer, o=author)))
    return out


def publication(channel: str, publication_id: object, user_id: str, data: object) -> Event:
    """A client publication on ``channel`` (``publication``); blockers of its author do not get it."""
    return event(channel, "publication", {"id": str(publication_id), "user_id": user_id, "data": data},
                 Meta(a=user_id))


def publication_state(channel: str, publication_id: object, state: str) -> Event:
    """``publication.hidden`` / ``removed`` / ``restored``: take a delivered publication back, or return it."""
    return event(channel, f"publication.{state}", {"id": str(publication_id), "channel": channel})


def vybe_shared(result: Any, user_id: str) -> list[Event]:
    data = {"vybe_id": str(result.vybe_id), "share_count": result.share_count, "user_id": user_id}
    return [event(f"vybe:{result.vybe_id}", "vybe.shared", data, Meta(a=user_id))]


def reaction_channel(result: Any) -> str | None:
    """Where a reaction's count goes: its vybe (for comments, the comment's vybe) or its looproom."""
    if result.target_type == "SHARED_VYBE":
        return f"vybe:{result.target_id}"
    if result.target_type == "LOOPROOM":
        return f"looproom:{result.target_id}"
    vybe_id = getattr(result, "vybe_id", None)
    return f"vybe:{vybe_id}" if vybe_id else None


def reactions_changed(applied: Sequence[tuple[str, bool, Any]]) -> list[Event]:
    """One group commit's reactions, coalesced per target: one ``reactions.changed`` where the
    target is shown (its new count, how many were added and removed), and one
    ``reaction.added`` to its author when others added some. ``user_id`` and ``reaction``
    name the reactor when the event reports a single change (then the fan-out filter hides
    it from viewers who blocked them); they are null when it sums several.

    ``applied`` holds (user id, added, result) for each operation that took effect, in order.
    """
    by_target: dict[tuple[str, str], list[tuple[str, bool, Any]]] = {}
    for op in applied:
        by_target.setdefault((op[2].target_type, str(op[2].target_id)), []).append(op)
    out: list[Event] = []
    for ops in by_target.values():
        result = ops[-1][2]  # every result of a batch carries the count after its COMMIT
        channel = reaction_channel(result)
        if channel:
            data, meta = _reaction_data(result, ops)
            out.append(event(channel, "reactions.changed", data, meta))
        author = result.target_author_id
        others = [op for op in ops if op[1] and op[0] != author]
        if author and others:
            data, meta = _reaction_data(result, others)
            del data["removed"]
            out.append(event(f"user:{author}", "reaction.added", data,
                             Meta(a=meta.a if meta else None, o=author)))
    return out


def _reaction_data(result: Any, ops: list[tuple[str, bool, Any]]) -> tuple[dict[str, Any], Meta | None]:
    single = ops[0] if len(ops) == 1 else None
    added = sum(1 for op in ops if op[1])
    by_type: dict[str, int] = {}
    for op in ops:
        by_type[op[2].reaction_type] = by_type.get(op[2].reaction_type, 0) + (1 if op[1] else -1)
    data = {"target_type": result.target_type, "target_id": str(result.target_id),
            "reaction_count": result.reaction_count, "added": added, "removed": len(ops) - added,
            "by_type": {k: v for k, v in by_type.items() if v},
            "user_id": single[0] if single else None, "reaction": single[2].reaction_type if single else None}
    return data, Meta(a=single[0]) if single else None


def deleted(result: Any) -> list[Event]:
    """``vybe.deleted`` (feed, its channel, its looproom) or ``comment.deleted`` (its vybe's channel) after
    an author deleted their own content; ``ids`` lists every comment that went with it."""
    data = {"id": str(result.id), "target_type": result.kind, "ids": [str(i) for i in result.comment_ids]}
    if result.kind == "shared_vybe":
        meta = vybe_meta(result.author_id, result.privacy_level, result.is_anonymous)
        out = [event("feed", "vybe.deleted", data, meta), event(f"vybe:{result.id}", "vybe.deleted", data, meta)]
        if result.looproom_id:
            out.append(event(f"looproom:{result.looproom_id}", "vybe.deleted", data, meta))
        return out
    writer = None if result.is_anonymous else result.author_id
    return [event(f"vybe:{result.vybe_id}", "comment.deleted", data, Meta(a=writer))]


def blocks_changed(user_id: str, blocked: list[str]) -> list[Event]:
    """The new block list, to every socket of the user on every node (which filter by it)."""
    return [event(f"user:{user_id}", "blocks.changed", {"blocked": blocked}, Meta(o=user_id, b=list(blocked)))]


def visibility(kind: str, target_id: str, vybe_id: str | None, looproom_id: str | None, name: str,
               meta: Meta | None = None) -> list[Event]:
    """vybe.hidden / vybe.removed / vybe.restored (comment.* for comments) where viewers see it. ``meta``: a vybe's
    :func:`vybe_meta`, so that a private vybe's take-down reaches only those its creation reached (its author)."""
    data = {"id": target_id, "target_type": kind}
    if kind == "shared_vybe":
        out = [event("feed", "vybe." + name, data, meta), event(f"vybe:{target_id}", "vybe." + name, data, meta)]
        if looproom_id:
            out.append(event(f"looproom:{looproom_id}", "vybe." + name, data, meta))
        return out
    return [event(f"vybe:{vybe_id}", "comment." + name, data)] if vybe_id else []


EXCERPT_CHARS = 80


def excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str | None:
    """The start of a text, to name it in a notice ("your vybe 'Morning run...'")."""
    if text is None:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"


def outcome(user_id: str, data: dict[str, Any], name: str = "moderation.outcome") -> Event:
    """A moderation outcome told to one user (the author, or a reporter)."""
    return event(f"user:{user_id}", name, data, Meta(o=user_id))


def case_changed(name: str, case: Any) -> Event:
    """A case change on mod:flagged (moderators only; the author is shown even when anonymous)."""
    return event("mod:flagged", name, msgspec.to_builtins(case), Meta(m=True))


def care_opened(care: Any, message: str, resources: list[dict[str, str]]) -> list[Event]:
    """A self-harm disclosure: a caring notice to its author (``care.notice``, on their own channel) and
    the care case to moderators (``care.opened`` on mod:flagged). Nothing is hidden."""
    notice = {"target_type": care.target_type, "target_id": care.target_id, "message": message,
              "resources": resources}
    return [event(f"user:{care.author_id}", "care.notice", notice, Meta(o=care.author_id)),
            event("mod:flagged", "care.opened", msgspec.to_builtins(care), Meta(m=True))]


def care_closed(care: Any) -> list[Event]:
    """A care case closed by a moderator (``care.closed`` on mod:flagged)."""
    return [event("mod:flagged", "care.closed", msgspec.to_builtins(care), Meta(m=True))]


def care_claimed(care: Any) -> list[Event]:
    """A moderator reaching out on a care case (``care.claimed``), or letting it go (``care.released``: no
    ``claimed_by``), on mod:flagged."""
    name = "care.claimed" if care.claimed_by else "care.released"
    return [event("mod:flagged", name, msgspec.to_builtins(care), Meta(m=True))]

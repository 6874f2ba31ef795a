"""The messages the client hands to the app, and the protocol's enumerations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

VybeType = Literal["REFLECTION", "MILESTONE", "INSPIRATION", "GRATITUDE", "PROGRESS_UPDATE"]
PrivacyLevel = Literal["PUBLIC", "FRIENDS_ONLY", "PRIVATE", "ANONYMOUS"]
ReactionType = Literal["HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL"]
ReactableType = Literal["SHARED_VYBE", "COMMENT", "LOOPROOM"]
ReportTarget = Literal["SHARED_VYBE", "COMMENT", "USER", "shared_vybe", "comment", "user"]
ReportType = Literal["SPAM", "HARASSMENT", "INAPPROPRIATE_CONTENT", "SAFETY_CONCERN", "COPYRIGHT", "OTHER"]
AppealTarget = Literal["SHARED_VYBE", "COMMENT", "shared_vybe", "comment"]
Resolution = Literal["remove", "hide", "restore", "dismiss"]
ConnectionState = Literal["connecting", "live", "reconnecting", "offline", "closed"]
"""``status`` callbacks get one of these: ``connecting`` (an attempt starts), ``live`` (authenticated,
resubscribing), ``reconnecting`` (waiting ``detail`` seconds before the next attempt), ``offline`` (stopped
for good: ``detail`` says why), ``closed`` (``close()`` was called)."""


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class Event:
    """``{"type":"event", "channel", "offset", "event", "ts", "data"}``."""

    channel: str
    offset: str | None
    event: str
    ts: float | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Event:
        offset = msg.get("offset")
        return cls(channel=str(msg.get("channel") or ""), offset=offset if isinstance(offset, str) else None,
                   event=str(msg.get("event") or ""), ts=_float(msg.get("ts")), data=_dict(msg.get("data")))


@dataclass(frozen=True, slots=True)
class Notice:
    """``{"type":"notice", "code", "message", "data"}``: ``token_expiring``, ``gap``, ``going_away``."""

    code: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> Notice:
        return cls(code=str(msg.get("code") or ""), message=str(msg.get("message") or ""),
                   data=_dict(msg.get("data")))


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """A ``subscribe`` ack. ``recovered``: null without ``since``; true when the ``missed`` events
    follow (in order, before live ones); false when history no longer reaches back (refetch)."""

    channel: str
    recovered: bool | None
    missed: int

    @classmethod
    def from_result(cls, channel: str, result: dict[str, Any]) -> SubscribeResult:
        recovered = result.get("recovered")
        missed = result.get("missed")
        return cls(channel=str(result.get("channel") or channel),
                   recovered=recovered if isinstance(recovered, bool) else None,
                   missed=missed if isinstance(missed, int) else 0)


@dataclass(frozen=True, slots=True)
class PublishResult:
    """A ``publish`` ack: the publication's ``id`` (its ``publication`` event carries it); ``state``
    ``accepted`` (stored; delivered to every subscriber, you included, as a ``publication`` event) or
    ``held`` (stored; delivered once moderation allows it); ``replayed``: a retry with the same id,
    nothing published again."""

    channel: str
    id: str
    state: str
    replayed: bool = False

    @classmethod
    def from_result(cls, channel: str, result: dict[str, Any]) -> PublishResult:
        return cls(channel=str(result.get("channel") or channel), id=str(result.get("id") or ""),
                   state=str(result.get("state") or ""), replayed=result.get("replayed") is True)

"""The wire protocol: client commands in, acks, errors and events out.

Client frames are JSON text, one command per frame, decoded by one typed msgspec
decoder into a tagged union (tag field ``type``). Server frames are always a JSON
array of one or more messages, so several events ready together share a frame
and clients have one shape to parse. Evolve a type only by appending fields with
defaults. ``docs/protocol.md`` is the reference; a test replays its examples.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, cast

import msgspec

ReactionType = Literal["HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL"]
ReactableType = Literal["SHARED_VYBE", "COMMENT", "LOOPROOM"]
VybeType = Literal["REFLECTION", "MILESTONE", "INSPIRATION", "GRATITUDE", "PROGRESS_UPDATE"]
PrivacyLevel = Literal["PUBLIC", "FRIENDS_ONLY", "PRIVATE", "ANONYMOUS"]
ReportTarget = Literal["shared_vybe", "comment", "user"]
ReportType = Literal["SPAM", "HARASSMENT", "INAPPROPRIATE_CONTENT", "SAFETY_CONCERN", "COPYRIGHT", "OTHER"]
Resolution = Literal["remove", "hide", "restore", "dismiss"]

# Client request ids are echoed back; bounded so a client cannot make us echo megabytes.
Id = msgspec.Meta(max_length=64)


class Command(msgspec.Struct, tag_field="type", forbid_unknown_fields=False, kw_only=True):
    id: Annotated[str, Id] = ""
    """Client id of this command, echoed in its ack or error; also the idempotency key of writes."""


class Auth(Command, tag="auth", kw_only=True):
    token: str


class Subscribe(Command, tag="subscribe", kw_only=True):
    channel: str
    since: str | None = None


class Unsubscribe(Command, tag="unsubscribe", kw_only=True):
    channel: str


class PostVybe(Command, tag="post_vybe", kw_only=True):
    content: str
    vybe_type: VybeType = "REFLECTION"
    privacy_level: PrivacyLevel = "PUBLIC"
    is_anonymous: bool = False
    looproom_id: str | None = None
    loopchain_id: str | None = None


class CommentCmd(Command, tag="comment", kw_only=True):
    vybe_id: str
    content: str
    parent_id: str | None = None
    is_anonymous: bool = False


class React(Command, tag="react", kw_only=True):
    target_type: ReactableType = "SHARED_VYBE"
    target_id: str
    reaction: ReactionType


class Unreact(Command, tag="unreact", kw_only=True):
    target_type: ReactableType = "SHARED_VYBE"
    target_id: str
    reaction: ReactionType


class Share(Command, tag="share", kw_only=True):
    vybe_id: str


class ReportCmd(Command, tag="report", kw_only=True):
    target_type: ReportTarget
    target_id: str
    report_type: ReportType = "OTHER"
    description: str | None = None


class Block(Command, tag="block", kw_only=True):
    user_id: str


class Unblock(Command, tag="unblock", kw_only=True):
    user_id: str


class Ping(Command, tag="ping", kw_only=True):
    pass


class Claim(Command, tag="claim", kw_only=True):
    case_id: str
    version: int
    release: bool = False


class Resolve(Command, tag="resolve", kw_only=True):
    case_id: str
    version: int
    action: Resolution
    note: str | None = None


ClientCommand = (
    Auth | Subscribe | Unsubscribe | PostVybe | CommentCmd | React | Unreact | Share | ReportCmd
    | Block | Unblock | Ping | Claim | Resolve
)

COMMAND_TYPES: frozenset[str] = frozenset(
    t.__struct_config__.tag for t in ClientCommand.__args__
)


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    id: str
    result: object = None


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    id: str | None
    code: str
    message: str
    retry_after: float | None = None


class Notice(msgspec.Struct, tag="notice", tag_field="type", omit_defaults=True):
    """Connection-level information: hello, token_expiring, gap, going_away."""

    code: str
    message: str
    data: object = None


class ErrorCode:
    """Stable error codes (see docs/protocol.md)."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    INVALID_CONTENT = "invalid_content"
    FRAME_TOO_LARGE = "frame_too_large"
    BINARY_UNSUPPORTED = "binary_unsupported"
    RATE_LIMITED = "rate_limited"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    FORBIDDEN = "forbidden"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    UNKNOWN_CHANNEL = "unknown_channel"
    NOT_SUBSCRIBED = "not_subscribed"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode:
    """WebSocket close codes we send (1xxx are RFC 6455; 4xxx are ours)."""

    GOING_AWAY = 1001
    """Server shutting down or draining: reconnect (to another node) and resume."""
    POLICY = 1008
    TOO_BIG = 1009
    INTERNAL = 1011
    TRY_AGAIN = 1013
    AUTH_TIMEOUT = 4001
    """No valid ``auth`` within the auth timeout."""
    AUTH_INVALID = 4003
    """The token was rejected at connect."""
    TOKEN_EXPIRED = 4004
    """The token expired and no fresh one was sent in time."""
    SLOW_CONSUMER = 4008
    """The client did not read fast enough; its send queue overflowed. Reconnect and resume."""
    FLOOD = 4029
    """The client kept sending after repeated rate-limit errors."""


_decoder = msgspec.json.Decoder(ClientCommand)
_probe = msgspec.json.Decoder(dict[str, object])


class DecodeFailure(Exception):
    """A frame that is not a valid command; carries the error to send back."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.message)
        self.error = error


def decode_command(frame: str | bytes) -> ClientCommand:
    """Decode one client frame, or raise :class:`DecodeFailure` with a typed error."""
    try:
        return cast("ClientCommand", _decoder.decode(frame))
    except msgspec.ValidationError as err:
        raise DecodeFailure(_classify(frame, str(err))) from err
    except msgspec.DecodeError as err:
        raise DecodeFailure(_undecodable(frame, err)) from err


def _undecodable(frame: str | bytes, err: msgspec.DecodeError) -> Error:
    """Not JSON, or JSON whose text escapes a lone UTF-16 surrogate (``"\\ud800"``): that is
    valid JSON syntax but no Unicode text, so it is the content that is wrong, not the frame."""
    try:
        raw = json.loads(frame)
    except ValueError:
        return Error(None, ErrorCode.MALFORMED, f"frame is not valid JSON: {err}")
    cid = raw.get("id") if isinstance(raw, dict) else None
    cid = cid if isinstance(cid, str) and len(cid) <= 64 and _is_text(cid) else None
    return Error(cid, ErrorCode.INVALID_CONTENT, "text contains an unpaired surrogate escape (\\ud800 to \\udfff), "
                                                 "which is not Unicode text")


def _is_text(value: str) -> bool:
    return not any("\ud800" <= ch <= "\udfff" for ch in value)


def _classify(frame: str | bytes, message: str) -> Error:
    # Echo the client's id when the frame had one, so it can match the error.
    try:
        raw = _probe.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Error(None, ErrorCode.MALFORMED, "frame must be a JSON object with a `type` field")
    raw_id = raw.get("id")
    cid = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        return Error(cid, ErrorCode.UNKNOWN_TYPE, f"unknown command type {kind!r}; see docs/protocol.md")
    return Error(cid, ErrorCode.INVALID, f"invalid {kind}: {message}")


class _IdOnly(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(_IdOnly)


def peek_id(frame: str | bytes) -> str | None:
    """The client id of a frame we refuse without handling (rate limit), if it has a usable one."""
    try:
        cid = _id_decoder.decode(frame).id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return cid if cid is not None and len(cid) <= 64 else None


_encoder = msgspec.json.Encoder()


def encode(message: object) -> bytes:
    """Encode one server message (an element of a frame array)."""
    return _encoder.encode(message)


def frame(elements: list[bytes]) -> bytes:
    """Join encoded messages into one frame: always a JSON array."""
    return b"[" + b",".join(elements) + b"]"

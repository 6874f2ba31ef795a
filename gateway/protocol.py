"""The wire protocol: client commands in, acks, errors and events out.

Client frames are JSON text, one command per frame, decoded by one typed msgspec
decoder into a tagged union (tag field ``type``). Server frames are always a JSON
array of one or more messages, so several events ready together share a frame
and clients have one shape to parse. Evolve a type only by appending fields with
defaults. ``docs/protocol.md`` is the reference; a test replays its examples.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec

from common.errors import ErrorCode
from common.labels import AbuseLabel

ReactionType = Literal["HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL"]
ReactableType = Literal["SHARED_VYBE", "COMMENT", "LOOPROOM"]
VybeType = Literal["REFLECTION", "MILESTONE", "INSPIRATION", "GRATITUDE", "PROGRESS_UPDATE"]
PrivacyLevel = Literal["PUBLIC", "FRIENDS_ONLY", "PRIVATE", "ANONYMOUS"]
ReportTarget = Literal["SHARED_VYBE", "COMMENT", "USER", "shared_vybe", "comment", "user"]
ReportType = Literal["SPAM", "HARASSMENT", "INAPPROPRIATE_CONTENT", "SAFETY_CONCERN", "COPYRIGHT", "OTHER"]
Resolution = Literal["remove", "hide", "restore", "dismiss"]

# Client request ids are echoed back; bounded so a client cannot make us echo megabytes.
Id = msgspec.Meta(max_length=64, pattern=r"^[^\x00]*$")

# Stored text: at least one character that is not white space, no NUL (PostgreSQL text cannot
# hold it), at most the database's limit in code points. Written so a regex engine runs it in
# linear time. A deployment may lower the limits (VYBE_MAX_*_CHARS): that is `content_too_long`.
# "White space" is ASCII's (as db.writes.validate.BLANK): JSON Schema's ``\s`` and Python's differ.
_TEXT = TEXT_PATTERN = r"^[ \t\n\r\f\v]*[^ \t\n\r\f\v\x00][^\x00]*$"
VybeText = Annotated[str, msgspec.Meta(max_length=5000, pattern=_TEXT)]
CommentText = Annotated[str, msgspec.Meta(max_length=2000, pattern=_TEXT)]
Description = Annotated[str, msgspec.Meta(max_length=1000, pattern=r"^[^\x00]*$")]
Note = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^[^\x00]*$")]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]
Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
TEXT_FIELDS = frozenset({"content", "description", "note", "message", "statement"})


class Request(msgspec.Struct, forbid_unknown_fields=False, kw_only=True):
    """What every command carries. A REST request body is the command without ``type``
    (and without the fields its path names): the same struct, so both doors agree."""

    id: Annotated[str, Id] = ""
    """Your id for this command, echoed in its ack or error. For writes it is also the
    idempotency key (kept 24 h): a retry with the same id returns the first result with
    ``replayed: true``. Optional: without it nothing is deduplicated and the answer's id is ``""``."""


class PostVybeBody(Request, kw_only=True):
    content: VybeText
    """1 to ``VYBE_MAX_VYBE_CHARS`` (5,000) code points, not blank, no NUL."""
    vybe_type: VybeType = "REFLECTION"
    privacy_level: PrivacyLevel = "PUBLIC"
    """PRIVATE and FRIENDS_ONLY reach only you (there is no friend graph yet). ANONYMOUS is
    PUBLIC with your id withheld from everyone else, as ``is_anonymous: true`` is."""
    is_anonymous: bool = False
    looproom_id: str | None = None
    loopchain_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]*$")] | None = None


class CommentBody(Request, kw_only=True):
    content: CommentText
    """1 to ``VYBE_MAX_COMMENT_CHARS`` (2,000) code points, not blank, no NUL."""
    parent_id: str | None = None
    """The comment this replies to (on the same vybe)."""
    is_anonymous: bool = False


class ReactBody(Request, kw_only=True):
    target_type: ReactableType = "SHARED_VYBE"
    target_id: str
    reaction: ReactionType


class ReportBody(Request, kw_only=True):
    target_type: ReportTarget
    """``SHARED_VYBE``, ``COMMENT`` or ``USER`` (the lower-case forms are accepted too)."""
    target_id: UserId
    report_type: ReportType = "OTHER"
    description: Description | None = None
    """Up to 1,000 code points."""


class ClaimBody(Request, kw_only=True):
    version: Version
    """The case's ``version`` as you last saw it; a stale one is a ``conflict``."""
    release: bool = False


class ResolveBody(Request, kw_only=True):
    version: Version
    action: Resolution
    note: Note | None = None
    """Internal: kept on the case and in the audit log for other moderators. The author never sees it."""
    message: Note | None = None
    """Optional, for the author: sent with the outcome in their ``moderation.outcome`` event."""
    labels: Annotated[list[AbuseLabel], msgspec.Meta(max_length=7)] | None = None
    """For ``hide`` and ``remove``: which abuse labels apply. The decision trains the model
    (``vybe moderation retrain``); omitted, the labels the model flagged count as confirmed, and for
    content only members reported, the reports' types. Ignored for ``dismiss`` and ``restore``
    (they say the content is fine)."""


AppealTarget = Literal["SHARED_VYBE", "COMMENT", "shared_vybe", "comment"]
Statement = Annotated[str, msgspec.Meta(max_length=1000, pattern=_TEXT)]


class AppealBody(Request, kw_only=True):
    """The author of a hidden or removed vybe or comment asks for another look, once."""

    target_type: AppealTarget
    target_id: str
    statement: Statement
    """Why the decision is wrong, in your words: 1 to 1,000 code points. The moderator who decides reads it."""


class ClaimCareBody(Request, kw_only=True):
    """Reach out on a care case, or let it go (REST ``POST /api/mod/care/{care_id}/claim``)."""

    version: Version
    """The care case's ``version`` as you last saw it; a stale one is a ``conflict``."""
    release: bool = False


class CloseCareBody(Request, kw_only=True):
    """Close a care case (REST ``POST /api/mod/care/{care_id}/close``)."""

    version: Version
    note: Note | None = None
    """What was done (kept in the audit log; the author never sees it)."""


class Auth(Request, tag_field="type", tag="auth", kw_only=True):
    token: str


class Subscribe(Request, tag_field="type", tag="subscribe", kw_only=True):
    channel: str
    since: str | None = None


class Unsubscribe(Request, tag_field="type", tag="unsubscribe", kw_only=True):
    channel: str


class PostVybe(PostVybeBody, tag_field="type", tag="post_vybe", kw_only=True):
    pass


class CommentCmd(CommentBody, tag_field="type", tag="comment", kw_only=True):
    vybe_id: str


class React(ReactBody, tag_field="type", tag="react", kw_only=True):
    pass


class Unreact(ReactBody, tag_field="type", tag="unreact", kw_only=True):
    pass


class Share(Request, tag_field="type", tag="share", kw_only=True):
    vybe_id: str


class ReportCmd(ReportBody, tag_field="type", tag="report", kw_only=True):
    pass


class Block(Request, tag_field="type", tag="block", kw_only=True):
    user_id: UserId


class Unblock(Request, tag_field="type", tag="unblock", kw_only=True):
    user_id: UserId


class Ping(Request, tag_field="type", tag="ping", kw_only=True):
    pass


class AppealCmd(AppealBody, tag_field="type", tag="appeal", kw_only=True):
    pass


class ReopenBody(Request, kw_only=True):
    """Undo a resolution (the case's current ``version``): the case is open again."""

    version: Version


class Reopen(ReopenBody, tag_field="type", tag="reopen", kw_only=True):
    case_id: str


class Claim(ClaimBody, tag_field="type", tag="claim", kw_only=True):
    case_id: str


class Resolve(ResolveBody, tag_field="type", tag="resolve", kw_only=True):
    case_id: str


class Publish(Request, tag_field="type", tag="publish", kw_only=True):
    """Publish on a channel of a namespace that lets clients publish (``publish = true``)."""

    channel: str
    data: Any
    """Any JSON value up to the namespace's ``max_bytes``. On a moderated namespace its ``text`` field
    (the namespace's ``text_field``) is scored: see the namespace's ``moderation``."""


class Publication(msgspec.Struct, kw_only=True):
    """``publish``'s ack result."""

    channel: str
    id: str
    """The publication's id: its ``publication`` event carries it (and ``publication.hidden`` names it)."""
    state: Literal["accepted", "held"]
    """``accepted``: stored, and delivered to the channel's subscribers (you too, if subscribed) as a
    ``publication`` event; ``held``: stored, and delivered once the moderation model approves it (or
    a moderator does): until then nobody sees it, and if it is refused you get ``moderation.outcome``."""
    replayed: bool = False
    """A retry (same ``id``) of a publish that was accepted before: nothing was published again."""


ClientCommand = (
    Auth | Subscribe | Unsubscribe | PostVybe | CommentCmd | React | Unreact | Share | ReportCmd
    | Block | Unblock | Ping | AppealCmd | Claim | Resolve | Reopen | Publish
)

COMMAND_TYPES: frozenset[str] = frozenset(
    t.__struct_config__.tag for t in ClientCommand.__args__
)


class AuthResult(msgspec.Struct, kw_only=True):
    """The ``auth`` ack's result; also sent, with ``id: ""``, after a header-token connect."""

    user_id: str
    role: Literal["MEMBER", "CREATOR", "MODERATOR", "ADMIN"]
    expires_at: float
    """The token's ``exp`` (epoch seconds): send ``auth`` with a fresh token before it."""
    blocked: list[str] = msgspec.field(default_factory=list)
    """Your block list (``blocks.changed`` brings later changes)."""


class Subscribed(msgspec.Struct, kw_only=True, omit_defaults=True):
    channel: str
    recovered: bool | None
    """With ``since``: true when every missed event follows the ack (in order, before live ones);
    false when history no longer reaches back (refetch over REST). Without ``since``: null."""
    missed: int
    """How many missed events follow the ack."""
    offset: str | None = None
    """Without ``since``, or with one history no longer reaches (``recovered: false``): the channel's newest
    offset as you joined (null: it has no history yet). Keep it as the channel's offset until an event brings
    a newer one, so a reconnect before the next event resumes with ``since`` and misses nothing (and does not
    send the lost offset again)."""


class Unsubscribed(msgspec.Struct, kw_only=True):
    channel: str


class Pong(msgspec.Struct, kw_only=True):
    time: float
    """Server time, epoch seconds."""


class Ack(msgspec.Struct, tag="ack", tag_field="type"):
    """A command succeeded (for a write: after COMMIT). ``result``'s type depends on the command:
    see ``ack_results`` in the protocol schema."""

    id: str
    result: Any = None


class Error(msgspec.Struct, tag="error", tag_field="type", omit_defaults=True):
    """A command, or a frame, was refused. ``id`` is the command's id when the frame parsed far
    enough to have one, else null."""

    id: str | None
    code: str
    """A code of the error catalog (docs/protocol.md, "Errors")."""
    message: str
    retry_after: float | None = None
    """Seconds to wait before retrying, where waiting helps."""


class Notice(msgspec.Struct, tag="notice", tag_field="type", omit_defaults=True):
    """Connection-level information: ``token_expiring``, ``gap``, ``going_away``."""

    code: Literal["token_expiring", "gap", "going_away"]
    message: str
    data: Any = None


EVENT_NAMES = (
    "vybe.created", "vybe.shared", "vybe.hidden", "vybe.removed", "vybe.restored", "comment.created",
    "comment.hidden", "comment.removed", "comment.restored", "reactions.changed", "reaction.added",
    "looproom.presence", "moderation.outcome", "blocks.changed", "report.flagged", "report.resolved", "case.claimed",
    "case.released", "case.rescored", "case.appealed", "case.reopened", "care.notice", "vybe.deleted",
    "comment.deleted", "care.opened", "care.closed", "care.claimed", "care.released", "publication",
    "publication.hidden", "publication.removed", "publication.restored", "publication.held", "<namespace>.presence",
    "<namespace>.digest", "session.disconnected", "subscriptions.revoked",
)


class Event(msgspec.Struct, tag="event", tag_field="type"):
    """Something happened on a channel you hold. The hub writes these bytes itself (the body
    is encoded once per event); this struct is their schema."""

    channel: str
    offset: str
    """Opaque: keep the last one per channel and pass it back as ``since``."""
    event: str
    """One of ``EVENT_NAMES`` today; ignore names you do not know (new ones may be added)."""
    ts: float
    """When the event was stored, in the transaction of the write it announces (epoch seconds)."""
    data: Any


ServerMessage = Ack | Error | Notice | Event


class CloseCode:
    """WebSocket close codes we send (1xxx are RFC 6455; 4xxx are ours)."""

    GOING_AWAY = 1001
    """Server shutting down or draining: reconnect (to another node) and resume."""
    DISCONNECTED = 4010
    """The app's backend disconnected this user (server API): reconnect only with a new token."""
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
        return _decoder.decode(frame)
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
    try:
        raw = _probe.decode(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Error(None, ErrorCode.MALFORMED, "frame must be a JSON object with a `type` field")
    return refusal(raw, message)


def refusal(raw: dict[str, object], message: str) -> Error:
    """The error for a frame that decoded to a map but is no valid command (either format):
    an unknown ``type``, or the field that failed (``message``, msgspec's). Echoes the client's
    id when the frame had one, so it can match the error."""
    raw_id = raw.get("id")
    cid = raw_id if isinstance(raw_id, str) and len(raw_id) <= 64 else None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in COMMAND_TYPES:
        return Error(cid, ErrorCode.UNKNOWN_TYPE, f"unknown command type {kind!r}; see docs/protocol.md")
    code = invalid_code(message)
    return Error(cid, code, f"invalid {kind}: {_HUMAN.get(code, message)}")


_HUMAN = {ErrorCode.INVALID_CONTENT: "text must hold a character that is not white space, and no NUL",
          ErrorCode.CONTENT_TOO_LONG: "text is over its length limit (code points)"}


def invalid_code(message: str, field: str | None = None) -> str:
    """The code of a field that fails its constraint (msgspec's ``message``): a stored text field
    too long is ``content_too_long``, one blank or holding NUL ``invalid_content``, else ``invalid``."""
    if field is None and "at `$." in message:
        field = message.rsplit("at `$.", 1)[1].rstrip("`")
    if field in TEXT_FIELDS:
        if "length <=" in message:
            return ErrorCode.CONTENT_TOO_LONG
        if "matching regex" in message:
            return ErrorCode.INVALID_CONTENT
    return ErrorCode.INVALID


class IdOnly(msgspec.Struct):
    id: str | None = None


_id_decoder = msgspec.json.Decoder(IdOnly)


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


def ack_results() -> dict[str, type[msgspec.Struct]]:
    """The type of each command's ``Ack.result``."""
    # Imported here: the protocol module loads without the database package.
    from db import moderation as mdb
    from db import writes

    return {
        "auth": AuthResult, "subscribe": Subscribed, "unsubscribe": Unsubscribed, "ping": Pong,
        "post_vybe": writes.Vybe, "comment": writes.CommentView, "react": writes.ReactionView,
        "unreact": writes.ReactionView, "share": writes.ShareView, "report": writes.ReportResult,
        "block": writes.BlockList, "unblock": writes.BlockList, "claim": mdb.CaseAck, "resolve": mdb.CaseAck,
        "appeal": mdb.AppealView, "reopen": mdb.CaseAck, "publish": Publication,
    }


def json_schema() -> dict[str, object]:
    """The socket protocol as a JSON Schema (draft 2020-12), from these structs.

    ``$defs.ClientCommand`` is one client frame; ``$defs.ServerFrame`` one server frame (an
    array of ``$defs.ServerMessage``); ``ack_results`` names each command's result type.
    Served at ``/schema/protocol.json``.
    """
    from db.learning import CareCase  # an event's data, not an ack: named so the doc can point at it

    results = ack_results()
    (client, server, *_), defs = msgspec.json.schema_components(
        [ClientCommand, ServerMessage, *results.values(), CareCase], ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "/schema/protocol.json",
        "title": "Vybe Live WebSocket protocol",
        "description": "Client frames are one ClientCommand each; server frames are a ServerFrame "
                       "(a JSON array of ServerMessage). See docs/protocol.md.",
        "$defs": {**defs, "ClientCommand": client, "ServerMessage": server,
                  "ServerFrame": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/ServerMessage"}}},
        "ack_results": {cmd: {"$ref": f"#/$defs/{kind.__name__}"} for cmd, kind in results.items()},
        "oneOf": [{"$ref": "#/$defs/ClientCommand"}, {"$ref": "#/$defs/ServerFrame"}],
    }

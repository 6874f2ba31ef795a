"""The error catalog: every error code a client can receive, over the socket or REST.

One entry per code: the HTTP status REST answers with, whether the error carries
``retry_after`` (waiting helps), where it can occur, what it means and what the
client should do. The socket's errors, REST's statuses and the OpenAPI
``responses``, and the table in ``docs/protocol.md`` (a test compares it with
:func:`markdown_table`) all come from here; nothing else maps codes to statuses.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Where = Literal["socket", "rest", "both"]


class ErrorKind(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    status: int
    """The HTTP status of this error on REST (the socket sends only the code)."""
    meaning: str
    action: str
    retry: bool = False
    """The error carries ``retry_after`` (seconds): the same request may succeed after it."""
    where: Where = "both"


class ErrorBody(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The body of every REST error (the socket's ``error`` frame has the same fields, plus ``id``)."""

    code: str
    """A stable code from the error catalog (docs/protocol.md, "Errors")."""
    message: str
    """For people: what was wrong; may change between versions."""
    retry_after: float | None = None
    """Seconds to wait before retrying, where waiting helps (also sent as the ``Retry-After`` header)."""


def _kind(code: str, status: int, meaning: str, action: str, *, retry: bool = False,
          where: Where = "both") -> ErrorKind:
    return ErrorKind(code=code, status=status, meaning=meaning, action=action, retry=retry, where=where)


CATALOG: dict[str, ErrorKind] = {k.code: k for k in (
    _kind("malformed", 400, "not JSON, or not a JSON object", "fix the client"),
    _kind("unknown_type", 400, "no such command `type`", "check `type`", where="socket"),
    _kind("invalid", 422, "a field is missing, or has the wrong type, length or value (`message` names it); "
          "includes a query parameter out of range", "fix the request"),
    _kind("invalid_content", 422, "text that is empty, holds NUL, or is not Unicode (an unpaired surrogate "
          "escape such as `\"\\ud800\"`)", "fix the text"),
    _kind("content_too_long", 422, "text over its length limit, in code points (`VYBE_MAX_VYBE_CHARS`, "
          "`VYBE_MAX_COMMENT_CHARS`, 1,000 for a report's description)", "shorten the text"),
    _kind("invalid_value", 422, "a value the server refuses although its type fits (e.g. `block` of yourself)",
          "read `message`"),
    _kind("invalid_parent", 422, "a reply whose `parent_id` is a comment on another vybe",
          "reply on the parent's vybe"),
    _kind("invalid_cursor", 422, "a `cursor` (or the queues' `after`) that no page returned",
          "start again without it",
          where="rest"),
    _kind("frame_too_large", 413, "a frame over `VYBE_MAX_FRAME_BYTES` (REST: a request body over 10 MB)",
          "send less; do not retry as is"),
    _kind("binary_unsupported", 400, "a binary frame", "send JSON text", where="socket"),
    _kind("rate_limited", 429, "too many commands on this connection", "wait `retry_after` seconds",
          retry=True, where="socket"),
    _kind("auth_required", 401, "a command before `auth` (REST: no `Authorization: Bearer` header)",
          "authenticate"),
    _kind("auth_failed", 401,
          "a token with a bad signature, algorithm, audience, issuer or claims, or longer than 16,384 characters",
          "get a new token"),
    _kind("token_expired", 401, "a token past its `exp`", "get a new token"),
    _kind("forbidden", 403, "your role or relation to the target does not allow this", "do not retry"),
    _kind("not_found", 404, "no such vybe, comment, looproom, user or case, or one you may not see "
          "(REST: also no such path)", "do not retry"),
    _kind("method_not_allowed", 405, "the path exists but not with this HTTP method (see `Allow`)",
          "use a method from `Allow`", where="rest"),
    _kind("unknown_channel", 400, "not a channel name", "see Channels", where="socket"),
    _kind("too_many_subscriptions", 409, "over `VYBE_MAX_SUBSCRIPTIONS`", "unsubscribe first", where="socket"),
    _kind("not_subscribed", 409, "`unsubscribe` of a channel you do not hold", "nothing to do", where="socket"),
    _kind("content_unavailable", 409, "the target, or the comment you reply to, is hidden or removed by moderation, "
          "or (a parent comment) deleted", "reload; do not retry"),
    _kind("conflict", 409, "a request id reused for another command; a retry (same id) of a vybe or comment "
          "deleted since; a stale case `version`; a case claimed by another moderator",
          "reload, then retry with a new id or version"),
    _kind("unavailable", 503, "PostgreSQL or Redis is unreachable (a restart, a failover): nothing was stored, "
          "unless the connection broke during COMMIT, when the write may have landed once (for `auth`: nothing was "
          "set up); the socket stays open", "retry with the same `id` after `retry_after` (a write that landed "
          "is not applied twice: see Framing)", retry=True),
    _kind("internal", 500, "a server bug; the command may or may not have been applied",
          "retry with the same `id` after `retry_after` (a socket write sent with an `id` is applied once: see "
          "Framing)", retry=True),
)}


def kind(code: str) -> ErrorKind:
    """The catalog entry of ``code``; an uncatalogued code is a bug, reported as ``internal``."""
    return CATALOG.get(code, CATALOG["internal"])


def status(code: str) -> int:
    """The HTTP status REST answers ``code`` with."""
    return kind(code).status


def markdown_table() -> str:
    """The error table of docs/protocol.md."""
    rows = ["| code | HTTP | meaning | what to do |", "|---|---|---|---|"]
    for k in CATALOG.values():
        where = {"socket": " (socket only)", "rest": " (REST only)", "both": ""}[k.where]
        retry = " `retry_after` is set." if k.retry else ""
        rows.append(f"| `{k.code}` | {k.status} | {k.meaning}{where} | {k.action}.{retry} |")
    return "\n".join(rows)


class ErrorCode:
    """Names for the catalog's codes, for the code that raises them."""

    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    INVALID_CONTENT = "invalid_content"
    CONTENT_TOO_LONG = "content_too_long"
    INVALID_VALUE = "invalid_value"
    INVALID_PARENT = "invalid_parent"
    INVALID_CURSOR = "invalid_cursor"
    FRAME_TOO_LARGE = "frame_too_large"
    BINARY_UNSUPPORTED = "binary_unsupported"
    RATE_LIMITED = "rate_limited"
    AUTH_REQUIRED = "auth_required"
    AUTH_FAILED = "auth_failed"
    TOKEN_EXPIRED = "token_expired"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNKNOWN_CHANNEL = "unknown_channel"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    NOT_SUBSCRIBED = "not_subscribed"
    CONTENT_UNAVAILABLE = "content_unavailable"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"

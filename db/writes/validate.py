"""Input checks that run before any SQL: a refused write stores nothing."""

from __future__ import annotations

import uuid

from db.writes.errors import Invalid, NotFound

MAX_VYBE_CHARS = 5_000
MAX_COMMENT_CHARS = 2_000
MAX_DESCRIPTION_CHARS = 1_000
MAX_DISPLAY_NAME_CHARS = 100
MAX_REQUEST_ID_CHARS = 128
BLANK = " \t\n\r\f\v"
"""What counts as white space in stored text (ASCII's, as the protocol schema's pattern says)."""


def text(value: object, *, limit: int, field: str = "content", required: bool = True) -> str:
    """``value`` if it is storable text within ``limit`` characters, else :class:`Invalid`.

    PostgreSQL text holds neither NUL nor lone surrogates (Python str can), and
    ``char_length`` counts code points as ``len`` does.
    """
    if not isinstance(value, str):
        raise Invalid(f"{field} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise Invalid(f"{field} is not valid UTF-8 text") from err
    if "\x00" in value:
        raise Invalid(f"{field} contains a NUL character")
    if required and not value.strip(BLANK):
        raise Invalid(f"{field} is empty")
    if len(value) > limit:
        raise Invalid(f"{field} is longer than {limit} characters", "content_too_long")
    return value


def choice(value: object, allowed: frozenset[str], field: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise Invalid(f"{field} must be one of {', '.join(sorted(allowed))}", "invalid_value")
    return value


def flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field} must be true or false", "invalid_value")
    return value


def user_id(value: object, field: str = "user_id") -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise Invalid(f"{field} must be 1 to 128 characters", "invalid_value")
    text(value, limit=128, field=field)
    return value


def object_id(value: object, what: str = "target") -> uuid.UUID:
    """A row id; a malformed one names nothing that exists, hence :class:`NotFound`."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise NotFound(f"{what} {value!r} does not exist")


def optional_object_id(value: object, what: str) -> uuid.UUID | None:
    return None if value is None else object_id(value, what)


def request_id(value: object) -> str | None:
    if value is None:
        return None
    # An id is opaque: any text, even white space ("" means none and never gets here).
    return text(value, limit=MAX_REQUEST_ID_CHARS, field="request_id", required=False)

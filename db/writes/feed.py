"""Reads with the viewer's rules applied: the feed, one vybe, a vybe's comments.

Per viewer: PRIVATE (and FRIENDS_ONLY: there is no friend graph yet) only to
its author; anonymous items (``is_anonymous`` or privacy ANONYMOUS) never carry
``user_id`` except for moderators; nothing by users the viewer blocked; nothing
hidden or removed; with premoderation, nothing still pending except the
viewer's own. Pages are keyset-paginated on (created_at, id) with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg

from db.writes import validate
from db.writes.content import COMMENT_COLUMNS, VYBE_COLUMNS
from db.writes.errors import Invalid, NotFound
from db.writes.types import Comment, CommentPage, Page, Vybe

if TYPE_CHECKING:
    from typing import LiteralString

MAX_LIMIT = 100

_VISIBLE: LiteralString = """
       (moderation_state NOT IN ('hidden', 'removed'))
   AND (moderation_state <> 'pending' OR NOT $2::bool OR user_id = $1)
   AND user_id <> ALL (coalesce((SELECT blocked_users FROM users WHERE id = $1), '{}'))
"""
_FEED: LiteralString = f"""
SELECT {VYBE_COLUMNS} FROM shared_vybes
 WHERE {_VISIBLE}
   AND (privacy_level IN ('PUBLIC', 'ANONYMOUS') OR user_id = $1)
   AND ($3::uuid IS NULL OR looproom_id = $3)
   AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $6
"""
_ONE: LiteralString = f"""
SELECT {VYBE_COLUMNS} FROM shared_vybes
 WHERE id = $3 AND {_VISIBLE} AND (privacy_level IN ('PUBLIC', 'ANONYMOUS') OR user_id = $1)
"""
_RAW: LiteralString = f"SELECT {VYBE_COLUMNS} FROM shared_vybes WHERE id = $1"
_COMMENTS: LiteralString = f"""
SELECT {COMMENT_COLUMNS} FROM comments
 WHERE shared_vybe_id = $3 AND {_VISIBLE}
   AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
 ORDER BY created_at, id
 LIMIT $6
"""


def encode_cursor(created_at: dt.datetime, item_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{item_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[dt.datetime | None, uuid.UUID | None]:
    """(created_at, id) of the last item seen; :class:`Invalid` (``invalid_cursor``) if it is not ours."""
    if cursor is None:
        return None, None
    try:
        if not isinstance(cursor, str) or len(cursor) > 200:
            raise ValueError("not a cursor")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        created_at = dt.datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise Invalid("malformed cursor", "invalid_cursor") from err


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be 1 to {MAX_LIMIT}", "invalid_value")
    return limit


def _anonymize(row: asyncpg.Record, moderator: bool) -> dict[str, Any]:
    item = dict(row.items())
    anonymous = item["is_anonymous"] or item.get("privacy_level") == "ANONYMOUS"
    if anonymous and not moderator:
        item["user_id"] = None
    return item


async def get_vybe(
    pool: asyncpg.Pool, vybe_id: uuid.UUID | str, *, viewer_id: str | None = None,
    viewer_is_moderator: bool = False, premoderation: bool = False,
) -> Vybe:
    """One vybe. Without ``viewer_id``: the stored row (trusted callers). With it: as that viewer may see it."""
    vid = validate.object_id(vybe_id, "vybe")
    if viewer_id is None:
        row = await pool.fetchrow(_RAW, vid)
    else:
        row = await pool.fetchrow(_ONE, viewer_id, premoderation, vid)
    if row is None:
        raise NotFound(f"vybe {vid} does not exist")
    return Vybe(**(dict(row.items()) if viewer_id is None else _anonymize(row, viewer_is_moderator)))


async def feed_page(
    pool: asyncpg.Pool, viewer_id: str, *, limit: int = 20, cursor: str | None = None,
    looproom_id: uuid.UUID | str | None = None, viewer_is_moderator: bool = False, premoderation: bool = False,
) -> Page:
    """Newest first; ``next_cursor`` is None on the last page."""
    after_at, after_id = decode_cursor(cursor)
    room = validate.optional_object_id(looproom_id, "looproom")
    n = _limit(limit)
    rows = await pool.fetch(_FEED, viewer_id, premoderation, room, after_at, after_id, n + 1)
    items = [Vybe(**_anonymize(r, viewer_is_moderator)) for r in rows[:n]]
    more = len(rows) > n
    return Page(items=items, next_cursor=encode_cursor(items[-1].created_at, items[-1].id) if more else None)


async def vybe_comments(
    pool: asyncpg.Pool, vybe_id: uuid.UUID | str, viewer_id: str, limit: int = 50, cursor: str | None = None,
    *, viewer_is_moderator: bool = False, premoderation: bool = False,
) -> CommentPage:
    """A visible vybe's comments, oldest first (:class:`NotFound` if the viewer may not see the vybe)."""
    vid = validate.object_id(vybe_id, "vybe")
    after_at, after_id = decode_cursor(cursor)
    n = _limit(limit)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchrow(_ONE, viewer_id, premoderation, vid) is None:
            raise NotFound(f"vybe {vid} does not exist")
        rows = await conn.fetch(_COMMENTS, viewer_id, premoderation, vid, after_at, after_id, n + 1)
    items = [Comment(**_anonymize(r, viewer_is_moderator)) for r in rows[:n]]
    more = len(rows) > n
    return CommentPage(items=items, next_cursor=encode_cursor(items[-1].created_at, items[-1].id) if more else None)

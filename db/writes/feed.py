"""Reads with the viewer's rules applied: the feed, one vybe, a vybe's comments.

The rules (privacy, anonymity, blocks, moderation state, premoderation) are
``common.visibility``'s: its SQL filters the rows, its :func:`shown_author`
masks anonymous authors. Pages are keyset-paginated on (created_at, id) with an
opaque cursor.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import TYPE_CHECKING, Any

from common.visibility import SEE_ROW_SQL, SEE_VYBE_SQL, shown_author
from db.writes import validate
from db.writes.content import COMMENT_COLUMNS, VYBE_COLUMNS
from db.writes.errors import Invalid, NotFound
from db.writes.types import Comment, CommentPage, Page, Vybe

if TYPE_CHECKING:
    from typing import LiteralString

    import asyncpg

MAX_LIMIT = 100

# $1 the viewer, $2 premoderation: common.visibility's convention.
_FEED: LiteralString = f"""
SELECT {VYBE_COLUMNS} FROM shared_vybes
 WHERE {SEE_VYBE_SQL}
   AND ($3::uuid IS NULL OR looproom_id = $3)
   AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
 ORDER BY created_at DESC, id DESC
 LIMIT $6
"""
_ONE: LiteralString = f"""
SELECT {VYBE_COLUMNS} FROM shared_vybes
 WHERE id = $3 AND {SEE_VYBE_SQL}"""
_RAW: LiteralString = f"SELECT {VYBE_COLUMNS} FROM shared_vybes WHERE id = $1"
_COMMENTS: LiteralString = f"""
SELECT {COMMENT_COLUMNS} FROM comments
 WHERE shared_vybe_id = $3 AND {SEE_ROW_SQL}
   AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
 ORDER BY created_at, id
 LIMIT $6
"""


# A cursor is the last item's creation time (microseconds since the epoch) and id: any string
# of this shape names a position (so a client can never hold a "valid-looking" broken one).
CURSOR_PATTERN = r"^[0-9]{1,17}_[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def encode_cursor(created_at: dt.datetime, item_id: uuid.UUID) -> str:
    micros = (created_at - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{micros}_{item_id.hex}"


def decode_cursor(cursor: str | None) -> tuple[dt.datetime | None, uuid.UUID | None]:
    """(created_at, id) of the last item seen; :class:`Invalid` (``invalid_cursor``) if it is not ours."""
    if cursor is None:
        return None, None
    if not isinstance(cursor, str) or not _CURSOR.match(cursor):
        raise Invalid("malformed cursor: pass back a cursor as a page gave it", "invalid_cursor")
    micros, _, ident = cursor.partition("_")
    return _EPOCH + dt.timedelta(microseconds=int(micros)), uuid.UUID(hex=ident)


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be 1 to {MAX_LIMIT}", "invalid_value")
    return limit


def _anonymize(row: asyncpg.Record, moderator: bool, viewer_id: str) -> dict[str, Any]:
    item = dict(row.items())
    item["mine"] = item["user_id"] == viewer_id  # the author knows their own, anonymous or not
    item["user_id"] = shown_author(item["user_id"], is_anonymous=item["is_anonymous"],
                                   privacy_level=item.get("privacy_level"), viewer_is_moderator=moderator)
    if item["user_id"] is None:
        item["author_name"] = None
    return item


_REACTIONS: LiteralString = """
SELECT reactable_id AS id, type::text AS type, count(*) AS n, bool_or(user_id = $3) AS mine
  FROM reactions WHERE reactable_type = $1::reactable_type AND reactable_id = ANY($2::uuid[])
 GROUP BY reactable_id, type
"""


async def _with_reactions(conn: asyncpg.Pool | asyncpg.Connection, kind: str, items: list[dict[str, Any]],
                          viewer_id: str) -> list[dict[str, Any]]:
    """Each item's reaction breakdown by type, and the viewer's own reactions (one grouped query)."""
    counts: dict[uuid.UUID, dict[str, int]] = {}
    mine: dict[uuid.UUID, list[str]] = {}
    for r in await conn.fetch(_REACTIONS, kind, [i["id"] for i in items], viewer_id):
        counts.setdefault(r["id"], {})[r["type"]] = r["n"]
        if r["mine"]:
            mine.setdefault(r["id"], []).append(r["type"])
    for i in items:
        i["reactions"] = counts.get(i["id"], {})
        i["my_reactions"] = sorted(mine.get(i["id"], []))
    return items


async def get_vybe(
    pool: asyncpg.Pool, vybe_id: uuid.UUID | str, *, viewer_id: str | None = None,
    viewer_is_moderator: bool = False, premoderation: bool = False,
) -> Vybe:
    """One vybe. Without ``viewer_id``: the stored row (trusted callers). With it: as that viewer may see it."""
    vid = validate.object_id(vybe_id, "vybe")
    if viewer_id is None:
        row = await pool.fetchrow(_RAW, vid)
        if row is None:
            raise NotFound(f"vybe {vid} does not exist")
        return Vybe(**dict(row.items()))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(_ONE, viewer_id, premoderation, vid)
        if row is None:
            raise NotFound(f"vybe {vid} does not exist")
        [item] = await _with_reactions(conn, "SHARED_VYBE", [_anonymize(row, viewer_is_moderator, viewer_id)],
                                       viewer_id)
    return Vybe(**item)


async def feed_page(
    pool: asyncpg.Pool, viewer_id: str, *, limit: int = 20, cursor: str | None = None,
    looproom_id: uuid.UUID | str | None = None, viewer_is_moderator: bool = False, premoderation: bool = False,
) -> Page:
    """Newest first; ``next_cursor`` is None on the last page."""
    after_at, after_id = decode_cursor(cursor)
    room = validate.optional_object_id(looproom_id, "looproom")
    n = _limit(limit)
    # One snapshot: each vybe's reaction_count and its breakdown by type agree.
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        rows = await conn.fetch(_FEED, viewer_id, premoderation, room, after_at, after_id, n + 1)
        shown = await _with_reactions(conn, "SHARED_VYBE",
                                      [_anonymize(r, viewer_is_moderator, viewer_id) for r in rows[:n]], viewer_id)
    items = [Vybe(**i) for i in shown]
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
        # Premoderation holds vybes only: a comment goes out live at once (comment.created), so reads show it too.
        rows = await conn.fetch(_COMMENTS, viewer_id, False, vid, after_at, after_id, n + 1)
        shown = await _with_reactions(conn, "COMMENT",
                                      [_anonymize(r, viewer_is_moderator, viewer_id) for r in rows[:n]], viewer_id)
    items = [Comment(**i) for i in shown]
    more = len(rows) > n
    return CommentPage(items=items, next_cursor=encode_cursor(items[-1].created_at, items[-1].id) if more else None)

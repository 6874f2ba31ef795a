"""The write path: plain async functions over an asyncpg pool, one transaction each.

Every function returns only after COMMIT, returns frozen msgspec Structs, and
raises a :class:`WriteError` (stable ``code``) for anything the client can act
on; a refused write stores nothing. Counters move by the triggers of migration
0002, never by this package. Hot reactions go through :class:`ReactionWriter`.
"""

from db.writes.content import comment, delete_comment, delete_vybe, post_vybe, share
from db.writes.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable, WriteError, WriterClosed
from db.writes.feed import decode_cursor, encode_cursor, feed_page, get_vybe, vybe_comments
from db.writes.reactions import react, unreact
from db.writes.reports import report
from db.writes.types import (
    BlockList,
    Comment,
    CommentPage,
    CommentView,
    Deleted,
    Page,
    ReactionResult,
    ReactionView,
    ReportResult,
    ShareResult,
    ShareView,
    User,
    Vybe,
    VybeDetail,
    public,
)
from db.writes.users import Seen, block, seen, sync_users, unblock, upsert_user
from db.writes.writer import ReactionWriter

__all__ = [
    "BlockList",
    "Comment",
    "CommentPage",
    "CommentView",
    "Conflict",
    "Deleted",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Page",
    "ReactionResult",
    "ReactionView",
    "ReactionWriter",
    "ReportResult",
    "Seen",
    "ShareResult",
    "ShareView",
    "Unavailable",
    "User",
    "Vybe",
    "VybeDetail",
    "WriteError",
    "WriterClosed",
    "block",
    "comment",
    "decode_cursor",
    "delete_comment",
    "delete_vybe",
    "encode_cursor",
    "feed_page",
    "get_vybe",
    "post_vybe",
    "public",
    "react",
    "report",
    "seen",
    "share",
    "sync_users",
    "unblock",
    "unreact",
    "upsert_user",
    "vybe_comments",
]

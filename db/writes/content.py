"""Posting, commenting, sharing and deleting vybes and comments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from common.visibility import hides, reaches
from db.writes import validate
from db.writes._tx import check_violation, fk_missing, idempotent, in_transaction, row_dict
from db.writes.errors import Forbidden, Invalid, NotFound, Unavailable
from db.writes.types import PRIVACY_LEVELS, VYBE_TYPES, Comment, Deleted, ShareResult, Vybe

if TYPE_CHECKING:
    import uuid
    from typing import LiteralString

    from db.outbox import Announcement

VYBE_COLUMNS: LiteralString = (
    "id, user_id, type::text AS type, content, is_anonymous, privacy_level::text AS privacy_level, "
    "looproom_id, loopchain_id, reaction_count, comment_count, share_count, report_count, is_reported, "
    "moderation_state::text AS moderation_state, created_at, updated_at, "
    "(SELECT p.display_name FROM user_profiles p WHERE p.user_id = shared_vybes.user_id) AS author_name"
)
COMMENT_COLUMNS: LiteralString = (
    "id, user_id, shared_vybe_id, parent_id, content, is_anonymous, reaction_count, report_count, "
    "is_reported, moderation_state::text AS moderation_state, created_at, updated_at, "
    "(SELECT p.display_name FROM user_profiles p WHERE p.user_id = comments.user_id) AS author_name"
)

_INSERT_VYBE: LiteralString = f"""
INSERT INTO shared_vybes (user_id, type, content, is_anonymous, privacy_level, looproom_id, loopchain_id)
VALUES ($1, $2::shared_vybe_type, $3, $4, $5::privacy_level, $6, $7)
RETURNING {VYBE_COLUMNS}
"""
# Locked FOR NO KEY UPDATE (the counter update the trigger makes next needs that
# lock anyway; taking a weaker one first would deadlock two upgraders).
_LOCK_VYBE: LiteralString = """
SELECT user_id, privacy_level::text AS privacy_level, moderation_state::text AS moderation_state
  FROM shared_vybes WHERE id = $1 FOR NO KEY UPDATE
"""
_PARENT: LiteralString = "SELECT shared_vybe_id, moderation_state::text AS moderation_state FROM comments WHERE id = $1"
_INSERT_COMMENT: LiteralString = f"""
INSERT INTO comments (user_id, shared_vybe_id, parent_id, content, is_anonymous)
VALUES ($1, $2, $3, $4, $5)
RETURNING {COMMENT_COLUMNS}
"""
_VYBE_COUNTS: LiteralString = "SELECT comment_count, share_count FROM shared_vybes WHERE id = $1"
_INSERT_SHARE: LiteralString = "INSERT INTO shares (user_id, shared_vybe_id) VALUES ($1, $2) RETURNING id, created_at"


async def post_vybe(
    pool: asyncpg.Pool,
    user_id: str,
    *,
    content: str,
    type: str = "REFLECTION",
    privacy_level: str = "PUBLIC",
    is_anonymous: bool = False,
    looproom_id: uuid.UUID | str | None = None,
    loopchain_id: str | None = None,
    request_id: str | None = None,
    max_chars: int = validate.MAX_VYBE_CHARS,
    announce: Announcement | None = None,
) -> Vybe:
    """Store a vybe (the author's vibes_shared moves by trigger); return the stored row after COMMIT."""
    args = (
        validate.user_id(user_id),
        validate.choice(type, VYBE_TYPES, "type"),
        validate.text(content, limit=max_chars),
        validate.flag(is_anonymous, "is_anonymous"),
        validate.choice(privacy_level, PRIVACY_LEVELS, "privacy_level"),
        validate.optional_object_id(looproom_id, "looproom"),
        None if loopchain_id is None else validate.text(loopchain_id, limit=128, field="loopchain_id"),
    )

    async def body(conn: asyncpg.Connection) -> Vybe:
        try:
            row = await conn.fetchrow(_INSERT_VYBE, *args)
        except asyncpg.ForeignKeyViolationError as err:
            raise fk_missing(err) from err
        except asyncpg.CheckViolationError as err:
            raise check_violation(err) from err
        return Vybe(**row_dict(row))

    return await idempotent(pool, user_id=user_id, request_id=validate.request_id(request_id),
                            operation="post_vybe", result_type=Vybe, body=body, announce=announce,
                            exists="SELECT EXISTS (SELECT 1 FROM shared_vybes WHERE id = $1)")


async def lock_visible_vybe(conn: asyncpg.Connection, vybe_id: uuid.UUID, actor: str) -> asyncpg.Record:
    """The vybe row, locked; :class:`NotFound` if its privacy keeps it from the actor, :class:`Unavailable`
    if moderated away (``common.visibility``: blocks and premoderation do not apply to writes)."""
    row = await conn.fetchrow(_LOCK_VYBE, vybe_id)
    if row is None or not reaches(actor, row["user_id"], row["privacy_level"]):
        raise NotFound(f"vybe {vybe_id} does not exist")
    if hides(row["moderation_state"]):
        raise Unavailable(f"vybe {vybe_id} is {row['moderation_state']}")
    return row


async def comment(
    pool: asyncpg.Pool,
    user_id: str,
    *,
    vybe_id: uuid.UUID | str,
    content: str,
    parent_id: uuid.UUID | str | None = None,
    is_anonymous: bool = False,
    request_id: str | None = None,
    max_chars: int = validate.MAX_COMMENT_CHARS,
    announce: Announcement | None = None,
) -> Comment:
    """Comment on a vybe (or reply to a comment on the same vybe); the vybe's comment_count moves by trigger."""
    user = validate.user_id(user_id)
    vid = validate.object_id(vybe_id, "vybe")
    text = validate.text(content, limit=max_chars)
    anonymous = validate.flag(is_anonymous, "is_anonymous")

    async def body(conn: asyncpg.Connection) -> Comment:
        vybe = await lock_visible_vybe(conn, vid, user)
        # A parent that is gone is unavailable (409), as a hidden one is: the vybe the path names exists.
        try:
            parent = validate.optional_object_id(parent_id, "parent comment")
        except NotFound as err:
            raise Unavailable(f"parent comment {parent_id!r} does not exist (deleted?)") from err
        if parent is not None:
            prow = await conn.fetchrow(_PARENT, parent)
            if prow is None:  # deleted meanwhile, or never there: reload the thread
                raise Unavailable(f"parent comment {parent} does not exist (deleted?)")
            if prow["shared_vybe_id"] != vid:
                raise Invalid("a reply's parent must be a comment on the same vybe", "invalid_parent")
            if hides(prow["moderation_state"]):
                raise Unavailable(f"parent comment {parent} is {prow['moderation_state']}")
        try:
            row = await conn.fetchrow(_INSERT_COMMENT, user, vid, parent, text, anonymous)
        except asyncpg.ForeignKeyViolationError as err:
            raise fk_missing(err) from err
        except asyncpg.CheckViolationError as err:
            raise check_violation(err) from err
        count = await conn.fetchval(_VYBE_COUNTS, vid)
        return Comment(**row_dict(row), vybe_author_id=vybe["user_id"], comment_count=count)

    return await idempotent(pool, user_id=user, request_id=validate.request_id(request_id),
                            operation="comment", result_type=Comment, body=body, announce=announce,
                            exists="SELECT EXISTS (SELECT 1 FROM comments WHERE id = $1)")


async def share(
    pool: asyncpg.Pool, user_id: str, vybe_id: uuid.UUID | str, request_id: str | None = None,
    announce: Announcement | None = None,
) -> ShareResult:
    """Record a share (a row in ``shares``; share_count moves by trigger). Each call is a new share."""
    user = validate.user_id(user_id)
    vid = validate.object_id(vybe_id, "vybe")

    async def body(conn: asyncpg.Connection) -> ShareResult:
        vybe = await lock_visible_vybe(conn, vid, user)
        try:
            row = await conn.fetchrow(_INSERT_SHARE, user, vid)
        except asyncpg.ForeignKeyViolationError as err:
            raise fk_missing(err) from err
        counts = await conn.fetchrow(_VYBE_COUNTS, vid)
        return ShareResult(share_id=row["id"], vybe_id=vid, share_count=counts["share_count"],
                           vybe_author_id=vybe["user_id"], created_at=row["created_at"])

    return await idempotent(pool, user_id=user, request_id=validate.request_id(request_id),
                            operation="share", result_type=ShareResult, body=body, announce=announce)


# Deletes lock in the global order (vybe, its comments by id, the affected
# authors' profiles by user_id) before the DELETE, whose cascades and triggers
# then find every lock already held.
_LOCK_VYBE_OWNER: LiteralString = """
SELECT user_id, looproom_id, privacy_level::text AS privacy_level, is_anonymous FROM shared_vybes WHERE id = $1
   FOR UPDATE
"""
_LOCK_VYBE_COMMENTS: LiteralString = """
SELECT id, user_id FROM comments WHERE shared_vybe_id = $1 ORDER BY id FOR UPDATE
"""
_LOCK_PROFILES: LiteralString = """
SELECT 1 FROM user_profiles WHERE user_id = ANY ($1::text[]) ORDER BY user_id FOR NO KEY UPDATE
"""
_COUNT_REACTIONS: LiteralString = """
SELECT count(*) FROM reactions
 WHERE (reactable_type = 'SHARED_VYBE' AND reactable_id = $1)
    OR (reactable_type = 'COMMENT' AND reactable_id = ANY ($2::uuid[]))
"""
_DELETE_VYBE: LiteralString = "DELETE FROM shared_vybes WHERE id = $1"
_COMMENT_OWNER: LiteralString = "SELECT user_id, shared_vybe_id, is_anonymous FROM comments WHERE id = $1"
_LOCK_VYBE_ROW: LiteralString = "SELECT 1 FROM shared_vybes WHERE id = $1 FOR NO KEY UPDATE"
_LOCK_SUBTREE: LiteralString = """
WITH RECURSIVE tree AS (
    SELECT id FROM comments WHERE id = $1
    UNION ALL
    SELECT c.id FROM comments c JOIN tree t ON c.parent_id = t.id
)
SELECT c.id, c.user_id FROM comments c WHERE c.id IN (SELECT id FROM tree) ORDER BY c.id FOR UPDATE
"""
_DELETE_COMMENT: LiteralString = "DELETE FROM comments WHERE id = $1"


async def delete_vybe(pool: asyncpg.Pool, user_id: str, vybe_id: uuid.UUID | str,
                      announce: Announcement | None = None) -> Deleted:
    """Hard-delete the caller's own vybe (else :class:`Forbidden`).

    Rows go, not a soft-delete flag: FK cascades remove its comments (and their
    replies) and shares, and the delete triggers of 0002 remove the reactions on
    the vybe and on those comments (reactions have no FK) and take them off
    every affected author's positive_reactions; vibes_shared drops by one.
    Reports on the vybe stay: they are the moderation record.
    """
    user = validate.user_id(user_id)
    vid = validate.object_id(vybe_id, "vybe")

    async def body(conn: asyncpg.Connection) -> Deleted:
        row = await conn.fetchrow(_LOCK_VYBE_OWNER, vid)
        if row is None:
            raise NotFound(f"vybe {vid} does not exist")
        owner = row["user_id"]
        if owner != user:
            raise Forbidden("only its author may delete a vybe")
        comments = await conn.fetch(_LOCK_VYBE_COMMENTS, vid)
        await conn.execute(_LOCK_PROFILES, sorted({owner, *(c["user_id"] for c in comments)}))
        ids = [c["id"] for c in comments]
        reactions = await conn.fetchval(_COUNT_REACTIONS, vid, ids)
        await conn.execute(_DELETE_VYBE, vid)
        return Deleted(id=vid, kind="shared_vybe", comments_deleted=len(ids), reactions_deleted=reactions,
                       author_id=owner, looproom_id=row["looproom_id"], privacy_level=row["privacy_level"],
                       is_anonymous=row["is_anonymous"], comment_ids=ids)

    return await in_transaction(pool, body, announce)


async def delete_comment(pool: asyncpg.Pool, user_id: str, comment_id: uuid.UUID | str,
                         announce: Announcement | None = None) -> Deleted:
    """Hard-delete the caller's own comment and its replies (else :class:`Forbidden`); see :func:`delete_vybe`."""
    user = validate.user_id(user_id)
    cid = validate.object_id(comment_id, "comment")

    async def body(conn: asyncpg.Connection) -> Deleted:
        head = await conn.fetchrow(_COMMENT_OWNER, cid)
        if head is None:
            raise NotFound(f"comment {cid} does not exist")
        if head["user_id"] != user:
            raise Forbidden("only its author may delete a comment")
        await conn.execute(_LOCK_VYBE_ROW, head["shared_vybe_id"])
        subtree = await conn.fetch(_LOCK_SUBTREE, cid)
        if not subtree:  # deleted concurrently (e.g. with its vybe)
            raise NotFound(f"comment {cid} does not exist")
        await conn.execute(_LOCK_PROFILES, sorted({c["user_id"] for c in subtree}))
        ids = [c["id"] for c in subtree]
        reactions = await conn.fetchval(_COUNT_REACTIONS, None, ids)
        await conn.execute(_DELETE_COMMENT, cid)
        return Deleted(id=cid, kind="comment", comments_deleted=len(ids), reactions_deleted=reactions,
                       author_id=user, vybe_id=head["shared_vybe_id"], is_anonymous=head["is_anonymous"],
                       comment_ids=ids)

    return await in_transaction(pool, body, announce)

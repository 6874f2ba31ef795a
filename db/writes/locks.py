"""The one lock order of moderation writes: a target's row (content or a user) is locked before anything of its
reports or its case, in migration 0002's table order, so reports, their counter triggers, scores and moderators'
decisions never deadlock with one another."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import LiteralString

    import asyncpg

_LOCK_TARGET: dict[str, LiteralString] = {
    "shared_vybe": "SELECT moderation_state::text FROM shared_vybes WHERE id = $1::text::uuid FOR NO KEY UPDATE",
    "comment": "SELECT moderation_state::text FROM comments WHERE id = $1::text::uuid FOR NO KEY UPDATE",
    "app_item": "SELECT moderation_state::text FROM app_items WHERE id = $1::text::uuid FOR NO KEY UPDATE",
    "user": "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE",
}


async def lock_target(conn: asyncpg.Connection, kind: str, target_id: str) -> str | None:
    """Lock the target ``kind`` ``target_id`` (``shared_vybe``, ``comment``, ``app_item``, ``user``) for the rest of
    the transaction. Returns content's moderation state (a user: the id), None when there is no such target."""
    state: str | None = await conn.fetchval(_LOCK_TARGET[kind], target_id)
    return state

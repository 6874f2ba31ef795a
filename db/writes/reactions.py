"""Reactions: target checks and SQL shared by the single-transaction path and the ReactionWriter.

Counters (the target's reaction_count, its author's positive_reactions) move
by the 0002 triggers. A reaction is unique per (user, target, type): reacting
twice is a no-op (``applied=False``), as is removing one that is not there.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from common.visibility import HIDING_STATES_SQL, hides, reaches
from db.writes import validate
from db.writes._tx import fk_missing, in_transaction
from db.writes.errors import NotFound, Unavailable, WriteError
from db.writes.types import REACTABLE_TYPES, REACTION_TYPES, ReactionResult

if TYPE_CHECKING:
    from typing import LiteralString


class Target(msgspec.Struct, frozen=True):
    """What a reaction needs to know about its target, read under its row lock."""

    author: str
    owner: str  # whose privacy applies: the vybe's author (for a comment, its vybe's)
    privacy_level: str
    state: str  # the target's moderation state, or its vybe's if that one is worse
    vybe_id: uuid.UUID | None  # the vybe (itself, or a comment's) whose channel hears of it


# Each locks the targets FOR NO KEY UPDATE in id order (the order the counter
# trigger updates them in), so concurrent batches never deadlock on them.
_LOCK_TARGETS: dict[str, LiteralString] = {
    "SHARED_VYBE": """
        SELECT id, user_id AS author, user_id AS owner, privacy_level::text AS privacy_level,
               moderation_state::text AS state, id AS vybe_id
          FROM shared_vybes WHERE id = ANY ($1::uuid[]) ORDER BY id FOR NO KEY UPDATE""",
    "COMMENT": f"""
        SELECT c.id, c.user_id AS author, v.user_id AS owner, v.privacy_level::text AS privacy_level,
               CASE WHEN v.moderation_state IN {HIDING_STATES_SQL} THEN v.moderation_state::text
                    ELSE c.moderation_state::text END AS state, c.shared_vybe_id AS vybe_id
          FROM comments c JOIN shared_vybes v ON v.id = c.shared_vybe_id
         WHERE c.id = ANY ($1::uuid[]) ORDER BY c.id FOR NO KEY UPDATE OF c""",
    "LOOPROOM": """
        SELECT id, creator_id AS author, creator_id AS owner, 'PUBLIC' AS privacy_level, 'approved' AS state,
               NULL::uuid AS vybe_id
          FROM looprooms WHERE id = ANY ($1::uuid[]) ORDER BY id FOR NO KEY UPDATE""",
}
COUNTS: dict[str, LiteralString] = {
    "SHARED_VYBE": "SELECT id, reaction_count FROM shared_vybes WHERE id = ANY ($1::uuid[])",
    "COMMENT": "SELECT id, reaction_count FROM comments WHERE id = ANY ($1::uuid[])",
    "LOOPROOM": "SELECT id, reaction_count FROM looprooms WHERE id = ANY ($1::uuid[])",
}
# Tables in the global lock order (see 0002).
LOCK_ORDER = ("SHARED_VYBE", "COMMENT", "LOOPROOM")

_INSERT_ONE: LiteralString = """
INSERT INTO reactions (user_id, type, reactable_type, reactable_id, is_anonymous)
VALUES ($1, $2::text::reaction_type, $3::text::reactable_type, $4, $5)
ON CONFLICT ON CONSTRAINT reactions_unique_key DO NOTHING
RETURNING true
"""
_DELETE_ONE: LiteralString = """
DELETE FROM reactions
 WHERE user_id = $1 AND type = $2::text::reaction_type AND reactable_type = $3::text::reactable_type
   AND reactable_id = $4
RETURNING true
"""


async def lock_targets(conn: asyncpg.Connection, target_type: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, Target]:
    rows = await conn.fetch(_LOCK_TARGETS[target_type], ids)
    return {r["id"]: Target(r["author"], r["owner"], r["privacy_level"], r["state"], r["vybe_id"]) for r in rows}


def check_target(target: Target | None, target_type: str, target_id: uuid.UUID, actor: str) -> Target:
    """The target if ``actor`` may react to it; else the error that operation gets (the privacy and
    moderation rules of ``common.visibility``; blocks and premoderation do not apply to writes)."""
    if target is None or not reaches(actor, target.owner, target.privacy_level):
        raise NotFound(f"{target_type.lower()} {target_id} does not exist")
    if hides(target.state):
        raise Unavailable(f"{target_type.lower()} {target_id} is {target.state}")
    return target


def check_input(user_id: str, target_type: str, target_id: uuid.UUID | str, reaction_type: str) -> uuid.UUID:
    """Validate what needs no database; return the target id."""
    validate.user_id(user_id)
    validate.choice(target_type, REACTABLE_TYPES, "target_type")
    validate.choice(reaction_type, REACTION_TYPES, "reaction_type")
    return validate.object_id(target_id, target_type.lower())


async def _toggle(
    pool: asyncpg.Pool, add: bool, user_id: str, target_type: str, target_id: uuid.UUID | str,
    reaction_type: str, is_anonymous: bool,
) -> ReactionResult:
    tid = check_input(user_id, target_type, target_id, reaction_type)
    anonymous = validate.flag(is_anonymous, "is_anonymous")

    async def body(conn: asyncpg.Connection) -> ReactionResult:
        targets = await lock_targets(conn, target_type, [tid])
        target = check_target(targets.get(tid), target_type, tid, user_id)
        try:
            if add:
                done = await conn.fetchval(_INSERT_ONE, user_id, reaction_type, target_type, tid, anonymous)
            else:
                done = await conn.fetchval(_DELETE_ONE, user_id, reaction_type, target_type, tid)
        except asyncpg.ForeignKeyViolationError as err:
            raise fk_missing(err) from err
        count = (await conn.fetchrow(COUNTS[target_type], [tid]))["reaction_count"]
        return ReactionResult(applied=bool(done), target_type=target_type, target_id=tid,
                              reaction_type=reaction_type, reaction_count=count, target_author_id=target.author,
                              vybe_id=target.vybe_id)

    return await in_transaction(pool, body)


async def react(
    pool: asyncpg.Pool, user_id: str, *, target_type: str, target_id: uuid.UUID | str, reaction_type: str,
    is_anonymous: bool = False,
) -> ReactionResult:
    """Add a reaction in its own transaction (the non-hot path; the gateway uses :class:`ReactionWriter`)."""
    return await _toggle(pool, True, user_id, target_type, target_id, reaction_type, is_anonymous)


async def unreact(
    pool: asyncpg.Pool, user_id: str, *, target_type: str, target_id: uuid.UUID | str, reaction_type: str,
) -> ReactionResult:
    """Remove a reaction in its own transaction; removing one that is not there is a no-op."""
    return await _toggle(pool, False, user_id, target_type, target_id, reaction_type, False)


__all__ = ["Target", "WriteError", "check_input", "check_target", "lock_targets", "react", "unreact"]

"""Users as the identity provider names them, and their block lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from db.writes import validate
from db.writes._tx import in_transaction
from db.writes.errors import Invalid, NotFound
from db.writes.types import ROLES, User

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import LiteralString

    import asyncpg

    from db.outbox import Announcement

_UPSERT_USER: LiteralString = """
INSERT INTO users (id, role) VALUES ($1, $2::text::user_role)
ON CONFLICT (id) DO UPDATE SET role = EXCLUDED.role, last_active_at = now(),
    updated_at = CASE WHEN users.role = EXCLUDED.role THEN users.updated_at ELSE now() END
RETURNING id, role::text AS role, blocked_users, created_at
"""
# The profile keeps its display name when the token carries none.
_UPSERT_PROFILE: LiteralString = """
INSERT INTO user_profiles (user_id, display_name) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET display_name = coalesce(EXCLUDED.display_name, user_profiles.display_name)
RETURNING display_name
"""
_BLOCK: LiteralString = """
UPDATE users SET blocked_users = CASE WHEN $2 = ANY (blocked_users) THEN blocked_users
                                      ELSE array_append(blocked_users, $2) END
 WHERE id = $1 RETURNING blocked_users
"""
_UNBLOCK: LiteralString = (
    "UPDATE users SET blocked_users = array_remove(blocked_users, $2) WHERE id = $1 RETURNING blocked_users")
_EXISTS: LiteralString = "SELECT true FROM users WHERE id = $1"


async def upsert_user(pool: asyncpg.Pool, user_id: str, role: str, display_name: str | None = None) -> User:
    """Create or refresh the user named by a JWT ``sub`` (role taken from the token) and its profile."""
    uid = validate.user_id(user_id)
    urole = validate.choice(role, ROLES, "role")
    name = None if display_name is None else validate.text(
        display_name, limit=validate.MAX_DISPLAY_NAME_CHARS, field="display_name")

    async def body(conn: asyncpg.Connection) -> User:
        row = await conn.fetchrow(_UPSERT_USER, uid, urole)
        shown = await conn.fetchval(_UPSERT_PROFILE, uid, name)
        return User(id=row["id"], role=row["role"], display_name=shown, blocked_users=list(row["blocked_users"]),
                    created_at=row["created_at"])

    return await in_transaction(pool, body)


ACTIVE_EVERY_S = 3600.0
"""How stale ``last_active_at`` may get before an authentication refreshes it (a write)."""

_KNOWN: LiteralString = """
SELECT u.id, u.role::text AS role, u.blocked_users, p.display_name,
       u.last_active_at < now() - make_interval(secs => $2) AS inactive
  FROM users u LEFT JOIN user_profiles p ON p.user_id = u.id
 WHERE u.id = ANY($1::text[])
"""
_UPSERT_USERS: LiteralString = """
INSERT INTO users (id, role) SELECT id, role::user_role FROM unnest($1::text[], $2::text[]) AS t (id, role)
ON CONFLICT (id) DO UPDATE SET role = EXCLUDED.role, last_active_at = now(),
    updated_at = CASE WHEN users.role = EXCLUDED.role THEN users.updated_at ELSE now() END
RETURNING id, blocked_users
"""
_UPSERT_PROFILES: LiteralString = """
INSERT INTO user_profiles (user_id, display_name) SELECT * FROM unnest($1::text[], $2::text[])
ON CONFLICT (user_id) DO UPDATE SET display_name = coalesce(EXCLUDED.display_name, user_profiles.display_name)
"""


class Seen(NamedTuple):
    """A user as an authenticated token names them."""

    id: str
    role: str
    name: str | None


def seen(user_id: str, role: str, display_name: str | None) -> Seen:
    """Validated, as :func:`upsert_user` validates (raises :class:`Invalid`)."""
    name = None if display_name is None else validate.text(
        display_name, limit=validate.MAX_DISPLAY_NAME_CHARS, field="display_name")
    return Seen(validate.user_id(user_id), validate.choice(role, ROLES, "role"), name)


async def sync_users(pool: asyncpg.Pool, users: Sequence[Seen]) -> dict[str, list[str]]:
    """The block list of each user, for a batch of authentications: one read, and writes only for
    users who are new, whose role or display name changed, or not seen for ``ACTIVE_EVERY_S``
    (so a reconnect storm of known users is one SELECT per batch, no write)."""
    latest = {u.id: u for u in users}
    rows = {r["id"]: r for r in await pool.fetch(_KNOWN, list(latest), ACTIVE_EVERY_S)}
    blocked = {uid: list(r["blocked_users"]) for uid, r in rows.items()}
    stale = [u for u in latest.values()
             if (r := rows.get(u.id)) is None or r["role"] != u.role or r["inactive"]
             or (u.name is not None and u.name != r["display_name"])]
    if stale:
        async def body(conn: asyncpg.Connection) -> None:
            ordered = sorted(stale)  # one lock order across concurrent batches
            for r in await conn.fetch(_UPSERT_USERS, [u.id for u in ordered], [u.role for u in ordered]):
                blocked[r["id"]] = list(r["blocked_users"])
            await conn.execute(_UPSERT_PROFILES, [u.id for u in ordered], [u.name for u in ordered])

        await in_transaction(pool, body)
    return blocked


async def _set_block(pool: asyncpg.Pool, sql: LiteralString, user_id: str, other_id: str,
                     announce: Announcement | None) -> list[str]:
    uid = validate.user_id(user_id)
    other = validate.user_id(other_id, "other_id")
    if uid == other:
        raise Invalid("a user cannot block themselves", "invalid_value")

    async def body(conn: asyncpg.Connection) -> list[str]:
        if sql is _BLOCK and not await conn.fetchval(_EXISTS, other):
            raise NotFound(f"user {other!r} does not exist")
        blocked = await conn.fetchval(sql, uid, other)
        if blocked is None:
            raise NotFound(f"user {uid!r} does not exist")
        return list(blocked)

    return await in_transaction(pool, body, announce)


async def block(pool: asyncpg.Pool, user_id: str, other_id: str, announce: Announcement | None = None) -> list[str]:
    """Add ``other_id`` to the user's block list (idempotent); return the new list."""
    return await _set_block(pool, _BLOCK, user_id, other_id, announce)


async def unblock(pool: asyncpg.Pool, user_id: str, other_id: str,
                  announce: Announcement | None = None) -> list[str]:
    """Remove ``other_id`` from the block list (idempotent); return the new list."""
    return await _set_block(pool, _UNBLOCK, user_id, other_id, announce)

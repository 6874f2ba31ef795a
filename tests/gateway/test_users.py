"""Authentications sync users with PostgreSQL in batches: one read per batch, writes only for new or
changed users (a reconnect storm of known users writes nothing)."""

from __future__ import annotations

import asyncio

import pytest

from db import writes
from gateway.auth import Identity
from gateway.users import Users

pytestmark = pytest.mark.anyio


def _who(i: int, role: str = "MEMBER", name: str | None = None) -> Identity:
    return Identity(f"user-{i}", role, name, 0.0)  # type: ignore[arg-type]


async def test_a_storm_of_known_users_is_one_read_per_batch_and_no_write(pool) -> None:
    users = Users(pool)
    first = await asyncio.gather(*(users.on_auth(_who(i, name=f"U{i}")) for i in range(300)))
    assert first == [[]] * 300 and users.batches == 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE id LIKE 'user-%'") == 300
    assert await pool.fetchval("SELECT count(*) FROM user_profiles WHERE display_name LIKE 'U%'") == 300
    await writes.block(pool, "user-1", "user-2")
    before = await pool.fetch("SELECT id, xmin::text FROM users WHERE id LIKE 'user-%' ORDER BY id")
    again = await asyncio.gather(*(users.on_auth(_who(i, name=f"U{i}")) for i in range(300)))
    assert again[1] == ["user-2"] and users.batches == 2
    after = await pool.fetch("SELECT id, xmin::text FROM users WHERE id LIKE 'user-%' ORDER BY id")
    assert before == after  # no row was written (xmin changes with every update)


async def test_new_roles_and_names_are_written_and_errors_reach_every_waiter(pool) -> None:
    users = Users(pool)
    await users.on_auth(_who(7, name="Old"))
    await asyncio.gather(users.on_auth(_who(7, role="MODERATOR", name="New")), users.on_auth(_who(8)))
    row = await pool.fetchrow("SELECT u.role::text AS role, p.display_name FROM users u "
                              "JOIN user_profiles p ON p.user_id = u.id WHERE u.id = 'user-7'")
    assert (row["role"], row["display_name"]) == ("MODERATOR", "New")
    await users.on_auth(_who(7, role="MODERATOR"))  # a token without a name keeps the profile's
    assert await pool.fetchval("SELECT display_name FROM user_profiles WHERE user_id = 'user-7'") == "New"
    closed = Users(pool)
    await pool.close()
    results = await asyncio.gather(*(closed.on_auth(_who(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)

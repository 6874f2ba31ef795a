"""The database holds a live care claim against a close by anyone else (migration 0011), whichever release of the
gateway asks: during a rolling update the release before 0010, which knows nothing of claims, still runs."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from db import learning
from db.writes.errors import Conflict

pytestmark = pytest.mark.anyio

RELEASE_BEFORE_CLOSE = """UPDATE care_cases SET state = 'closed', closed_by = $2, closed_at = now(), note = $3,
                                 version = version + 1 WHERE id = $1"""
"""How the release before care claims (up to 0009) closed a care case: no look at any claim."""


async def _claimed_case(pool) -> learning.CareCase:
    async with pool.acquire() as conn:
        care = await learning.open_care(conn, "shared_vybe", uuid.uuid4(), "member", 0.9, "test")
    claimed = await learning.claim_care(pool, str(care.care_id), care.version, "mod-one", 60.0)
    return claimed.care


async def test_an_older_gateways_close_cannot_close_over_a_live_claim(pool) -> None:
    """mod-one is reaching out; an older gateway's close for mod-two fails with SQLSTATE VY409 and the case stays
    open and claimed. mod-one's own close, by that older release, goes through."""
    care = await _claimed_case(pool)
    with pytest.raises(asyncpg.PostgresError) as err:
        await pool.execute(RELEASE_BEFORE_CLOSE, care.care_id, "mod-two", "called them")
    assert err.value.sqlstate == learning.CARE_CLAIMED
    row = await pool.fetchrow("SELECT state, claimed_by FROM care_cases WHERE id = $1", care.care_id)
    assert (row["state"], row["claimed_by"]) == ("open", "mod-one")
    await pool.execute(RELEASE_BEFORE_CLOSE, care.care_id, "mod-one", "called them")
    assert await pool.fetchval("SELECT closed_by FROM care_cases WHERE id = $1", care.care_id) == "mod-one"


async def test_a_lapsed_claim_holds_nothing_against_an_older_gateway(pool) -> None:
    """Once the lease is over (by the database's clock) anyone's close goes through, as with this release."""
    care = await _claimed_case(pool)
    await pool.execute("UPDATE care_cases SET claim_expires_at = now() - interval '1 second' WHERE id = $1",
                       care.care_id)
    await pool.execute(RELEASE_BEFORE_CLOSE, care.care_id, "mod-two", None)
    assert await pool.fetchval("SELECT state FROM care_cases WHERE id = $1", care.care_id) == "closed"


async def test_this_release_answers_the_guard_as_a_conflict(pool, monkeypatch) -> None:
    """Were this release's own check ever to let a close through under another's claim (here: a check that skips the
    claim), the database's refusal comes back as `conflict`, nothing is closed and nothing is audited."""
    care = await _claimed_case(pool)

    async def unchecked(conn, cid, version, moderator):  # the row, locked, with no look at the claim
        return await conn.fetchrow("SELECT * FROM care_cases WHERE id = $1 FOR UPDATE", cid)

    monkeypatch.setattr(learning, "_locked_care", unchecked)
    audited = await pool.fetchval("SELECT count(*) FROM moderation_audit")
    with pytest.raises(Conflict, match="mod-one is reaching out") as err:
        await learning.close_care(pool, str(care.care_id), care.version, "mod-two", None)
    assert getattr(err.value.__cause__, "sqlstate", None) == learning.CARE_CLAIMED, "the database's refusal"
    assert await pool.fetchval("SELECT state FROM care_cases WHERE id = $1", care.care_id) == "open"
    assert await pool.fetchval("SELECT count(*) FROM moderation_audit") == audited

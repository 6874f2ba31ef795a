"""Moderation commands (claim, resolve, reopen, appeal) against real PostgreSQL: at most once per request id."""

from __future__ import annotations

import msgspec
import pytest

from db import moderation as mdb
from db import writes
from db.outbox import Announcement

pytestmark = pytest.mark.anyio


async def _flagged_vybe(pool) -> tuple[str, mdb.CaseView]:
    for user, role in (("author", "MEMBER"), ("mod1", "MODERATOR"), ("mod2", "MODERATOR")):
        await writes.upsert_user(pool, user, role)
    vybe = await writes.post_vybe(pool, "author", content="I know where you live")
    async with pool.acquire() as conn:
        case_id = await mdb.open_case(conn, "shared_vybe", str(vybe.id), ["threat>=0.50 (0.91)"], {"threat": 0.91},
                                      model_flagged=True)
        return str(vybe.id), (await mdb.case_views(conn, [case_id]))[0]


async def _audit(pool) -> list[tuple[str, str]]:
    return [(r["actor_id"], r["action"]) for r in await pool.fetch("SELECT actor_id, action FROM moderation_audit "
                                                                    "ORDER BY id")]


def _announced() -> Announcement:
    """An announcement that records each result it is asked to build events for (a replay must ask none)."""
    seen: list[object] = []

    def record(result: object) -> list[object]:
        seen.append(result)
        return []

    announce = Announcement.of(record)
    announce.seen = seen  # type: ignore[attr-defined]
    return announce


async def test_a_retried_moderation_command_is_answered_from_its_first_result(pool) -> None:
    """Claim, resolve and reopen sent twice with the same request id (the first answer lost) apply once: the retry
    gets the first result marked replayed, announces nothing, audits nothing, and is not refused as stale although
    the case's version has moved on. Without the id, the same retry is a conflict."""
    _, case = await _flagged_vybe(pool)
    cid = str(case.case_id)
    first = await mdb.claim(pool, cid, case.version, "mod1", 60.0, request_id="m-claim")
    again_announce = _announced()
    again = await mdb.claim(pool, cid, case.version, "mod1", 60.0, request_id="m-claim", announce=again_announce)
    assert (again.case, again.replayed, first.replayed) == (first.case, True, False)
    assert again_announce.seen == [] and again_announce.rows == []  # type: ignore[attr-defined]

    resolved = await mdb.resolve(pool, cid, first.case.version, "hide", "threat", "mod1", request_id="m-hide")
    retried = await mdb.resolve(pool, cid, first.case.version, "hide", "threat", "mod1", request_id="m-hide",
                                announce=_announced())
    assert retried == msgspec.structs.replace(resolved, replayed=True)
    reopened = await mdb.reopen(pool, cid, resolved.case.version, "mod1", request_id="m-reopen")
    assert (await mdb.reopen(pool, cid, resolved.case.version, "mod1", request_id="m-reopen")).replayed
    assert reopened.case.state == "open" and not reopened.replayed
    assert await _audit(pool) == [("mod1", "claim"), ("mod1", "hide"), ("mod1", "reopen")]
    with pytest.raises(writes.Conflict):  # no id: a second run meets the newer version
        await mdb.reopen(pool, cid, resolved.case.version, "mod1")


async def test_request_ids_are_per_person_and_per_operation(pool) -> None:
    """Another moderator's command with the same id is their own (applied, or refused on its merits); the same
    person reusing an id for another operation is a conflict, not a replay of the wrong answer."""
    _, case = await _flagged_vybe(pool)
    cid = str(case.case_id)
    claimed = await mdb.claim(pool, cid, case.version, "mod1", 60.0, request_id="r1")
    with pytest.raises(writes.Conflict, match="claimed by mod1"):
        await mdb.claim(pool, cid, claimed.case.version, "mod2", 60.0, request_id="r1")
    with pytest.raises(writes.Conflict, match="another operation"):
        await mdb.resolve(pool, cid, claimed.case.version, "dismiss", None, "mod1", request_id="r1")
    released = await mdb.claim(pool, cid, claimed.case.version, "mod1", 60.0, release=True, request_id="r2")
    assert released.case.claimed_by is None and not released.replayed


async def test_a_retried_appeal_is_answered_from_its_first_result(pool) -> None:
    """An author's appeal resent with the same id answers the first appeal (replayed), not 'appealed once
    already'; a fresh id is still refused, as the appeal is once."""
    vybe_id, case = await _flagged_vybe(pool)
    hidden = await mdb.resolve(pool, str(case.case_id), case.version, "hide", None, "mod1")
    first = await mdb.appeal(pool, "author", "shared_vybe", vybe_id, "about chess", request_id="a1")
    announce = _announced()
    again = await mdb.appeal(pool, "author", "SHARED_VYBE", vybe_id, "about chess", request_id="a1", announce=announce)
    assert again == msgspec.structs.replace(first, replayed=True) and announce.seen == []  # type: ignore[attr-defined]
    assert first.case.version == hidden.case.version + 1 and first.appeal.state == "open"
    with pytest.raises(writes.Conflict, match="appealed once"):
        await mdb.appeal(pool, "author", "shared_vybe", vybe_id, "about chess", request_id="a2")

"""Moderation commands (claim, resolve, reopen, appeal) against real PostgreSQL: at most once per request id."""

from __future__ import annotations

import uuid

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


async def test_request_ids_are_per_person_operation_and_case(pool) -> None:
    """Another moderator's command with the same id is their own (applied, or refused on its merits); the same
    person reusing an id for another operation, or for the same one on another case, is a conflict, not a replay
    of the wrong answer (the moderator would believe the second case decided)."""
    _, case = await _flagged_vybe(pool)
    cid = str(case.case_id)
    other = await writes.post_vybe(pool, "author", content="another one")
    async with pool.acquire() as conn:
        other_case = await mdb.open_case(conn, "shared_vybe", str(other.id), ["reports>=3 (3)"], None)
    claimed = await mdb.claim(pool, cid, case.version, "mod1", 60.0, request_id="r1")
    with pytest.raises(writes.Conflict, match="claimed by mod1"):
        await mdb.claim(pool, cid, claimed.case.version, "mod2", 60.0, request_id="r1")
    with pytest.raises(writes.Conflict, match="another operation"):
        await mdb.resolve(pool, cid, claimed.case.version, "dismiss", None, "mod1", request_id="r1")
    with pytest.raises(writes.Conflict, match="another operation"):
        await mdb.claim(pool, str(other_case), 1, "mod1", 60.0, request_id="r1")
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


async def _held_vybe(pool, *, scored: bool) -> tuple[str, mdb.CaseView]:
    """A vybe held under premoderation and never shown: hidden by the model at its first score, or (not scored)
    hidden by a moderator while it waited for its score."""
    await writes.upsert_user(pool, "author", "MEMBER")
    vybe = await writes.post_vybe(pool, "author", content="I will end you at chess tonight")
    async with pool.acquire() as conn, conn.transaction():
        if scored:
            (item,) = await mdb.fetch_items(conn, [vybe.id], [])
            await mdb.record_score(conn, item, ("keyword", "1"), {"threat": 0.97}, "hide", ["threat>=0.50 (0.97)"],
                                   premoderation=True)
            case_id = await conn.fetchval("SELECT id FROM moderation_cases WHERE target_id = $1", str(vybe.id))
        else:
            case_id = await mdb.open_case(conn, "shared_vybe", str(vybe.id), ["unscored"], None)
        view = (await mdb.case_views(conn, [case_id]))[0]
    if not scored:
        view = (await mdb.resolve(pool, str(view.case_id), view.version, "hide", None, "mod1",
                                  premoderation=True)).case
    return str(vybe.id), view


async def _state(pool, vybe_id: str) -> str:
    return await pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid", vybe_id)


@pytest.mark.parametrize("scored", [True, False], ids=["hidden-at-first-score", "hidden-before-its-score"])
async def test_a_vybe_never_shown_stays_out_of_view_on_reopen_and_is_unshown_when_let_out(pool, scored) -> None:
    """Under premoderation, content nobody was shown: a reopen keeps it out of view (hidden if the model scored it;
    pending, for the sweeper to score, if it never had a score), and the decision that lets it out says it was
    unshown (the gateway announces `vybe.created`); once let out it is shown, so a later decision is ordinary."""
    await writes.upsert_user(pool, "mod1", "MODERATOR")
    vybe_id, case = await _held_vybe(pool, scored=scored)
    cid = str(case.case_id)
    if scored:
        case = (await mdb.resolve(pool, cid, case.version, "remove", None, "mod1", premoderation=True)).case
    reopened = await mdb.reopen(pool, cid, case.version, "mod1")
    assert (reopened.unshown, reopened.was_hidden) == (True, False)
    assert await _state(pool, vybe_id) == ("removed" if scored else "pending")
    if not scored:  # the sweeper retries it: never scored, and waiting
        assert (("vybe", uuid.UUID(vybe_id)) in await mdb.unscored(pool, older_than_s=0.0))
        return
    let_out = await mdb.resolve(pool, cid, reopened.case.version, "restore", None, "mod1", premoderation=True)
    assert let_out.unshown and await _state(pool, vybe_id) == "approved"
    again = await mdb.reopen(pool, cid, let_out.case.version, "mod1")
    assert not again.unshown and await _state(pool, vybe_id) == "flagged"
    hidden = await mdb.resolve(pool, cid, again.case.version, "hide", None, "mod1", premoderation=True)
    assert not hidden.unshown and not hidden.was_hidden


async def test_user_reports_leave_content_waiting_for_its_score_held(pool) -> None:
    """Reports that reach the threshold flag scored content (approved: still visible, now under review), but
    leave content still waiting for its first score pending: under premoderation flagging it would show it."""
    for user in ("author", "r1", "r2"):
        await writes.upsert_user(pool, user, "MEMBER")
    waiting = await writes.post_vybe(pool, "author", content="not scored yet")
    scored = await writes.post_vybe(pool, "author", content="scored and approved")
    await pool.execute("UPDATE shared_vybes SET moderation_state = 'approved' WHERE id = $1", scored.id)
    for vybe in (waiting, scored):
        async with pool.acquire() as conn, conn.transaction():
            assert await mdb.on_user_report(conn, "shared_vybe", str(vybe.id), 0) is not None
    assert (await _state(pool, str(waiting.id)), await _state(pool, str(scored.id))) == ("pending", "flagged")


async def test_a_resolved_case_is_decided_again_only_after_a_reopen(pool) -> None:
    """A second resolve of a resolved case, even at its current version, is a conflict (before, it relabelled the
    content and sent the author a second outcome): reopen it first."""
    _, case = await _flagged_vybe(pool)
    cid = str(case.case_id)
    hidden = await mdb.resolve(pool, cid, case.version, "hide", None, "mod1")
    with pytest.raises(writes.Conflict, match="reopen"):
        await mdb.resolve(pool, cid, hidden.case.version, "remove", None, "mod1")
    reopened = await mdb.reopen(pool, cid, hidden.case.version, "mod1")
    removed = await mdb.resolve(pool, cid, reopened.case.version, "remove", None, "mod1")
    assert removed.case.resolution == "remove"

"""Moderators reaching out to members in distress (care claims, then closes) while PostgreSQL is SIGKILLed and down
3 s, each request resent with the same id after `unavailable` or a lost connection, as the console does: every
answer during the outage is a typed 503 `unavailable` with retry_after, and every care case ends claimed once and
closed once (one audit row each), a claim or close that had landed answered `replayed`, never a `conflict`. The
same holds when only the answers of commits are lost (a network fault just after COMMIT)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from db import learning
from services import CommitCutter

if TYPE_CHECKING:
    from conftest import Rig

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

CASES = 18
DOWN_S = 3.0


Answer = tuple[int, dict[str, Any]]


async def _send(http: httpx.AsyncClient, url: str, body: dict[str, Any], seen: list[Answer]) -> Answer:
    """POST until an answer other than `unavailable` (or a lost connection) comes back, with the same body and id."""
    answer: Answer = (0, {})
    for _ in range(120):
        try:
            r = await http.post(url, json=body)
        except httpx.TransportError:
            await asyncio.sleep(0.3)
            continue
        answer = (r.status_code, r.json())
        seen.append(answer)
        if r.status_code != 503:
            return answer
        await asyncio.sleep(float(answer[1].get("retry_after") or 0.3))
    return answer


async def _claim(http: httpx.AsyncClient, care: learning.CareCase, i: int, seen: list[Answer]) -> Answer:
    """ "I'm reaching out" on one care case."""
    return await _send(http, f"/api/mod/care/{care.care_id}/claim", {"version": care.version, "id": f"claim-{i}"},
                       seen)


async def _close(http: httpx.AsyncClient, care: learning.CareCase, claimed: Answer, i: int,
                 seen: list[Answer]) -> Answer:
    """Close it, with the version the claim answered."""
    return await _send(http, f"/api/mod/care/{care.care_id}/close",
                       {"version": claimed[1]["version"], "note": "called her", "id": f"close-{i}"}, seen)


async def _open_cases(rig: Rig) -> list[learning.CareCase]:
    conn = await asyncpg.connect(rig.dsn)
    try:
        cases = [await learning.open_care(conn, "shared_vybe", uuid.uuid4(), f"member{i}", 0.9, "test")
                 for i in range(CASES)]
    finally:
        await conn.close()
    return [c for c in cases if c is not None]


async def _each_claimed_and_closed_once(rig: Rig, claims: list[Answer], closes: list[Answer],
                                        seen: list[Answer]) -> None:
    assert [a[0] for a in claims + closes] == [200] * (2 * CASES), f"steps not acknowledged: {claims + closes}"
    assert all(body["state"] == "closed" for _, body in closes)
    outage = [body for status, body in seen if status == 503]
    assert all(b.get("code") == "unavailable" and b.get("retry_after") for b in outage), outage[:3]
    conn = await asyncpg.connect(rig.dsn)
    try:
        states = await conn.fetch("SELECT state, closed_by, claimed_by FROM care_cases")
        audit = await conn.fetch("""SELECT detail->>'care_id' AS care_id, action, count(*) AS n FROM moderation_audit
                                     WHERE action LIKE 'care.%' GROUP BY 1, 2""")
    finally:
        await conn.close()
    assert sorted(tuple(r) for r in states) == [("closed", "carer", None)] * CASES
    counts = {(r["care_id"], r["action"]): r["n"] for r in audit}
    assert sorted(counts.values()) == [1] * (2 * CASES), f"audit rows per case and step: {counts}"
    assert {a for _, a in counts} == {"care.claim", "care.close"}


def _replayed(answers: list[Answer]) -> int:
    return sum(1 for _, body in answers if body.get("replayed"))


async def _under_kill(rig: Rig, steps: list[Any]) -> list[Answer]:
    """Start ``steps`` (coroutines) as a steady stream; SIGKILL PostgreSQL a third of the way in, keep it down
    DOWN_S, start it again; every step's final answer."""
    tasks: list[asyncio.Task[Answer]] = []
    killed = time.monotonic()
    for i, step in enumerate(steps):
        tasks.append(asyncio.create_task(step))
        if i == len(steps) // 3:
            await asyncio.to_thread(rig.pg.kill)
            killed = time.monotonic()
        await asyncio.sleep(0.02)
    await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))
    await asyncio.to_thread(rig.pg.start)
    return list(await asyncio.wait_for(asyncio.gather(*tasks), 90))


@pytest.mark.timeout(180)
async def test_postgres_killed_while_moderators_reach_out_each_claim_and_close_lands_once(rig: Rig) -> None:
    """Two outages: one in the middle of a stream of claims, one in the middle of the closes that follow."""
    [gw] = await rig.start(gateways=1, workers=0)
    cases = await _open_cases(rig)
    seen_claims: list[Answer] = []
    seen_closes: list[Answer] = []
    headers = {"Authorization": f"Bearer {rig.token('carer', 'MODERATOR')}"}
    async with httpx.AsyncClient(base_url=gw.http, headers=headers, timeout=10) as http:
        claims = await _under_kill(rig, [_claim(http, c, i, seen_claims) for i, c in enumerate(cases)])
        assert [a[0] for a in claims] == [200] * CASES, claims
        closes = await _under_kill(rig, [_close(http, c, claims[i], i, seen_closes) for i, c in enumerate(cases)])
    assert any(s == 503 for s, _ in seen_claims) and any(s == 503 for s, _ in seen_closes), "a step missed its outage"
    await _each_claimed_and_closed_once(rig, claims, closes, seen_claims + seen_closes)
    print(json.dumps({"scenario": "postgres_killed_mid_care_claims_and_closes", "cases": CASES, "down_s": DOWN_S,
                      "requests": len(seen_claims) + len(seen_closes),
                      "unavailable": sum(1 for s, _ in seen_claims + seen_closes if s == 503),
                      "replayed": _replayed(claims + closes)}))


@pytest.mark.timeout(180)
async def test_care_steps_whose_commit_answer_is_lost_are_replayed_not_repeated(rig: Rig) -> None:
    """For 2 s at the start of the claims, and again of the closes, every connection is cut as PostgreSQL reports a
    COMMIT done: the step landed, the gateway never heard so; the moderator's resend (same id) is answered
    `replayed`, not `conflict` on the version it moved."""
    cutter = await CommitCutter(rig.pg.port).start()
    try:
        [gw] = await rig.start(gateways=1, workers=0,
                               VYBE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{cutter.port}/"
                                                 f"{rig.dsn.rsplit('/', 1)[1]}?sslmode=disable")
        cases = await _open_cases(rig)
        seen: list[Answer] = []
        headers = {"Authorization": f"Bearer {rig.token('carer', 'MODERATOR')}"}

        async def cut(steps: list[Any]) -> list[Answer]:
            cutter.armed = True
            tasks = [asyncio.create_task(step) for step in steps]
            await asyncio.sleep(2.0)
            cutter.armed = False
            return list(await asyncio.wait_for(asyncio.gather(*tasks), 90))

        async with httpx.AsyncClient(base_url=gw.http, headers=headers, timeout=10) as http:
            claims = await cut([_claim(http, c, i, seen) for i, c in enumerate(cases)])
            assert [a[0] for a in claims] == [200] * CASES, claims
            closes = await cut([_close(http, c, claims[i], i, seen) for i, c in enumerate(cases)])
        print(json.dumps({"scenario": "care_commit_answers_lost", "cases": CASES, "cut_s": 2.0,
                          "commits_cut": cutter.cut, "requests": len(seen), "replayed_claims": _replayed(claims),
                          "replayed_closes": _replayed(closes)}))
        assert _replayed(claims) >= 1 and _replayed(closes) >= 1, "no claim, or no close, landed with its answer lost"
        await _each_claimed_and_closed_once(rig, claims, closes, seen)
    finally:
        await cutter.close()

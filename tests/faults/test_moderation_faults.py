"""A moderator's decisions through PostgreSQL faults, resent with the same id until acknowledged (as the SDKs
do): PostgreSQL SIGKILLed in the middle of a stream of decisions and down 3 s; and, for 2 s, every connection
cut at the moment PostgreSQL reports a COMMIT done (a network fault that loses the answer of a commit that
landed: the case the idempotency keys exist for). Every case ends decided exactly once: one audit row, one
outcome to its author, a decision that had landed answered `replayed`, never a `conflict`."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from scenario import wait_until
from services import CommitCutter

if TYPE_CHECKING:
    from conftest import Rig
    from load import Client, Outcome

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

CASES = 24
DOWN_S = 3.0


async def _decide(mod: Client, case: dict[str, Any], index: int, attempts: list[Outcome]) -> Outcome:
    """Resolve one case, resending the same command (same id) after `unavailable`, a lost socket or no answer."""
    cid = f"decide-{index}"
    fields = {"case_id": case["case_id"], "version": case["version"], "action": "hide", "note": "threat"}
    for attempt in range(1, 60):
        out = await mod.call("resolve", cid=cid, attempt=attempt, **fields)
        attempts.append(out)
        if out.kind == "ack" or (out.kind == "error" and out.code != "unavailable"):
            return out
        await asyncio.sleep(out.retry_after or 0.3)
    return out


async def _flagged_cases(mod: Client, authors: list[Client]) -> tuple[list[dict[str, Any]], dict[str, Client]]:
    """Each author posts a threat; the worker flags it: the cases (as `report.flagged` gave them), vybe -> author."""
    targets = {}
    for i, author in enumerate(authors):
        vybe = await author.ok("post_vybe", content=f"I will kill you tonight, you worthless idiot number {i}")
        targets[vybe["id"]] = author

    def flagged() -> dict[str, dict[str, Any]]:
        return {e["data"]["target_id"]: e["data"] for e in mod.received("mod:flagged")
                if e["event"] == "report.flagged" and e["data"]["target_id"] in targets}

    async def all_flagged() -> bool:
        return len(flagged()) == len(authors)

    assert await wait_until(all_flagged, 60) is not None, f"flagged: {len(flagged())} of {len(authors)}"
    return list(flagged().values()), targets


async def _each_decided_once(rig: Rig, cases: list[dict[str, Any]], answers: list[Outcome],
                             targets: dict[str, Client]) -> None:
    problems = [f"case {c['case_id']}: {a.brief()}" for c, a in zip(cases, answers, strict=True) if a.kind != "ack"]
    assert problems == [], problems
    ids = [c["case_id"] for c in cases]
    audit = await rig.fetchval(
        "SELECT json_object_agg(id::text, n) FROM (SELECT c.id, count(a.id) AS n FROM moderation_cases c"
        " LEFT JOIN moderation_audit a ON a.case_id = c.id AND a.action = 'hide'"
        " WHERE c.id = ANY($1::uuid[]) GROUP BY c.id) t", ids)
    counts = json.loads(audit) if isinstance(audit, str) else audit
    assert sorted(counts.values()) == [1] * len(cases), f"audit rows per case: {counts}"
    hidden = await rig.fetchval(
        "SELECT count(*) FROM moderation_cases c JOIN shared_vybes v ON v.id::text = c.target_id"
        " WHERE c.id = ANY($1::uuid[]) AND c.state = 'resolved' AND c.resolution = 'hide'"
        " AND v.moderation_state = 'hidden'", ids)
    assert hidden == len(cases)

    def outcomes(author: Client, vybe_id: str) -> list[dict[str, Any]]:
        return [e for e in author.events if e["event"] == "moderation.outcome" and e["data"]["target_id"] == vybe_id]

    async def all_told() -> bool:
        return all(outcomes(a, v) for v, a in targets.items())

    await wait_until(all_told, 20)
    await asyncio.sleep(1.0)  # room for a duplicate to show
    sent = {v: len(outcomes(a, v)) for v, a in targets.items()}
    assert sorted(sent.values()) == [1] * len(cases), f"outcomes per author: {sent}"


@pytest.mark.timeout(180)
async def test_postgres_killed_while_a_moderator_decides_each_decision_lands_once(rig: Rig) -> None:
    [gw] = await rig.start(gateways=1, workers=1)
    mod = await rig.client("mod", gw, role="MODERATOR")
    await mod.subscribe("mod:flagged")
    cases, targets = await _flagged_cases(mod, [await rig.client(f"author{i}", gw) for i in range(CASES)])
    attempts: list[Outcome] = []
    decisions: list[asyncio.Task[Outcome]] = []
    killed = time.monotonic()
    for i, case in enumerate(cases):  # a steady stream of decisions; the kill lands in the middle of it
        decisions.append(asyncio.create_task(_decide(mod, case, i, attempts)))
        if i == CASES // 3:
            await asyncio.to_thread(rig.pg.kill)
            killed = time.monotonic()
        await asyncio.sleep(0.01)
    await asyncio.sleep(max(0.0, DOWN_S - (time.monotonic() - killed)))
    await asyncio.to_thread(rig.pg.start)
    answers = await asyncio.wait_for(asyncio.gather(*decisions), 90)
    assert any(a.kind == "error" and a.code == "unavailable" for a in attempts), "no decision met the outage"
    await _each_decided_once(rig, cases, answers, targets)
    print(json.dumps({"scenario": "postgres_killed_mid_decisions", "cases": CASES, "down_s": DOWN_S,
                      "attempts": len(attempts), "unavailable": sum(1 for a in attempts if a.code == "unavailable"),
                      "replayed": sum(1 for a in answers if a.result and a.result.get("replayed"))}))


@pytest.mark.timeout(180)
async def test_commits_whose_answer_is_lost_are_replayed_not_repeated(rig: Rig) -> None:
    cutter = await CommitCutter(rig.pg.port).start()
    try:
        [gw] = await rig.start(gateways=1, workers=1,
                               VYBE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{cutter.port}/"
                                                 f"{rig.dsn.rsplit('/', 1)[1]}?sslmode=disable")
        mod = await rig.client("mod", gw, role="MODERATOR")
        await mod.subscribe("mod:flagged")
        cases, targets = await _flagged_cases(mod, [await rig.client(f"author{i}", gw) for i in range(CASES)])
        attempts: list[Outcome] = []
        cutter.armed = True
        decisions = [asyncio.create_task(_decide(mod, case, i, attempts)) for i, case in enumerate(cases)]
        await asyncio.sleep(2.0)
        cutter.armed = False
        answers = await asyncio.wait_for(asyncio.gather(*decisions), 90)
        replayed = sum(1 for a in answers if a.result and a.result.get("replayed"))
        print(json.dumps({"scenario": "commit_answers_lost", "cases": CASES, "cut_s": 2.0, "commits_cut": cutter.cut,
                          "attempts": len(attempts), "replayed": replayed}))
        assert cutter.cut >= 1 and replayed >= 1, "no decision landed with its answer lost"
        await _each_decided_once(rig, cases, answers, targets)
    finally:
        await cutter.close()

"""PostgreSQL goes away for 10 s under load (a fast shutdown, and a SIGKILLed postmaster):
the gateways answer every command with `unavailable`, keep every socket open, and take
writes again when it is back, without being restarted."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import httpx
import pytest

from scenario import Run, Window, assert_none, few, loss_problems, ready_problems, run_under_load, wait_until

if TYPE_CHECKING:
    from conftest import Rig
    from load import Outcome

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

DOWN_S = 10.0
WRITES_BACK_WITHIN_S = 10.0
ANSWER_WITHIN_S = 6.0  # the pool's connect timeout (5 s) and a margin: a typed answer, never a hang


def outage_violations(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    """Attempts sent and answered (or left unanswered) while PostgreSQL was going or gone that got
    neither an ack (committed before it went) nor ``error`` / ``unavailable`` with a ``retry_after``."""
    during = [o for o in outcomes if o.sent >= start and (o.answered is None or o.answered <= end)]
    return [o for o in during if not (o.kind == "ack" or (o.kind == "error" and o.code == "unavailable"
                                                            and o.retry_after is not None))]


def slow_answers(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    """Attempts sent while PostgreSQL was down that were not answered within ``ANSWER_WITHIN_S``."""
    return [o for o in outcomes if start <= o.sent <= end
            and (o.answered is None or o.answered - o.sent > ANSWER_WITHIN_S)]


async def _rest_calls(rig: Rig) -> list[tuple[int, dict[str, object], str | None]]:
    """A REST write and a REST read on each gateway: (status, body, Retry-After header)."""
    headers = {"Authorization": f"Bearer {rig.token('rest-user')}"}
    out = []
    async with httpx.AsyncClient(timeout=10) as http:
        for gw in rig.gateways:
            for method, path, body in (("POST", "/api/vybes", {"content": "during the outage"}),
                                       ("GET", "/api/feed", None)):
                r = await http.request(method, gw.http + path, json=body, headers=headers)
                out.append((r.status_code, r.json(), r.headers.get("retry-after")))
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kill", [False, True], ids=["fast_stop", "sigkill"])
async def test_postgres_down_10s_answers_unavailable_and_recovers(rig: Rig, kill: bool) -> None:
    """PostgreSQL down 10 s: writes get `unavailable` + retry_after, sockets stay open, writes succeed after."""
    starting = 0.0
    rest: list[tuple[int, dict[str, object], str | None]] = []

    async def fault(w: Window) -> None:
        nonlocal starting
        w.down = time.time()
        await asyncio.to_thread(rig.pg.kill if kill else rig.pg.stop)
        await asyncio.sleep(1.0)
        rest.extend(await _rest_calls(rig))
        await asyncio.sleep(DOWN_S - 1.0)
        starting = time.time()
        await asyncio.to_thread(rig.pg.start)
        w.up = time.time()

    r: Run = await run_under_load(rig, f"postgres_down_{DOWN_S:.0f}s_{'sigkill' if kill else 'fast'}", fault)
    exits = [g.returncode for g in rig.gateways]
    closes = {c.name: c.closes for c in rig.clients if c.closes}
    wrong = outage_violations(r.outcomes, r.window.down, starting)
    back = r.writers_back_s()
    r.report(writers_back_s=back, outage_violations=len(wrong), socket_closes=sum(len(v) for v in closes.values()),
             rest_during_outage=sorted({s for s, _, _ in rest}))
    problems = [] if exits == [None, None] else [f"a gateway exited: {exits}"]
    if hung := slow_answers(r.outcomes, r.window.down + 0.5, starting - ANSWER_WITHIN_S):
        problems.append(f"{len(hung)} commands during the outage waited over {ANSWER_WITHIN_S} s for an answer: "
                        f"{few(hung)}")
    if not rest or any(status != 503 or body.get("code") != "unavailable" or not body.get("retry_after")
                       or not retry for status, body, retry in rest):
        problems.append(f"REST during the outage was not 503 `unavailable` with retry_after and Retry-After: {rest}")
    if wrong:
        problems.append(f"{len(wrong)} commands during the outage not answered `unavailable` with retry_after: "
                        f"{few(wrong)}")
    if closes:
        problems.append(f"sockets closed during the outage (close code, time): {closes}")
    problems += loss_problems(r) + ready_problems(r, require_unready=True)
    if late := {w: s for w, s in back.items() if s is None or s > WRITES_BACK_WITHIN_S}:
        problems.append(f"writers with no acknowledged write within {WRITES_BACK_WITHIN_S} s of the return: {late}")
    assert_none(problems)


@pytest.mark.timeout(120)
async def test_processes_started_while_postgres_is_down_wait_for_it(rig: Rig) -> None:
    """A gateway and a worker started while PostgreSQL is down (a deploy that restarts both) wait for it, saying so,
    instead of dying at once; when it is back 6 s later, the gateway becomes ready and a post is scored."""
    await asyncio.to_thread(rig.pg.stop)
    gw = await rig.add_gateway(wait=False)
    worker = rig.add_worker()
    await asyncio.sleep(6.0)
    alive = (gw.returncode, worker.returncode)
    await asyncio.to_thread(rig.pg.start)
    back = time.monotonic()
    assert alive == (None, None), f"exited while PostgreSQL was down: {alive}\n{gw.tail()}\n{worker.tail()}"
    await gw.wait_ready(30)
    ready_s = round(time.monotonic() - back, 2)
    writer = await rig.client("writer", gw)
    vybe_id = (await writer.ok("post_vybe", content="the first post after the restart"))["id"]
    scored_s = await wait_until(lambda: _scored(rig, vybe_id), 30)
    print(json.dumps({"scenario": "started_while_postgres_down", "down_s": 6.0, "gateway_ready_after_back_s": ready_s,
                      "first_post_scored_s": scored_s}))
    assert scored_s is not None, f"the post was not scored:\n{worker.tail()}"
    for proc in (gw, worker):
        assert "waiting for the database: PostgreSQL does not answer" in proc.log_text(), proc.tail()


async def _scored(rig: Rig, vybe_id: str) -> bool:
    return bool(await rig.fetchval("SELECT count(*) FROM moderation_scores WHERE target_id = $1::uuid", vybe_id))

"""Redis breaks under load: restarted with its data (0.2 s, 2 s, 10 s), restarted empty,
and its pub/sub connections killed. Readers and writers on two gateways keep going."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from scenario import Run, Window, assert_none, loss_problems, ready_problems, run_under_load

if TYPE_CHECKING:
    from conftest import Rig

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("down_s", [0.2, 2.0, 10.0])
async def test_redis_restart_with_data_loses_nothing(rig: Rig, down_s: float) -> None:
    """Redis stopped for down_s and restarted with its AOF: every command answered, nothing lost, no gap needed."""

    async def fault(w: Window) -> None:
        w.down = time.time()
        await asyncio.to_thread(rig.redis.restart, down_s)
        w.up = time.time()

    r: Run = await run_under_load(rig, f"redis_restart_{down_s}s", fault)
    r.report()
    problems = loss_problems(r) + ready_problems(r, require_unready=down_s >= 2.0)
    if gaps := [(d.reader, d.channel) for d in r.deliveries if d.gaps]:
        problems.append(f"history survived the restart, yet subscribers were told of a gap: {gaps}")
    if r.first_ack_after_up_s() is None:
        problems.append("no write was acknowledged after Redis came back")
    assert_none(problems)


@pytest.mark.timeout(180)
async def test_redis_data_loss_is_announced_and_new_history_complete(rig: Rig) -> None:
    """Redis restarted empty after 2 s: readers get `gap`; every vybe committed since the outage is in new history."""

    async def fault(w: Window) -> None:
        await asyncio.to_thread(rig.redis.stop)
        # Marked after the stop: a vybe created from here on cannot have reached the history that is lost.
        w.down = time.time()
        await asyncio.sleep(2.0)
        rig.redis.wipe()
        await asyncio.to_thread(rig.redis.start)
        w.up = time.time()

    r = await run_under_load(rig, "redis_data_loss_2s", fault, feed_since_down=True)
    r.report()
    problems = loss_problems(r) + ready_problems(r, require_unready=True)
    if untold := [d.reader for d in r.deliveries if d.channel == "feed" and not d.gaps]:
        problems.append(f"feed history was lost but these readers got no `gap` notice: {untold}")
    # After the notice the hub delivers what the new history already holds: nothing in it is skipped.
    if skipped := {f"{d.reader} {d.channel}": d.excused for d in r.deliveries if d.excused}:
        problems.append(f"events of the new history skipped after the gap notice: {skipped}")
    assert_none(problems)


@pytest.mark.timeout(120)
async def test_pubsub_connections_killed_recover_without_gap(rig: Rig) -> None:
    """CLIENT KILL TYPE pubsub twice under load: gateways resubscribe and backfill; readers miss nothing."""
    killed: list[int] = []

    async def fault(w: Window) -> None:
        w.down = time.time()
        killed.append(await asyncio.to_thread(rig.redis.client_kill_pubsub))
        await asyncio.sleep(1.0)
        killed.append(await asyncio.to_thread(rig.redis.client_kill_pubsub))
        w.up = time.time()  # recovery is measured from the second kill

    r = await run_under_load(rig, "redis_pubsub_killed", fault)
    r.report(pubsub_connections_killed=killed)
    assert killed[0] >= 2, f"expected a pub/sub connection per gateway to kill, killed {killed}"
    problems = loss_problems(r) + ready_problems(r, require_unready=False)
    if gaps := [(d.reader, d.channel) for d in r.deliveries if d.gaps]:
        problems.append(f"history was intact, yet subscribers were told of a gap: {gaps}")
    assert_none(problems)

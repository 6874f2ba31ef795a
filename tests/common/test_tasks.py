"""Supervised loops: a failure is logged, counted and restarted; cancellation ends them."""

from __future__ import annotations

import asyncio

import pytest

from common.tasks import Supervisor, backoff

pytestmark = pytest.mark.anyio


async def test_a_failing_loop_is_restarted_counted_and_reported() -> None:
    """A loop that raises twice runs a third time; its restarts are counted and it reads as
    not running while it waits out a failure."""
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}")
        healthy.set()
        await asyncio.Event().wait()

    sup = Supervisor()
    task = sup.add("flaky", flaky)
    await asyncio.sleep(0.05)
    assert sup.status() == {"flaky": False}  # failed, backing off
    await asyncio.wait_for(healthy.wait(), 5)
    assert runs == 3 and sup.restarts() == {"flaky": 2}
    await asyncio.sleep(1.1)
    assert sup.status() == {"flaky": True}
    await sup.stop()
    assert not task.running


async def test_a_loop_that_returns_is_restarted_too() -> None:
    """A loop is meant to run for ever: returning counts as a failure."""
    runs = 0

    async def quits() -> None:
        nonlocal runs
        runs += 1

    sup = Supervisor()
    sup.add("quits", quits)
    await asyncio.sleep(0.5)
    await sup.stop()
    assert runs >= 2 and sup.restarts()["quits"] >= 1


def test_backoff_is_capped_and_jittered() -> None:
    """Doubling from 0.1 s, never above 2.5 s (2 s +25 % jitter), never below 0.075 s."""
    waits = [backoff(n) for n in range(40)]
    assert all(0.075 <= w <= 2.5 for w in waits)
    assert max(backoff(30) for _ in range(50)) > 1.5

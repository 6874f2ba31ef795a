"""Supervised loops: a failure is logged, counted and restarted; cancellation ends them. The worker loop's heartbeat."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from common.tasks import Heartbeat, Supervisor, alive_within, backoff

if TYPE_CHECKING:
    from pathlib import Path

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


def test_the_heartbeat_touches_its_file_at_most_every_few_seconds(tmp_path: Path) -> None:
    """The first beat creates the file; beats within EVERY_S do not touch it again; no path, no file."""
    path = tmp_path / "alive"
    beat = Heartbeat(str(path))
    beat.beat()
    assert path.exists()
    os.utime(path, (1_000_000, 1_000_000))  # long ago
    beat.beat()
    assert path.stat().st_mtime == 1_000_000, "touched again within EVERY_S"
    beat.last -= Heartbeat.EVERY_S
    beat.beat()
    assert time.time() - path.stat().st_mtime < 60
    Heartbeat(None).beat()  # nothing to touch, nothing raised


def test_alive_within_reads_the_files_age(tmp_path: Path) -> None:
    """Fresh: alive; older than the limit, or missing: not."""
    path = tmp_path / "alive"
    assert not alive_within(str(path), 120) and not alive_within(None, 120)
    path.touch()
    assert alive_within(str(path), 120)
    os.utime(path, (time.time() - 300, time.time() - 300))
    assert not alive_within(str(path), 120)


def test_vybe_worker_alive_is_a_liveness_probe(tmp_path: Path) -> None:
    """`vybe worker --alive 120`: 0 for a fresh file, 1 for a stale one, 2 (one line) without VYBE_WORKER_ALIVE_FILE."""
    path = tmp_path / "alive"
    base = {k: v for k, v in os.environ.items() if not k.startswith("VYBE_")}

    def probe(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cli", "worker", "--alive", "120"], env={**base, **env},
                              capture_output=True, text=True, timeout=60, check=False)

    path.touch()
    assert probe(VYBE_WORKER_ALIVE_FILE=str(path)).returncode == 0
    os.utime(path, (time.time() - 300, time.time() - 300))
    assert probe(VYBE_WORKER_ALIVE_FILE=str(path)).returncode == 1
    unset = probe()
    assert unset.returncode == 2 and "VYBE_WORKER_ALIVE_FILE" in unset.stderr


def test_a_worker_start_forgets_the_file_of_the_process_before(tmp_path: Path) -> None:
    """The file a crashed worker left in its pod would pass the probe for the next one before its loop turns."""
    path = tmp_path / "alive"
    path.touch()
    Heartbeat(str(path)).forget()
    assert not path.exists()
    Heartbeat(str(path)).forget()  # nothing there: nothing raised

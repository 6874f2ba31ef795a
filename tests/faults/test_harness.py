"""The fault harness itself: services stop, die and come back as the scenarios need,
gateways start and report readiness, and the client sees what it should."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import asyncpg
import pytest
import redis

from checks import HistoryEvent, case_version_problems, delivery, read_history
from load import Client, Lost
from scenario import Window, assert_none, loss_problems, ready_problems, run_under_load

if TYPE_CHECKING:
    from conftest import Rig
    from services import PostgresProc, RedisProc

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def test_redis_restart_keeps_or_loses_data_on_the_same_port(redis_proc: RedisProc) -> None:
    """A SIGKILLed Redis comes back on its port with every write (AOF fsync always); a wiped one empty."""
    port = redis_proc.port
    client = redis.Redis.from_url(redis_proc.url)
    client.set("k", "v")
    client.close()
    redis_proc.restart(0.1, kill=True)
    client = redis.Redis.from_url(redis_proc.url)
    assert redis_proc.port == port and client.get("k") == b"v"
    client.close()
    redis_proc.restart(0.1, lose_data=True)
    client = redis.Redis.from_url(redis_proc.url)
    assert client.get("k") is None
    client.close()


async def test_postgres_kill_and_stop_restart_keep_commits(pg_proc: PostgresProc) -> None:
    """A SIGKILLed postmaster recovers every committed row on restart; a fast stop too."""
    dsn = pg_proc.create_database("harness")
    conn = await asyncpg.connect(dsn)
    await conn.execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)")
    await conn.close()
    await asyncio.to_thread(pg_proc.restart, 0.1, kill=True)
    await asyncio.to_thread(pg_proc.restart, 0.1)
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM t") == 1
    finally:
        await conn.close()


async def test_gateway_serves_and_reports_readiness(rig: Rig) -> None:
    """Two gateways become ready; a post on one reaches a feed reader on the other; /readyz is 503 without Redis."""
    gw0, gw1 = await rig.start(gateways=2, workers=0)
    writer, reader = await rig.client("w", gw0), await rig.client("r", gw1)
    await reader.subscribe("feed")
    vybe = await writer.ok("post_vybe", content="hello")
    deadline = time.monotonic() + 5
    while not reader.received("feed") and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll of a socket
        await asyncio.sleep(0.05)
    assert [e["data"]["id"] for e in reader.received("feed")] == [vybe["id"]]
    history = await read_history(rig.redis.url, rig.prefix, "feed")
    assert [h.data["id"] for h in history] == [vybe["id"]]
    await asyncio.to_thread(rig.redis.stop)
    try:
        assert await gw0.readyz() == 503
    finally:
        await asyncio.to_thread(rig.redis.start)
    await gw0.wait_ready(timeout=15)


async def test_load_without_fault_passes_every_check(rig: Rig) -> None:
    """Control: the same load and checks with no fault find nothing wrong (no false alarms)."""

    async def no_fault(w: Window) -> None:
        w.down = w.up = time.time()

    r = await run_under_load(rig, "control_no_fault", no_fault)
    r.report()
    assert_none(loss_problems(r) + ready_problems(r, require_unready=False))
    assert r.load.acked("post_vybe"), "the load posted nothing"
    assert all(len(c.received("feed")) >= len(r.load.acked("post_vybe")) for c in r.load.readers)


def test_checks_catch_misses_gaps_and_stale_versions() -> None:
    """The checks themselves: a missed event fails unless a gap notice came after it; versions must rise."""
    history = [HistoryEvent("feed", f"1-{i}-0", "vybe.created", 100.0 + i, {"id": str(i)}) for i in range(1, 4)]
    reader = Client("r", [], "")
    reader.events = [{"channel": "feed", "offset": "1-1-0"}, {"channel": "feed", "offset": "1-3-0"},
                     {"channel": "feed", "offset": "1-3-0"}]
    d = delivery(reader, "feed", history, None)
    assert [m.offset for m in d.missing] == ["1-2-0"] and d.duplicates == ["1-3-0"]
    reader.lost = [Lost("feed", 102.5, "gap")]
    assert delivery(reader, "feed", history, "1-1-0").missing == []
    cases = [HistoryEvent("mod:flagged", f"1-{i}-0", "report.flagged", 0.0, data) for i, data in enumerate([
        {"target_id": "t", "version": 1, "report_count": 1}, {"target_id": "t", "version": 1, "report_count": 2},
        {"target_id": "t", "version": 3, "report_count": 3}, {"target_id": "t", "version": 2, "report_count": 3}])]
    problems = case_version_problems(cases, {"t": 3})
    assert len(problems) == 3, problems  # same version changed; version went back; last announced != stored

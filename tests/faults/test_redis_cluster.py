"""A Redis Cluster (3 masters, 3 replicas, this test's own) loses a master under load.

Gateways and a worker find out that ``VYBE_REDIS_URL`` names a cluster and use cluster
clients and sharded pub/sub. The master owning a busy key's slot is SIGKILLed (a machine
lost, not restarted): its replica is promoted by the cluster (node timeout 1 s), and the
system recovers without restarts, with the fault suite's checks: every command answered,
no acknowledged write missing from PostgreSQL, the feed history complete, every reader
complete (gap-free or told), counters exact.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from checks import read_history
from db import apps
from db.pool import create_pool
from scenario import Window, assert_none, loss_problems, ready_problems, run_under_load, wait_until

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Rig

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# Which master dies: the one holding the global feed's history and pub/sub, or the one
# holding the moderation job stream (no hash tag: its own slot).
VICTIMS = {"feed": "h:{feed}", "jobs": "moderation:jobs", "control": "c:{_control}"}
# (control: the gateways' readiness probe channel, whose pub/sub link must move too.)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", sorted(VICTIMS))
async def test_cluster_master_killed_loses_nothing(cluster_rig: Rig, victim: str) -> None:
    rig = cluster_rig
    key = rig.prefix + VICTIMS[victim]
    failover: dict[str, float | int] = {}

    async def fault(w: Window) -> None:
        w.down = time.time()
        failover["killed_port"] = await asyncio.to_thread(rig.redis.kill_master_of, key)
        failover["new_master_port"] = await asyncio.to_thread(rig.redis.wait_failover, key)
        w.up = time.time()
        failover["promoted_after_s"] = round(w.up - w.down, 2)

    r = await run_under_load(rig, f"redis_cluster_{victim}_master_killed", fault)
    r.report(**failover)
    problems = loss_problems(r) + ready_problems(r, require_unready=False)
    if r.first_ack_after_up_s() is None:
        problems.append("no write was acknowledged after the failover")
    feed = [h for h in await read_history(rig.redis.url, rig.prefix, "feed") if h.event == "vybe.created"]
    if not [h for h in feed if h.ts > r.window.up]:
        problems.append("no vybe reached the feed history after the failover")
    # The worker kept scoring: every vybe committed gets scored, a job lost with the master
    # included (its sweeper re-enqueues what stays unscored for VYBE_SWEEP_AFTER_S = 5 s).
    unscored_sql = ("SELECT count(*) FROM shared_vybes v WHERE NOT EXISTS (SELECT 1 FROM moderation_scores s "
                    "WHERE s.target_type = 'shared_vybe' AND s.target_id = v.id)")

    async def all_scored() -> bool:
        return not await rig.fetchval(unscored_sql)

    if await wait_until(all_scored, 30, 0.5) is None:
        unscored = await rig.fetchval(unscored_sql)
        problems.append(f"{unscored} vybes still unscored 30 s after the load ended")
    assert_none(problems)


@pytest.mark.timeout(180)
async def test_cluster_runs_the_whole_flow(cluster_rig: Rig) -> None:
    """On the cluster, with no fault: a post reaches feed readers on the other gateway and a
    moderator on `mod:flagged` (scored by the worker, flagged); viewer counts sum across the
    gateways (the presence script's keys share one slot); the server API publishes once per
    idempotency key and `moderate` with `wait` answers with the decision (a blocking wait)."""
    rig = cluster_rig
    gw0, gw1 = await rig.start(gateways=2, workers=1)
    writer = await rig.client("writer", gw0)
    reader = await rig.client("reader", gw1)
    mod = await rig.client("mod", gw1, role="MODERATOR")
    await reader.subscribe("feed")
    await reader.subscribe("user:reader")
    await mod.subscribe("mod:flagged")
    toxic = await writer.ok("post_vybe", content="you are a worthless idiot and everyone hates you")
    pool = await create_pool(rig.dsn, min_size=1, max_size=2)
    try:
        _, key = await apps.create_app(pool, "miel")
        room = await pool.fetchval("INSERT INTO looprooms (title, slug, creator_id, status) "
                                   "VALUES ('Room', 'room', 'writer', 'PUBLISHED') RETURNING id")
    finally:
        await pool.close()
    viewers = [await rig.client(f"viewer{i}", gw) for i, gw in enumerate((gw0, gw1, gw1))]
    for v in viewers:
        await v.subscribe(f"looproom:{room}")

    async with httpx.AsyncClient(base_url=gw0.http, headers={"authorization": f"Bearer {key}"}, timeout=15) as http:
        body = {"channels": ["user:reader"], "event": "match.created", "data": {"match_id": "m-1"},
                "idempotency_key": "m-1"}
        assert (await http.post("/api/server/publish", json=body)).status_code == 200
        assert (await http.post("/api/server/publish", json=body)).json()["replayed"] is True
        moderated = await http.post("/api/server/moderate", json={
            "content_type": "message", "content_id": "c-1", "author_id": "u-1", "wait": True,
            "text": "you are a worthless idiot and everyone hates you"})
    assert moderated.status_code == 200 and moderated.json()["decision"] is not None, moderated.text

    def has(client: Any, channel: str, pred: Callable[[dict[str, Any]], bool]) -> bool:
        return any(pred(m) for m in client.received(channel))

    checks: dict[str, Callable[[], bool]] = {
        "feed reader got the post": lambda: has(reader, "feed", lambda m: m["data"].get("id") == toxic["id"]),
        "moderator got the flag": lambda: has(mod, "mod:flagged", lambda m: m["event"] == "report.flagged"),
        "viewer counts summed to 3": lambda: all(
            has(v, f"looproom:{room}", lambda m: m["event"] == "looproom.presence" and m["data"]["viewers"] == 3)
            for v in viewers),
    }

    async def all_seen() -> bool:
        return all(c() for c in checks.values())

    await wait_until(all_seen, 20, 0.2)
    assert_none([f"not within 20 s: {name}" for name, c in checks.items() if not c()])
    matches = [m for m in reader.received("user:reader") if m["event"] == "match.created"]
    assert len(matches) == 1, matches


@pytest.mark.timeout(120)
async def test_a_stalled_replica_is_waited_for_and_then_passed_over(cluster_rig: Rig) -> None:
    """The relay sends WAIT 1 after each publish, on the connection that carried the writes: with
    the feed master's replica stopped (SIGSTOP, 1.5 s) WAIT times out (VYBE_REDIS_REPLICA_WAIT_MS)
    and the gateway says so, while posts are still acknowledged and delivered."""
    rig = cluster_rig
    [gw] = await rig.start(gateways=1, workers=0)
    writer, reader = await rig.client("writer", gw), await rig.client("reader", gw)
    await reader.subscribe("feed")
    await writer.ok("post_vybe", content="before the stall")
    replica = rig.redis.replica_of(rig.redis.master_of(rig.prefix + "h:{feed}"))
    assert replica.proc is not None
    replica.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        during = [await writer.ok("post_vybe", content=f"while the replica is stopped {i}") for i in range(3)]
        took = time.monotonic() - started

        async def delivered() -> bool:
            got = {m["data"].get("id") for m in reader.received("feed")}
            return all(v["id"] in got for v in during)

        # Delivered while the replica is still stopped: WAIT gives up after its timeout.
        assert await wait_until(delivered, 5) is not None, "posts made while the replica was stopped not delivered"
        await asyncio.sleep(max(0.0, 1.5 - (time.monotonic() - started)))
    finally:
        replica.proc.send_signal(signal.SIGCONT)

    assert took < 5, f"three posts took {took:.1f} s while a replica was stopped"
    assert "no replica of" in gw.log_text(), "WAIT never timed out: it did not wait for the writes' replica"

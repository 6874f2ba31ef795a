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
import time
from typing import TYPE_CHECKING

import pytest

from checks import read_history
from scenario import Window, assert_none, loss_problems, ready_problems, run_under_load

if TYPE_CHECKING:
    from conftest import Rig

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

# Which master dies: the one holding the global feed's history and pub/sub, or the one
# holding the moderation job stream (no hash tag: its own slot).
VICTIMS = {"feed": "h:{feed}", "jobs": "moderation:jobs"}


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
    deadline = time.monotonic() + 30
    while (unscored := await rig.fetchval(unscored_sql)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    if unscored:
        problems.append(f"{unscored} vybes still unscored 30 s after the load ended")
    assert_none(problems)

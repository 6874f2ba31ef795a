"""A real multi-node run: two gateway processes behind nginx, two workers, one
PostgreSQL, one Redis (deploy/local_cluster.py). Clients connect through nginx."""

from __future__ import annotations

import asyncio
import signal
import socket
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from deploy_support import Peer, load_local_cluster, nginx_binary

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed (apt-get install -y nginx-light)"),
]


@pytest.fixture(scope="module")
def cluster(services: tuple[str, str]) -> Iterator[Any]:
    """Two gateways behind nginx and two workers, on this session's PostgreSQL and Redis."""
    admin_dsn, redis_url = services
    lc = load_local_cluster().LocalCluster(admin_dsn, redis_url, gateways=2, workers=2, extra_env={
        "VYBE_SCORER": "light", "VYBE_MODERATION_MODE": "flag", "VYBE_PRESENCE_INTERVAL_S": "0.2",
        "VYBE_WORKER_CLAIM_IDLE_MS": "1000",
        "VYBE_RATE_PER_S": "1000", "VYBE_RATE_BURST": "1000",
    })
    lc.start()
    try:
        yield lc
    finally:
        lc.stop()


async def _spread(open_: Any, cluster: Any, users: list[str], **kw: Any) -> list[Peer]:
    """Clients through nginx; asserts they landed on both gateways."""
    peers = [await open_(cluster.url, cluster.token(u), **kw) for u in users]
    nodes = {cluster.node_of(p.upstream).name for p in peers}
    assert nodes == {g.name for g in cluster.gateways}, [p.upstreams for p in peers]
    return peers


async def test_posts_cross_nodes_through_nginx(cluster, peers) -> None:
    """Clients spread by nginx over both gateways see each other's posts."""
    clients = await _spread(peers, cluster, [f"x{i}" for i in range(4)])
    for c in clients:
        await c.subscribe("feed")
    for i, c in enumerate(clients):
        await c.call("post_vybe", content=f"hello from {c.upstream} #{i}")
    for c in clients:
        await c.wait_for(lambda c=c: len(c.events("vybe.created", "feed")) >= len(clients), what="4 posts")
        assert sorted(e["data"]["content"] for e in c.events("vybe.created", "feed")) == sorted(
            f"hello from {o.upstream} #{i}" for i, o in enumerate(clients))


async def test_presence_adds_up_across_nodes(cluster, peers) -> None:
    """looproom.presence counts viewers on both nodes; a viewer leaving lowers it everywhere."""
    room = f"looproom:{uuid.uuid4()}"
    viewers = await _spread(peers, cluster, [f"v{i}" for i in range(5)])
    for v in viewers:
        await v.subscribe(room)

    def counts(v: Peer) -> list[int]:
        return [e["data"]["viewers"] for e in v.events("looproom.presence", room)]

    # "Reaches n", not "ends at n": two nodes' presence publishes can arrive out of order
    # (gateway/presence.py publishes after its Lua script, not inside it), which can leave
    # a stale count on screen until the next change. See the report.
    for v in viewers:
        await v.wait_for(lambda v=v: 5 in counts(v), what="5 viewers")
    seen = {v: len(counts(v)) for v in viewers}
    await viewers[0].close()
    for v in viewers[1:]:
        await v.wait_for(lambda v=v: 4 in counts(v)[seen[v]:], what="4 viewers")


async def _pending_of(redis: aioredis.Redis, cluster: Any, consumer: str) -> int:
    info = await redis.xpending(cluster.prefix + "moderation:jobs", "scorers")
    return int({c["name"].decode(): c["pending"] for c in info["consumers"]}.get(consumer, 0))


async def test_worker_sigkill_loses_no_item(cluster, peers) -> None:
    """A worker SIGKILLed while holding unacked jobs: every post still gets exactly one moderation_scores row."""
    poster = await peers(cluster.url, cluster.token("poster"))
    victim = cluster.workers[0]
    consumer = f"{socket.gethostname()}-{victim.proc.pid}"
    ids: list[str] = []

    async def post_all() -> None:
        for i in range(150):
            ack = await poster.call("post_vybe", content=f"item {i} for scoring")
            ids.append(ack["result"]["id"])

    posting = asyncio.create_task(post_all())
    redis = aioredis.Redis.from_url(cluster.redis_url)
    stranded = 0
    try:
        # Kill it while it holds read-but-unacknowledged jobs: freeze it (SIGSTOP) when
        # XPENDING shows some, confirm they are still its own, then SIGKILL.
        for _ in range(3000):
            if posting.done():
                break
            if await _pending_of(redis, cluster, consumer):
                victim.proc.send_signal(signal.SIGSTOP)
                stranded = await _pending_of(redis, cluster, consumer)
                if stranded:
                    break
                victim.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.002)
        victim.proc.send_signal(signal.SIGKILL)
        assert await asyncio.to_thread(victim.proc.wait, 10) == -signal.SIGKILL
    finally:
        await posting
        await redis.aclose()
    assert stranded > 0, "the worker died holding no job: nothing was at risk"
    conn = await asyncpg.connect(cluster.database_url)
    try:
        for _ in range(300):
            scored = await conn.fetchval(
                "SELECT count(DISTINCT target_id) FROM moderation_scores "
                "WHERE target_type = 'shared_vybe' AND target_id = ANY($1::uuid[])", ids)
            if scored == len(ids):
                break
            await asyncio.sleep(0.1)
        assert scored == len(ids), f"{len(ids) - scored} of {len(ids)} posts never scored"
        dupes = await conn.fetchval(
            "SELECT count(*) FROM (SELECT target_id FROM moderation_scores GROUP BY target_id, model_version "
            "HAVING count(*) > 1) d")
        assert dupes == 0
    finally:
        await conn.close()
    cluster.add_worker()  # keep two workers for whatever runs next


async def test_sigterm_failover_resumes_without_gap(cluster, peers) -> None:
    """SIGTERM drains a gateway (1001); its clients resume via nginx on the other node: every post once, in order."""
    # Apps back off before reconnecting: events published meanwhile must come from history.
    watchers = await _spread(peers, cluster, [f"w{i}" for i in range(6)], reconnect_delay=0.15)
    for w in watchers:
        await w.subscribe("feed")
    victim = cluster.gateways[0]
    survivor = cluster.gateways[1]
    on_victim = [w for w in watchers if cluster.node_of(w.upstream) is victim]
    assert on_victim
    # The poster talks to the survivor directly, so the sequence never pauses.
    poster = await peers(survivor.url, cluster.token("seq-poster"), reconnect=False)
    total = 80

    async def post_all() -> None:
        for n in range(total):
            await poster.call("post_vybe", content=f"seq {n}")
            await asyncio.sleep(0.01)

    posting = asyncio.create_task(post_all())
    await asyncio.sleep(0.2)
    victim.proc.send_signal(signal.SIGTERM)
    await posting
    # uvicorn re-raises the captured SIGTERM after its graceful shutdown.
    assert await asyncio.to_thread(victim.proc.wait, 20) in (0, -signal.SIGTERM)

    def seqs(w: Peer) -> list[int]:
        return [int(e["data"]["content"].split()[1]) for e in w.events("vybe.created", "feed")
                if e["data"]["content"].startswith("seq ")]

    for w in watchers:
        await w.wait_for(lambda w=w: len(seqs(w)) >= total, timeout=15, what=f"{total} posts")
    await asyncio.sleep(0.3)  # a duplicate would arrive now
    for w in watchers:
        assert seqs(w) == list(range(total)), seqs(w)
    for w in on_victim:
        assert 1001 in w.closes, w.closes
        assert any(m.get("code") == "going_away" for m in w.messages)
        assert cluster.node_of(w.upstream) is survivor, w.upstreams
        assert w.resumes and all(r["result"]["recovered"] is True for r in w.resumes), w.resumes
    assert sum(r["result"]["missed"] for w in on_victim for r in w.resumes) > 0, "no event was replayed"

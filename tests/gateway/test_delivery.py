"""Delivery guarantees: resume by offset, two nodes, slow consumers, Redis restarts, drain."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import TYPE_CHECKING

import httpx
import pytest
import redis.asyncio as aioredis

from common.bus import Meta, Publisher
from db.embedded import embedded_redis
from gateway_process import free_port, gateway_env, wait_ready
from rooms import viewer_count_is, viewers_on_two_nodes

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


def _seqs(client, channel: str = "feed") -> list[int]:
    return [e["data"]["n"] for e in client.events("test.seq", channel)]


async def test_resume_delivers_missed_in_order_then_live(live, connect) -> None:
    """A client that reconnects with its last offset gets exactly what it missed, in order, then live."""
    pub = live.gateway.publisher
    a = await connect(live, live.token("reader"))
    await a.ok("subscribe", channel="feed")
    for n in range(5):
        await pub.publish("feed", "test.seq", {"n": n})
    await a.wait_for(lambda m: m.get("data", {}).get("n") == 4)
    last = a.events("test.seq")[-1]["offset"]
    await a.close()
    for n in range(5, 12):
        await pub.publish("feed", "test.seq", {"n": n})
    b = await connect(live, live.token("reader"))
    ack = await b.ok("subscribe", channel="feed", since=last)
    assert ack == {"channel": "feed", "recovered": True, "missed": 7}
    await pub.publish("feed", "test.seq", {"n": 12})
    await b.wait_for(lambda m: m.get("data", {}).get("n") == 12)
    assert _seqs(b) == list(range(5, 13))
    # The ack precedes the replayed events.
    kinds = [m["type"] for m in b.messages if m["type"] in ("ack", "event")]
    assert kinds[1] == "ack" and kinds[2] == "event"


async def test_resume_cutover_under_concurrent_publishing(live, connect) -> None:
    """Clients resuming while events are published concurrently see no gap and no duplicate."""
    pub = live.gateway.publisher
    total = 400

    async def produce() -> None:
        for n in range(total):
            await pub.publish("feed", "test.seq", {"n": n})
            if n % 10 == 0:
                await asyncio.sleep(0.002)

    async def reader(i: int) -> list[int]:
        seen: list[int] = []
        c = await connect(live, live.token(f"r{i}"))
        await c.ok("subscribe", channel="feed")
        for _ in range(3):  # drop and resume three times mid-stream
            await asyncio.sleep(random.uniform(0.01, 0.05))
            got = c.events("test.seq")
            seen += [e["data"]["n"] for e in got]
            offset = got[-1]["offset"] if got else None
            await c.close()
            c = await connect(live, live.token(f"r{i}"))
            if offset is None:
                await c.ok("subscribe", channel="feed")
                seen = []  # nothing received yet: start over from live
            else:
                assert (await c.ok("subscribe", channel="feed", since=offset))["recovered"] is True
        await c.wait_for(lambda m: m.get("data", {}).get("n") == total - 1, timeout=20)
        return seen + _seqs(c)

    producer = asyncio.create_task(produce())
    results = await asyncio.gather(*(reader(i) for i in range(6)))
    await producer
    for seen in results:
        assert seen, "reader received nothing"
        assert seen == list(range(seen[0], total)), f"gap or duplicate: {seen[:20]}..."


async def test_resume_from_unknown_epoch_or_trimmed_history(start_gateway, connect) -> None:
    """An offset from another epoch, garbage, or older than the kept history answers recovered=false."""
    live = await start_gateway(history_len=5)
    pub = live.gateway.publisher
    c = await connect(live, live.token("late"))
    first = await pub.publish("feed", "test.seq", {"n": 0})
    for n in range(1, 400):  # MAXLEN ~ trims in whole nodes of ~100 entries
        await pub.publish("feed", "test.seq", {"n": n})
    assert (await c.ok("subscribe", channel="feed", since=first))["recovered"] is False
    epoch, ms, seq = first.split("-")
    c2 = await connect(live, live.token("late2"))
    assert (await c2.ok("subscribe", channel="feed", since=f"1{epoch}-{ms}-{seq}"))["recovered"] is False
    c3 = await connect(live, live.token("late3"))
    assert (await c3.ok("subscribe", channel="feed", since="not-an-offset"))["recovered"] is False
    await pub.publish("feed", "test.seq", {"n": 400})
    for client in (c, c2, c3):  # refused resumes still continue live
        await client.wait_for(lambda m: m.get("data", {}).get("n") == 400)


async def test_two_gateway_processes_share_events(live, connect, settings) -> None:
    """A post on one gateway process reaches a subscriber on another, both ways."""
    port = free_port()
    env = gateway_env(settings, port, VYBE_PRESENCE_INTERVAL_S="0.2")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", "gateway", env=env)
    try:
        await wait_ready(port, lambda: proc.returncode is None)
        other = type(live)(live.settings, live.server, port)
        a = await connect(live, live.token("on-a"))
        b = await connect(other, live.token("on-b"))
        for c in (a, b):
            await c.ok("subscribe", channel="feed")
        await a.ok("post_vybe", content="hello from node A")
        await b.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["content"] == "hello from node A")
        await b.ok("post_vybe", content="hello from node B")
        await a.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["content"] == "hello from node B")
    finally:
        proc.terminate()
        # uvicorn re-raises the captured SIGTERM after a graceful shutdown.
        assert await asyncio.wait_for(proc.wait(), timeout=20) in (0, -15)


async def test_slow_consumer_is_closed_without_slowing_others(start_gateway, connect) -> None:
    """A client that stops reading is closed (4008) and counted; a reading client gets every event."""
    live = await start_gateway(send_queue_bytes=64 * 1024)
    fast = await connect(live, live.token("fast"))
    slow = await connect(live, live.token("slow"), max_queue=1)
    for c in (fast, slow):
        await c.ok("subscribe", channel="feed")
    slow.stop_reading()  # the kernel buffers fill, then our queue
    pub = live.gateway.publisher
    payload = "x" * 4000
    for n in range(1500):
        await pub.publish("feed", "test.seq", {"n": n, "pad": payload})
    await fast.wait_for(lambda m: m.get("data", {}).get("n") == 1499, timeout=30)
    assert _seqs(fast) == list(range(1500))
    metrics = live.gateway.metrics
    for _ in range(100):
        if metrics.slow_consumer_closes._value.get() >= 1:
            break
        await asyncio.sleep(0.05)
    assert metrics.slow_consumer_closes._value.get() == 1
    assert len(live.gateway.connections) == 1
    code, _ = await slow.wait_closed(timeout=15)
    assert code == 4008


async def test_a_socket_that_retries_auth_through_an_outage_is_not_closed_for_slowness(
        start_gateway, connect, tmp_path: Path) -> None:
    """Redis down for 3 s, three times the auth deadline: a new socket answered `unavailable` retries `auth` after
    each `retry_after` and is authenticated once Redis is back. Each `unavailable` starts the deadline again
    (`retry_after` plus `VYBE_AUTH_TIMEOUT_S`); before, the deadline ran from the connect, and the socket was closed
    4001 "no auth in time" while it did as told. A socket that stops trying after one answer is still closed 4001.
    """
    with embedded_redis(tmp_path / "r1") as url:
        live = await start_gateway(redis_url=url, auth_timeout_s=1.0)
    late, idle = await connect(live), await connect(live)
    gave_up = await idle.call("auth", token=live.token("quitter"))  # answered, then never tries again
    assert gave_up["code"] == "unavailable"
    refusals = 0
    down_until = asyncio.get_running_loop().time() + 3.0
    while asyncio.get_running_loop().time() < down_until:
        refused = await late.call("auth", token=live.token("latecomer"))
        assert refused["type"] == "error" and refused["code"] == "unavailable", refused
        refusals += 1
        await asyncio.sleep(min(refused["retry_after"], 1.5))
    assert refusals >= 2 and late.closed is None
    with embedded_redis(tmp_path / "r1"):
        for _ in range(40):
            answer = await late.call("auth", token=live.token("latecomer"))
            if answer["type"] != "error":
                break
            await asyncio.sleep(min(answer["retry_after"], 0.5))
        assert answer["type"] == "ack" and answer["result"]["user_id"] == "latecomer", answer
        await late.ok("subscribe", channel="feed")
    # The deadline still closes a socket that stops trying: retry_after plus the 1 s to auth after the answer.
    code, _ = await idle.wait_closed(timeout=gave_up["retry_after"] + 3.0)
    assert code == 4001


async def test_redis_restart_recovers_missed_events(start_gateway, connect, tmp_path: Path) -> None:
    """Redis down for 2 s (many backoffs) under traffic: readiness goes red, a new client gets a typed
    `unavailable`, a write during the outage is acknowledged and announced once Redis is back, the node
    resubscribes and backfills, so a subscriber misses nothing; after a restart that lost the data it is
    told (gap)."""
    with embedded_redis(tmp_path / "r1") as url:
        live = await start_gateway(redis_url=url)
        c = await connect(live, live.token("survivor"))
        await c.ok("subscribe", channel="feed")
        pub = live.gateway.publisher
        await pub.publish("feed", "test.seq", {"n": 0})
        await c.wait_for(lambda m: m.get("data", {}).get("n") == 0)
    # Redis is down now (its data is on disk: AOF).
    async with httpx.AsyncClient(base_url=live.http) as http:
        for _ in range(100):
            r = await http.get("/readyz")
            if r.status_code == 503:
                break
            await asyncio.sleep(0.05)
        assert r.status_code == 503 and r.json()["redis"] is False
    late = await connect(live)
    refused = await late.call("auth", token=live.token("latecomer"))
    assert refused["type"] == "error" and refused["code"] == "unavailable" and refused["retry_after"] > 0
    written = await c.ok("post_vybe", content="written while Redis was down", id="during-outage")
    await asyncio.sleep(2.0)  # longer than many reconnect attempts
    with embedded_redis(tmp_path / "r1") as url:
        other = aioredis.Redis.from_url(url)
        outside = Publisher(other, live.settings.redis_prefix)
        # Published the moment Redis is back, quite possibly before the node resubscribed.
        for n in range(1, 30):
            await outside.publish("feed", "test.seq", {"n": n})
        await c.wait_for(lambda m: m.get("data", {}).get("n") == 29, timeout=15)
        assert _seqs(c) == list(range(30))
        assert not [m for m in c.messages if m.get("code") == "gap"]
        assert live.gateway.backend.reconnects >= 1
        created = await c.wait_for(lambda m: m.get("event") == "vybe.created", timeout=10)
        assert created["data"]["id"] == written["id"]
        assert (await late.ok("auth", token=live.token("latecomer")))["user_id"] == "latecomer"
        async with httpx.AsyncClient(base_url=live.http) as http:
            for _ in range(40):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert (await http.get("/readyz")).status_code == 200
        await other.aclose()
    # Now a restart that loses everything: a fresh Redis on the same socket path.
    for f in (tmp_path / "r1" / "redis").glob("appendonly*"):
        for g in f.iterdir() if f.is_dir() else [f]:
            g.unlink()
    with embedded_redis(tmp_path / "r1") as url:
        await c.wait_for(lambda m: m.get("type") == "notice" and m.get("code") == "gap", timeout=15)
        other = aioredis.Redis.from_url(url)
        await Publisher(other, live.settings.redis_prefix).publish("feed", "test.seq", {"n": 100})
        await c.wait_for(lambda m: m.get("data", {}).get("n") == 100, timeout=10)
        await other.aclose()


async def test_shutdown_drains_with_1001(start_gateway, connect) -> None:
    """On shutdown every client gets a going_away notice and a 1001 close."""
    live = await start_gateway()
    c = await connect(live, live.token("leaver"))
    await c.ok("subscribe", channel="feed")
    live.server.should_exit = True
    code, _ = await c.wait_closed(timeout=10)
    assert code == 1001
    assert any(m.get("code") == "going_away" for m in c.messages)


async def test_looproom_presence_sums_across_nodes(start_gateway, connect) -> None:
    """Viewer counts add up across two nodes, and drop when viewers leave."""
    _, _, viewers = await viewers_on_two_nodes(start_gateway, connect, 0.2)
    count_is = viewer_count_is
    for v in viewers:
        await v.wait_for(count_is(3), timeout=5)
    await viewers[0].close()
    await viewers[2].wait_for(count_is(2), timeout=5)
    await viewers[1].wait_for(count_is(2), timeout=5)
    await asyncio.sleep(0.6)  # three more report rounds from both nodes
    for v in viewers[1:]:  # the last word is the true total: no stale count delivered late
        assert [e["data"]["viewers"] for e in v.events("looproom.presence")][-1] == 2


async def test_idle_channel_history_expires(start_gateway, connect) -> None:
    """A channel's history and epoch expire together after its last event; resuming then says recovered=false."""
    live = await start_gateway(history_ttl_s=1)
    pub = live.gateway.publisher
    offset = await pub.publish("feed", "test.seq", {"n": 0})
    keys = live.gateway.keys
    assert 0 < await live.gateway.redis.ttl(keys.stream("feed")) <= 1
    assert 0 < await live.gateway.redis.ttl(keys.epoch("feed")) <= 1
    await asyncio.sleep(1.5)
    assert not await live.gateway.redis.exists(keys.stream("feed"), keys.epoch("feed"))
    c = await connect(live, live.token("returning"))
    assert (await c.ok("subscribe", channel="feed", since=offset))["recovered"] is False


async def test_subscribers_waiting_on_a_stalled_subscription_all_get_unavailable(start_gateway, connect,
                                                                                 tmp_path: Path) -> None:
    """Redis stalls (CLIENT PAUSE, longer than the subscribe timeout) while two sockets subscribe to the
    same channel: both get `unavailable` (none is left subscribed to nothing); after the stall both work."""
    with embedded_redis(tmp_path / "stall") as url:
        live = await start_gateway(redis_url=url)
        a, b = [await connect(live, live.token(u)) for u in ("a", "b")]
        room = "looproom:11111111-2222-3333-4444-555555555555"
        other = aioredis.Redis.from_url(url)
        await other.execute_command("CLIENT", "PAUSE", "4500")
        first, second = await asyncio.gather(a.call("subscribe", channel=room), b.call("subscribe", channel=room))
        assert [first["code"], second["code"]] == ["unavailable", "unavailable"], (first, second)
        await asyncio.sleep(2.0)  # the pause is over
        for c in (a, b):
            await c.ok("subscribe", channel=room)
        await live.gateway.publisher.publish(room, "test.seq", {"n": 1})
        for c in (a, b):
            await c.wait_for(lambda m: m.get("data", {}).get("n") == 1)
        await other.aclose()


async def test_a_subscribe_ack_carries_a_resume_point_before_any_event(live, connect) -> None:
    """Without ``since``, the ack names the channel's newest offset: a client that drops before its
    first event resumes from there and misses nothing."""
    poster = await connect(live, live.token("poster"))
    reader = await connect(live, live.token("reader"))
    await poster.ok("post_vybe", content="before the reader came")
    await asyncio.sleep(0.3)
    joined = await reader.ok("subscribe", channel="feed")
    assert joined["recovered"] is None and joined["offset"]
    await reader.close()
    await poster.ok("post_vybe", content="while the reader was away")
    again = await connect(live, live.token("reader"))
    resumed = await again.ok("subscribe", channel="feed", since=joined["offset"])
    assert resumed["recovered"] is True and resumed["missed"] == 1
    missed = await again.wait_for(lambda m: m.get("event") == "vybe.created")
    assert missed["data"]["content"] == "while the reader was away"


async def test_a_channel_with_no_event_yet_still_gives_a_resume_point(start_gateway, connect) -> None:
    """A new user's own channel (or any channel) with no history: the ack still carries an offset, "before
    the first event", and a reconnect that resumes from it gets every event published meanwhile. Before,
    the ack had none, so the first `moderation.outcome` or reaction sent while the app was away was lost.
    Once more events were published than the history keeps, that offset answers recovered: false."""
    live = await start_gateway(history_len=5)
    pub = live.gateway.publisher
    reader = await connect(live, live.token("newcomer"))
    own = await reader.ok("subscribe", channel="user:newcomer")  # held since auth: answered all the same
    room = "looproom:44444444-4444-4444-4444-444444444444"
    empty = await reader.ok("subscribe", channel=room)
    assert own["offset"] and empty["offset"] and own["offset"] != empty["offset"]
    await reader.close()
    await pub.publish("user:newcomer", "test.seq", {"n": 1}, Meta(o="newcomer"))
    await pub.publish("user:newcomer", "test.seq", {"n": 2}, Meta(o="newcomer"))
    back = await connect(live, live.token("newcomer"))
    resumed = await back.ok("subscribe", channel="user:newcomer", since=own["offset"])
    assert resumed["recovered"] is True and resumed["missed"] == 2
    await back.wait_for(lambda m: m.get("data", {}).get("n") == 2)
    assert _seqs(back, "user:newcomer") == [1, 2]
    for n in range(400):  # past the kept history (MAXLEN ~ trims whole nodes of ~100)
        await pub.publish(room, "test.seq", {"n": n})
    trimmed = await back.ok("subscribe", channel=room, since=empty["offset"])
    assert trimmed["recovered"] is False and trimmed["offset"] != empty["offset"]


async def test_a_failed_catch_up_on_a_held_channel_keeps_it_held(start_gateway, connect, tmp_path: Path) -> None:
    """The own `user:` channel is held from `auth` on; a subscribe to it again (the SDKs ask for its resume
    point) whose Redis read fails (here Redis refuses writes: out of memory, as a full Redis or a demoted master
    does) answers `unavailable` and leaves the channel held and live. Before, the failure unsubscribed the socket
    from its own channel: it heard nothing more on it (moderation outcomes, disconnects) until it reconnected."""
    with embedded_redis(tmp_path / "oom") as url:
        live = await start_gateway(redis_url=url)
        client = await connect(live, live.token("member"))
        admin = aioredis.from_url(url)
        try:
            await admin.config_set("maxmemory", 1)
            refused = await client.call("subscribe", channel="user:member")
            assert refused["type"] == "error" and refused["code"] == "unavailable", refused
            await admin.config_set("maxmemory", 0)
            await live.gateway.publisher.publish("user:member", "test.seq", {"n": 1}, Meta(o="member"))
            await client.wait_for(lambda m: m.get("data", {}).get("n") == 1, timeout=5)
        finally:
            await admin.aclose()


async def test_a_killed_pubsub_connection_is_noticed_and_backfilled(start_gateway, connect) -> None:
    """The pub/sub connection killed (CLIENT KILL TYPE pubsub), an event published at once, five times:
    the connection must not come back by itself (redis-py would resubscribe silently and lose what was
    published in between); the gateway reconnects, resubscribes and backfills, so nothing is missed."""
    live = await start_gateway()
    client = await connect(live, live.token("watcher"))
    await client.ok("subscribe", channel="feed")
    gw = live.gateway
    for n in range(5):
        await gw.redis.client_kill_filter(_type="pubsub")
        await gw.publisher.publish("feed", "test.seq", {"n": n})
        await asyncio.sleep(0.3)
    await client.wait_for(lambda m: m.get("data", {}).get("n") == 4, timeout=10)
    assert _seqs(client) == list(range(5))
    assert not client.events("gap") and gw.backend.reconnects >= 5

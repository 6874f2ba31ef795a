"""The Python SDK's WebSocket client (vybe_client.VybeClient) against live gateways: auth, events,
ids, timeouts, reconnect and resume, refresh in band, publish."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from common.bus import Meta
from vybe_client import AuthLost, ClientStopped, CommandError, Event, SubscribeResult, VybeClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def next_event(client: VybeClient, name: str, timeout: float = 5.0, **data: Any) -> Event:
    """The next event called ``name`` (whose ``data`` has the given items) from ``client.events()``;
    the others before it are consumed."""
    async with asyncio.timeout(timeout):
        async for ev in client.events():
            if ev.event == name and all(ev.data.get(k) == v for k, v in data.items()):
                return ev
    raise AssertionError("events() ended")


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.02)


async def test_auth_subscribe_and_an_event_caused_by_another_client(live) -> None:
    alice = VybeClient(live.url, token=live.token("alice"))
    bob = VybeClient(live.url, token=live.token("bob"))
    seen_by_callback: list[Event] = []
    alice.on("event", seen_by_callback.append)
    async with alice, bob:
        assert alice.connected and alice.state == "live"
        assert alice.user_id == "alice" and alice.auth is not None and alice.auth["role"] == "MEMBER"
        assert await alice.subscribe("feed") == SubscribeResult("feed", None, 0)
        assert alice.channels == ("feed",)
        posted = await bob.post_vybe("Grateful for this morning", vybe_type="GRATITUDE")
        ev = await next_event(alice, "vybe.created")
        assert ev.channel == "feed" and ev.data["id"] == posted["id"]
        assert ev.data["user_id"] == "bob" and ev.data["content"] == "Grateful for this morning"
        assert isinstance(ev.ts, float) and isinstance(ev.offset, str) and ev.offset
        assert alice.offset("feed") == ev.offset
        assert seen_by_callback == [ev]
    assert alice.state == "closed" and not alice.connected
    with pytest.raises(CommandError) as err:
        await alice.ping()
    assert err.value.code == "closed"


async def test_acks_and_errors_are_matched_to_their_commands_by_id(live) -> None:
    async with VybeClient(live.url, token=live.token("alice")) as alice, \
            VybeClient(live.url, token=live.token("mod", role="MODERATOR")) as mod:
        # Five commands in flight at once: each gets its own answer, whatever the order they come in.
        refused, pong, empty, vybe, feed = await asyncio.gather(
            alice.subscribe("mod:flagged"), alice.ping(), alice.post_vybe(""), alice.post_vybe("fine"),
            alice.subscribe("feed"), return_exceptions=True)
        assert isinstance(refused, CommandError) and refused.code == "forbidden", refused
        assert isinstance(pong, dict) and isinstance(pong["time"], float), pong
        assert isinstance(empty, CommandError) and empty.code == "invalid_content", empty
        assert isinstance(vybe, dict) and vybe["content"] == "fine" and vybe["user_id"] == "alice", vybe
        assert feed == SubscribeResult("feed", None, 0)
        assert alice.channels == ("feed",), "a refused channel is not held"
        assert (await mod.subscribe("mod:flagged")).channel == "mod:flagged"
        with pytest.raises(CommandError) as err:
            await alice.send("teleport")
        assert err.value.code == "unknown_type"
        # A caller's own id is the idempotency key of a write.
        first = await alice.post_vybe("only once", request_id="sdk-key-1")
        again = await alice.post_vybe("only once", request_id="sdk-key-1")
        assert again["id"] == first["id"] and again.get("replayed") is True


async def test_a_command_times_out_and_its_late_answer_is_ignored(live, proxy_to) -> None:
    proxy = await proxy_to(live.port)
    unmatched: list[CommandError] = []
    async with VybeClient(proxy.url, token=live.token("alice"), command_timeout=0.5) as alice:
        alice.on("error", unmatched.append)
        proxy.freeze()  # the ping reaches the server; its ack is held back
        started = time.monotonic()
        with pytest.raises(CommandError) as err:
            await alice.ping()
        assert err.value.code == "timeout"
        assert 0.45 <= time.monotonic() - started < 2.0
        proxy.thaw()  # the late ack arrives now, for a command no longer waiting
        assert isinstance((await alice.ping())["time"], float)
        assert unmatched == [] and alice.connected


async def test_a_write_in_flight_is_sent_again_with_its_id_after_a_drop(live, proxy_to) -> None:
    proxy = await proxy_to(live.port)
    statuses: list[str] = []
    async with VybeClient(live.url, token=live.token("watcher")) as watcher, \
            VybeClient(proxy.url, token=live.token("alice"), backoff=(0.05, 0.5)) as alice:
        alice.on("status", lambda state, detail: statuses.append(state))
        unrecovered: list[SubscribeResult] = []
        alice.on("unrecovered", unrecovered.append)
        recovered: list[SubscribeResult] = []
        alice.on("recovered", recovered.append)
        quiet = f"vybe:{(await watcher.post_vybe('a quiet channel'))['id']}"
        await alice.subscribe(quiet)  # no event on it before the drop: the ack still names a resume point
        assert alice.offset(quiet)
        await watcher.subscribe("feed")
        proxy.freeze()  # the server stores the vybe; the ack never reaches alice
        post = asyncio.create_task(alice.post_vybe("written once"))
        stored = await next_event(watcher, "vybe.created", content="written once")
        proxy.drop()  # the socket dies without a close frame
        proxy.thaw()
        result = await asyncio.wait_for(post, 10)
        assert result["id"] == stored.data["id"] and result.get("replayed") is True
        assert statuses == ["reconnecting", "connecting", "live"], statuses
        await wait_until(lambda: any(r.channel == quiet for r in recovered), what="recovered")
        assert unrecovered == [], "resumed from before its first event: nothing is unknown"
        # Announced once: alice's next vybe is the next event on the feed.
        after = await alice.post_vybe("second")
        assert (await next_event(watcher, "vybe.created")).data["id"] == after["id"]
        assert statuses == ["reconnecting", "connecting", "live"], "one reconnect"


async def test_the_own_channel_resumes_even_before_its_first_event(live, proxy_to) -> None:
    """A new user's `user:` channel has carried nothing yet; an event on it while the socket is down (a first
    reaction, a moderation outcome) still arrives after the reconnect. Before, the client had no offset for it
    and so did not resume it: the event was lost."""
    proxy = await proxy_to(live.port)
    async with VybeClient(proxy.url, token=live.token("newcomer"), backoff=(0.05, 0.5)) as client:
        await wait_until(lambda: client.offset("user:newcomer") is not None, what="a resume point")
        proxy.freeze()
        await live.gateway.publisher.publish("user:newcomer", "care.notice", {"message": "while away"},
                                             Meta(o="newcomer"))
        proxy.drop()  # what the server sent meanwhile dies with the socket
        proxy.thaw()
        ev = await next_event(client, "care.notice", timeout=10)
        assert ev.channel == "user:newcomer" and ev.data["message"] == "while away"


async def test_reconnects_after_a_restart_and_resumes_every_event_once(start_gateway, fixed_port_gateway) -> None:
    node_a = fixed_port_gateway()
    live_a = await node_a.start()
    live_b = await start_gateway()  # the writer's node stays up
    reader = VybeClient(live_a.url, token=live_a.token("reader"), backoff=(0.1, 1.0))
    writer = VybeClient(live_b.url, token=live_b.token("writer"))
    statuses: list[str] = []
    recovered: list[SubscribeResult] = []
    unrecovered: list[SubscribeResult] = []
    going_away: list[str] = []
    reader.on("status", lambda state, detail: statuses.append(state))
    reader.on("recovered", recovered.append)
    reader.on("unrecovered", unrecovered.append)
    reader.on("notice", lambda n: going_away.append(n.code))
    seen: list[str] = []
    posted: list[str] = []

    async def consume() -> None:
        async for ev in reader.events():
            if ev.event == "vybe.created":
                seen.append(ev.data["content"])

    async def write(first: int, last: int) -> None:
        for n in range(first, last):
            await writer.post_vybe(f"post {n}")
            posted.append(f"post {n}")

    async with reader, writer:
        await reader.subscribe("feed")
        consumer = asyncio.create_task(consume())
        await write(0, 5)
        await wait_until(lambda: len(seen) == 5, what="the first five")
        await node_a.stop()  # going_away, then 1001
        assert "going_away" in going_away and not reader.connected
        during = asyncio.create_task(reader.post_vybe("sent while away"))  # waits for the next socket
        await write(5, 10)  # while the reader has no socket
        await asyncio.sleep(0.2)
        assert not during.done()
        restarted = asyncio.create_task(node_a.start())
        await write(10, 20)  # while it reconnects and resumes
        await restarted
        away = await asyncio.wait_for(during, 15)
        assert away["content"] == "sent while away"
        expected = [*posted, "sent while away"]
        await wait_until(lambda: len(seen) >= len(expected), timeout=15, what="every post")
        await asyncio.sleep(0.3)  # room for a duplicate to show
        consumer.cancel()
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected), seen
    assert [s for s in seen if s != "sent while away"] == posted, "in order"
    feed = [r for r in recovered if r.channel == "feed"]
    assert feed and feed[-1].recovered is True
    assert feed[-1].missed >= 5, recovered
    assert unrecovered == []
    assert "reconnecting" in statuses and statuses.count("live") == 2, statuses


async def test_a_bogus_since_is_unrecovered_and_a_real_one_recovered(live) -> None:
    alice = VybeClient(live.url, token=live.token("alice"))
    recovered: list[SubscribeResult] = []
    unrecovered: list[SubscribeResult] = []
    alice.on("recovered", recovered.append)
    alice.on("unrecovered", unrecovered.append)
    async with alice, VybeClient(live.url, token=live.token("bob")) as bob:
        result = await alice.subscribe("feed", since="1-2-3")
        assert result == SubscribeResult("feed", False, 0)
        assert unrecovered == [result] and recovered == []
        await bob.post_vybe("one")
        last = (await next_event(alice, "vybe.created")).offset
        await alice.unsubscribe("feed")
        assert alice.channels == ()
        await bob.post_vybe("two")
        await bob.post_vybe("three")
        again = await alice.subscribe("feed", since=last)
        assert again == SubscribeResult("feed", True, 2) and recovered == [again]
        assert (await next_event(alice, "vybe.created")).data["content"] == "two"
        assert (await next_event(alice, "vybe.created")).data["content"] == "three"
        assert len(unrecovered) == 1


async def test_the_token_is_refreshed_in_band_on_token_expiring(start_gateway) -> None:
    live = await start_gateway(token_warn_s=10, jwt_leeway_s=0)
    asked: list[float] = []

    async def get_token() -> str:
        asked.append(time.time())
        return live.token("alice", ttl=3600)

    alice = VybeClient(live.url, token=live.token("alice", ttl=2), get_token=get_token)
    notices: list[str] = []
    statuses: list[str] = []
    alice.on("notice", lambda n: notices.append(n.code))
    alice.on("status", lambda state, detail: statuses.append(state))
    async with alice:
        # 2 s left is inside the 10 s warning: the notice comes with the first auth.
        await wait_until(lambda: alice.auth is not None and alice.auth["expires_at"] > time.time() + 3000,
                         what="the refreshed session")
        assert notices == ["token_expiring"] and len(asked) == 1
        await asyncio.sleep(2.5)  # past the first token's expiry (no leeway): the socket stays
        assert isinstance((await alice.ping())["time"], float)
        result = await alice.refresh_token(live.token("alice", ttl=3600))
        assert result["user_id"] == "alice"
        assert statuses == ["connecting", "live"], "one socket all along"
        assert alice.connected


async def test_an_expired_token_without_refresh_is_auth_lost(start_gateway) -> None:
    live = await start_gateway(token_warn_s=10, jwt_leeway_s=0)
    lost: list[int] = []
    bob = VybeClient(live.url, token=live.token("bob", ttl=1))
    bob.on("auth_lost", lambda code, reason: lost.append(code))
    async with bob:
        with pytest.raises(AuthLost) as ended:
            async with asyncio.timeout(5):
                async for _ in bob.events():
                    pass
        assert ended.value.close_code == 4004 and lost == [4004]
        assert bob.state == "offline" and not bob.connected
        with pytest.raises(CommandError) as err:
            await bob.ping()
        assert err.value.code == "closed"
    with pytest.raises(AuthLost) as refused:
        async with VybeClient(live.url, token="not-a-jwt"):
            pass
    assert refused.value.close_code == 4003


async def test_gives_up_after_max_attempts(live) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    statuses: list[Any] = []
    client = VybeClient(f"ws://127.0.0.1:{port}/ws", token=live.token("alice"), max_attempts=3,
                        backoff=(0.01, 0.05))
    client.on("status", lambda state, detail: statuses.append(state))
    started = time.monotonic()
    with pytest.raises(ClientStopped) as err:
        async with client:
            pass
    assert "3 attempts" in err.value.reason and time.monotonic() - started < 3
    assert statuses.count("connecting") == 3 and statuses[-1] == "offline", statuses


async def test_publish_to_a_chat_channel(start_gateway, tmp_path: Path) -> None:
    """Needs the server's `publish` command and `namespaces` setting."""
    namespaces = tmp_path / "namespaces.toml"
    namespaces.write_text('[namespaces.chat]\nsubscribe = "open"\npublish = true\n')
    live = await start_gateway(namespaces=str(namespaces))
    async with VybeClient(live.url, token=live.token("alice")) as alice, \
            VybeClient(live.url, token=live.token("bob")) as bob:
        assert await bob.subscribe("chat:room1") == SubscribeResult("chat:room1", None, 0)
        await alice.subscribe("chat:room1")
        published = await alice.publish("chat:room1", {"text": "hello"})
        assert published.channel == "chat:room1" and published.state == "accepted"
        assert published.id and not published.replayed
        ev = await next_event(bob, "publication")
        assert ev.channel == "chat:room1" and ev.offset
        assert ev.data["id"] == published.id and ev.data["user_id"] == "alice"
        assert ev.data["data"] == {"text": "hello"}
        assert (await next_event(alice, "publication")).data["id"] == published.id
        assert bob.offset("chat:room1") == ev.offset
        with pytest.raises(CommandError) as err:
            await alice.publish("feed", {"text": "not here"})
        assert err.value.code == "forbidden"


async def test_a_digest_channel_unpacks_its_items_and_counts_the_skipped(start_gateway, tmp_path: Path) -> None:
    namespaces = tmp_path / "namespaces.toml"
    namespaces.write_text('[namespaces.feed]\ndelivery = "digest"\ndigest_interval_s = 0.3\ndigest_items = 2\n')
    live = await start_gateway(namespaces=str(namespaces))
    async with VybeClient(live.url, token=live.token("alice")) as alice, \
            VybeClient(live.url, token=live.token("bob")) as bob:
        digests: list[dict[str, Any]] = []
        bob.on("digest", digests.append)
        await bob.subscribe("feed")
        for n in range(3):
            await alice.post_vybe(f"vybe {n}")
        first = await next_event(bob, "vybe.created")
        second = await next_event(bob, "vybe.created")
        assert [first.data["content"], second.data["content"]] == ["vybe 1", "vybe 2"]
        for _ in range(50):
            if digests:
                break
            await asyncio.sleep(0.05)
        assert digests == [{"channel": "feed", "count": 3, "skipped": 1, "offset": second.offset}]
        assert bob.offset("feed") == second.offset


async def test_a_lost_offset_is_not_resumed_from_again(live) -> None:
    """A subscribe whose `since` history no longer reaches answers `recovered: false` with the channel's newest
    offset: the client resumes from that one next time (before, every reconnect sent the lost offset again and
    emitted `unrecovered` again)."""
    async with VybeClient(live.url, token=live.token("poster")) as poster, \
            VybeClient(live.url, token=live.token("reader")) as reader:
        await poster.subscribe("feed")
        await poster.post_vybe("history for the feed")
        await next_event(poster, "vybe.created", content="history for the feed")  # published: in history now
        unrecovered: list[SubscribeResult] = []
        reader.on("unrecovered", unrecovered.append)
        result = await reader.subscribe("feed", since="1-2-3")
        assert result.recovered is False
        await wait_until(lambda: bool(unrecovered), what="unrecovered")
        fresh = reader.offset("feed")
        assert fresh == poster.offset("feed") and fresh != "1-2-3"

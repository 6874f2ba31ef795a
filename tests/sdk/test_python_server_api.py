"""The Python SDK's server-API helper (vybe_client.VybeServer) against a live gateway.

Needs the server API (``/api/server/...``, gateway/server_api.py), the ``namespaces`` setting, and
``await db.apps.create_app(pool, app_id)`` returning ``(app, api_key)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from db import apps
from moderation.policy import Policy
from vybe_client import Event, ServerError, VybeClient, VybeServer, verify_webhook
from workers.consumer import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

NAMESPACES = """
[namespaces.chat]
subscribe = "open"
publish = true
presence = true
app = "testapp"
"""


async def next_event(client: VybeClient, name: str, channel: str | None = None, timeout: float = 5.0) -> Event:
    async with asyncio.timeout(timeout):
        async for ev in client.events():
            if ev.event == name and (channel is None or ev.channel == channel):
                return ev
    raise AssertionError("events() ended")


async def eventually(probe: Callable[[], Awaitable[Any]], pred: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if pred(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def server_api(start_gateway, pool, tmp_path: Path) -> AsyncIterator[tuple[Any, VybeServer]]:
    """A gateway with a `chat` namespace and an app's API key: (live, VybeServer)."""
    path = tmp_path / "namespaces.toml"
    path.write_text(NAMESPACES)
    live = await start_gateway(namespaces=str(path), presence_interval_s=0.2)
    _, key = await apps.create_app(pool, "testapp")
    async with VybeServer(live.http, key) as api:
        yield live, api


async def test_publish_reaches_subscribers_once_per_idempotency_key(server_api) -> None:
    live, api = server_api
    async with VybeClient(live.url, token=live.token("alice")) as alice:
        await alice.subscribe("chat:room1")
        await alice.subscribe("chat:room2")
        answer = await api.publish(["chat:room1", "chat:room2"], "match.created", {"n": 1}, idempotency_key="k1")
        assert answer["replayed"] is False and answer["channels"] == ["chat:room1", "chat:room2"]
        one = await next_event(alice, "match.created", "chat:room1")
        two = await next_event(alice, "match.created", "chat:room2")
        assert one.data == two.data == {"n": 1}
        again = await api.publish(["chat:room1", "chat:room2"], "match.created", {"n": 1}, idempotency_key="k1")
        assert again == {**answer, "replayed": True}
        await api.publish(["chat:room1"], "match.created", {"n": 2}, idempotency_key="k2")
        assert (await next_event(alice, "match.created", "chat:room1")).data == {"n": 2}, "k1 went out once"


async def test_presence_and_history(server_api) -> None:
    live, api = server_api
    async with VybeClient(live.url, token=live.token("alice")) as alice, \
            VybeClient(live.url, token=live.token("bob")) as bob:
        await alice.subscribe("chat:lobby")
        await bob.subscribe("chat:lobby")
        seen = await eventually(lambda: api.presence("chat:lobby"), lambda p: p["viewers"] == 2)
        assert seen == {"channel": "chat:lobby", "viewers": 2}
    for n in range(3):
        await api.publish(["chat:lobby"], "note", {"n": n})
    full = await eventually(lambda: api.history("chat:lobby"),
                            lambda h: len([e for e in h["events"] if e["event"] == "note"]) >= 3)
    assert full["channel"] == "chat:lobby"
    notes = [e for e in full["events"] if e["event"] == "note"]  # beside chat.presence counts
    assert [e["data"] for e in notes] == [{"n": n} for n in range(3)]
    offsets = [e["offset"] for e in notes]
    after = await api.history("chat:lobby", since=offsets[0])
    assert after["recovered"] is True and [e["data"]["n"] for e in after["events"] if e["event"] == "note"] == [1, 2]
    last = (await api.history("chat:lobby", limit=1))["events"]
    assert len(last) == 1 and last[0]["offset"] >= offsets[2]  # offsets of one epoch sort by time
    assert (await api.history("chat:lobby", since="1-2-3"))["recovered"] is False


async def test_unsubscribe_then_disconnect_a_user(server_api) -> None:
    live, api = server_api
    lost: list[int] = []
    alice = VybeClient(live.url, token=live.token("alice"))
    alice.on("auth_lost", lambda code, reason: lost.append(code))
    async with alice:
        await alice.subscribe("chat:a")
        await alice.subscribe("chat:b")
        await api.unsubscribe("alice", ["chat:a"])
        revoked = await next_event(alice, "subscriptions.revoked")
        assert revoked.channel == "user:alice" and revoked.data["channels"] == ["chat:a"]
        assert alice.channels == ("chat:b",)
        await api.publish(["chat:a"], "note", {"n": 1})
        await api.publish(["chat:b"], "note", {"n": 2})
        got = await next_event(alice, "note")
        assert (got.channel, got.data) == ("chat:b", {"n": 2}), "chat:a no longer reaches alice"
        await api.disconnect("alice")
        assert (await next_event(alice, "session.disconnected")).channel == "user:alice"
        with contextlib.suppress(Exception):
            await next_event(alice, "never", timeout=5)  # ends with the client
        assert lost == [4010] and alice.state == "offline"


async def test_moderate_and_read_back(server_api, keyword_scorer) -> None:
    live, api = server_api
    gw = live.gateway
    s = msgspec.structs.replace(gw.settings, worker_block_ms=10)
    worker = Worker(s, gw.pool, gw.redis, keyword_scorer({"die": {"threat": 0.99}}), Policy.from_settings("flag", ""),
                    "sdk-w")
    await worker.ensure_group()

    async def work() -> None:
        while True:
            if not await worker.step():
                await asyncio.sleep(0.01)

    running = asyncio.create_task(work())
    try:
        bad = await api.moderate("message", "m-1", "alice", "die tonight", wait=True)
        assert bad["decision"] == "flag" and bad["state"] == "flagged" and bad["case_id"]
        assert bad["scores"]["threat"] == pytest.approx(0.99)
        fine = await api.moderate("message", "m-2", "alice", "see you at eight", wait=True)
        assert fine["decision"] == "approve" and fine["state"] == "approved" and fine["case_id"] is None
        read = await api.moderation(bad["item_id"])
        assert (read["item_id"], read["state"], read["case_id"]) == (bad["item_id"], "flagged", bad["case_id"])
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_errors_are_typed(server_api) -> None:
    live, api = server_api
    with pytest.raises(ServerError) as missing:
        await api.moderation("00000000-0000-0000-0000-000000000000")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(ServerError) as bad_channel:
        await api.publish(["no such channel"], "note", {})
    assert bad_channel.value.status == 403 and bad_channel.value.code == "forbidden"  # not one of its channels
    async with VybeServer(live.http, "vk_wrong.key") as stranger:
        with pytest.raises(ServerError) as refused:
            await stranger.presence("chat:lobby")
    assert refused.value.status == 401 and refused.value.code == "auth_failed"
    async with VybeServer("http://127.0.0.1:9", "k", timeout=2) as nowhere:
        with pytest.raises(ServerError) as unreachable:
            await nowhere.presence("chat:lobby")
    assert unreachable.value.status == 0 and unreachable.value.code == "unreachable"


def test_verify_webhook_accepts_our_signature_and_refuses_everything_else_without_raising() -> None:
    """The receiver's check against the worker's signer (db.apps.sign): spaces and a second v1 (a rotated
    scheme) are tolerated; another secret, a changed body, an old or missing time, a missing header and
    non-ASCII junk are False, never an exception (a receiver must answer 401, not 500)."""
    body = b'{"event":"moderation.scored"}'
    header = apps.sign("whsec_k", body)
    t, v1 = header.split(",")
    assert verify_webhook("whsec_k", body, header)
    assert verify_webhook("whsec_k", body, f" {t}, {v1} ")
    assert verify_webhook("whsec_k", body, f"v1=00,{header}") and verify_webhook("whsec_k", body, f"{header},v1=00")
    refused = [("whsec_other", body, header), ("whsec_k", body + b" ", header), ("whsec_k", body, v1),
               ("whsec_k", body, None), ("whsec_k", body, ""), ("whsec_k", body, "t=1,v1=\u00e9"),
               ("whsec_k", body, f"{t},v1=\udcff"), ("whsec_k", body, f"t=abc,{v1}")]
    assert [verify_webhook(*case) for case in refused] == [False] * len(refused)
    assert not verify_webhook("whsec_k", body, header, now=time.time() + 301)
    assert not verify_webhook("whsec_k", body, header, tolerance_s=float("nan"))


async def test_a_disconnected_user_whose_get_token_gives_the_same_token_stays_signed_out(server_api) -> None:
    """After 4010 the client asks get_token once; a get_token that hands back the refused token (a cache) signs
    out instead of reconnecting with it, which would undo the backend's disconnect."""
    live, api = server_api
    token = live.token("cached")
    calls: list[int] = []
    lost: list[int] = []

    async def get_token() -> str:
        calls.append(1)
        return token

    client = VybeClient(live.url, get_token=get_token)
    client.on("auth_lost", lambda code, reason: lost.append(code))
    async with client:
        await client.ping()
        await api.disconnect("cached")
        with contextlib.suppress(Exception):
            await next_event(client, "never", timeout=5)  # ends with the client
    assert lost == [4010] and len(calls) == 2 and client.state == "offline"

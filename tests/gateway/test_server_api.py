"""The server API for trusted backends: API keys and their rotation, publish with idempotency keys,
presence and history, disconnect and revoke, and moderation as a service with signed webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import pytest

from common.settings import load_settings
from db import apps
from moderation.policy import Policy
from vybe_client import verify_webhook
from workers import webhooks
from workers.consumer import Worker

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio

CONFIG = """
[namespaces.session]
subscribe = "open"
presence = true
history_len = 50
app = "miel"
"""


async def _setup(start_gateway: Any, tmp_path: Path, **overrides: Any) -> tuple[Any, str, httpx.AsyncClient]:
    path = tmp_path / "ns.toml"
    path.write_text(CONFIG)
    live = await start_gateway(namespaces=str(path), presence_interval_s=0.2, **overrides)
    _, key = await apps.create_app(live.gateway.pool, "miel", "Miel")
    http = httpx.AsyncClient(base_url=live.http, headers={"authorization": f"Bearer {key}"})
    return live, key, http


async def test_keys_authenticate_rotate_and_revoke(start_gateway, tmp_path) -> None:
    live, key, http = await _setup(start_gateway, tmp_path)
    async with http, httpx.AsyncClient(base_url=live.http) as anon:
        body = {"channels": ["user:ann"], "event": "ping", "data": {}}
        assert (await anon.post("/api/server/publish", json=body)).json()["code"] == "auth_required"
        bad = await anon.post("/api/server/publish", json=body, headers={"authorization": "Bearer vk_nope.x"})
        assert bad.status_code == 401 and bad.json()["code"] == "auth_failed"
        member = await anon.post("/api/server/publish", json=body,
                                 headers={"authorization": f"Bearer {live.token('ann')}"})
        assert member.status_code == 401  # a member's JWT is no API key
        new = await apps.create_key(live.gateway.pool, "miel")
        for k in (key, new):  # both work while the backend rolls over
            ok = await anon.post("/api/server/publish", json=body, headers={"authorization": f"Bearer {k}"})
            assert ok.status_code == 200, ok.text
        await apps.revoke_key(live.gateway.pool, key.split(".")[0])
        gone = await anon.post("/api/server/publish", json=body, headers={"authorization": f"Bearer {key}"})
        assert gone.status_code == 401
        still = await anon.post("/api/server/publish", json=body, headers={"authorization": f"Bearer {new}"})
        assert still.status_code == 200


async def test_publish_reaches_every_channel_once_per_idempotency_key(start_gateway, connect, tmp_path) -> None:
    live, _, http = await _setup(start_gateway, tmp_path)
    ann = await connect(live, live.token("ann"))
    bob = await connect(live, live.token("bob"))
    async with http:
        body = {"channels": ["user:ann", "user:bob"], "event": "match.created", "data": {"match_id": "m1"},
                "idempotency_key": "match-m1"}
        first = await http.post("/api/server/publish", json=body)
        assert first.status_code == 200 and first.json()["replayed"] is False
        retry = await http.post("/api/server/publish", json=body)
        assert retry.json()["replayed"] is True and retry.json()["id"] == first.json()["id"]
        for client, user in ((ann, "ann"), (bob, "bob")):
            got = await client.wait_for(lambda m: m.get("event") == "match.created")
            assert got["channel"] == f"user:{user}" and got["data"] == {"match_id": "m1"}
        await asyncio.sleep(0.3)
        assert len(ann.events("match.created")) == 1 and len(bob.events("match.created")) == 1
        refused = await http.post("/api/server/publish", json={**body, "channels": ["nope:1"]})
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        async with httpx.AsyncClient(base_url=live.http) as nobody:
            anonymous = await nobody.post("/api/server/publish", json={"channels": [""]})
        assert anonymous.status_code == 401  # no key: auth_required, whatever the body
        reused = await http.post("/api/server/publish", json={**body, "channels": ["user:zed"]})
        assert reused.json()["replayed"] is True  # the key names the first publish, whatever the body
        # An app reaches its own namespaces and users' personal channels, nothing else, and may not
        # pass its events off as the platform's.
        for channel in ("feed", "mod:flagged", "looproom:11111111-1111-1111-1111-111111111111"):
            refused = await http.post("/api/server/publish", json={**body, "channels": [channel]})
            assert refused.status_code == 403 and refused.json()["code"] == "forbidden", channel
        for name in ("moderation.outcome", "care.notice", "reaction.added", "session.presence", "feed.digest"):
            forged = await http.post("/api/server/publish", json={**body, "event": name})
            assert forged.status_code == 403, name
        _, other_key = await apps.create_app(live.gateway.pool, "vibeup")
        async with httpx.AsyncClient(base_url=live.http, headers={"authorization": f"Bearer {other_key}"}) as other:
            assert (await other.get("/api/server/channels/session:s1/history")).status_code == 403
            assert (await other.get("/api/server/channels/feed/history")).status_code == 403
            sent = await other.post("/api/server/publish", json={**body, "channels": ["session:s1"]})
            assert sent.status_code == 403


async def test_history_pages_forward_from_an_offset_without_skipping(start_gateway, tmp_path) -> None:
    """With `since`, history answers the OLDEST `limit` events after it and says `more`, so a backend paging on
    from the last offset reads every event once (before, it answered the newest `limit`: events between were
    skipped with `recovered: true`). Without `since`, the newest `limit`."""
    _, _, http = await _setup(start_gateway, tmp_path)
    async with http:
        for n in range(7):
            sent = await http.post("/api/server/publish", json={"channels": ["session:p1"], "event": "chat.note",
                                                                "data": {"n": n}})
            assert sent.status_code == 200, sent.text
        url = "/api/server/channels/session:p1/history"
        for _ in range(100):  # published by the outbox relay just after COMMIT
            everything = (await http.get(url)).json()["events"]
            if len(everything) == 7:
                break
            await asyncio.sleep(0.02)
        assert [e["data"]["n"] for e in everything] == list(range(7))
        newest = (await http.get(url, params={"limit": 2})).json()
        assert [e["data"]["n"] for e in newest["events"]] == [5, 6] and newest["recovered"] is None
        read, since, pages = [], everything[0]["offset"], 0
        while True:
            page = (await http.get(url, params={"since": since, "limit": 2})).json()
            assert page["recovered"] is True
            read += [e["data"]["n"] for e in page["events"]]
            pages += 1
            if not page["more"]:
                break
            since = page["events"][-1]["offset"]
        assert (read, pages) == ([1, 2, 3, 4, 5, 6], 3)


async def test_a_short_history_still_answers_its_newest_events(start_gateway, tmp_path) -> None:
    """Redis trims a stream approximately (whole nodes, of up to 100 entries or 4 KB), so a channel keeping 5 events
    holds more: the newest are still what history answers (before, a read capped at twice the longest history
    answered the oldest 10 of them, and the newest were out of reach)."""
    path = tmp_path / "short.toml"
    path.write_text(CONFIG.replace("history_len = 50", "history_len = 5"))
    live = await start_gateway(namespaces=str(path), history_len=5)
    _, key = await apps.create_app(live.gateway.pool, "miel", "Miel")
    async with httpx.AsyncClient(base_url=live.http, headers={"authorization": f"Bearer {key}"}) as http:
        for n in range(40):
            await http.post("/api/server/publish", json={"channels": ["session:t1"], "event": "chat.note",
                                                         "data": {"n": n}})
        url = "/api/server/channels/session:t1/history"
        for _ in range(100):  # published by the outbox relay just after COMMIT
            newest = (await http.get(url, params={"limit": 3})).json()["events"]
            if newest and newest[-1]["data"]["n"] == 39:
                break
            await asyncio.sleep(0.02)
        assert [e["data"]["n"] for e in newest] == [37, 38, 39]


async def test_presence_history_disconnect_and_revoke(start_gateway, connect, tmp_path) -> None:
    live, _, http = await _setup(start_gateway, tmp_path)
    ann = await connect(live, live.token("ann"))
    bob = await connect(live, live.token("bob"))
    async with http:
        for c in (ann, bob):
            await c.ok("subscribe", channel="session:s1")
        await ann.wait_for(lambda m: m.get("event") == "session.presence" and m["data"]["viewers"] == 2)
        presence = (await http.get("/api/server/channels/session:s1/presence")).json()
        assert presence == {"channel": "session:s1", "viewers": 2}
        off = await http.get("/api/server/channels/feed/presence")
        assert off.status_code == 403  # not the app's channel

        for n in range(3):
            await http.post("/api/server/publish", json={"channels": ["session:s1"], "event": "chat.note",
                                                         "data": {"n": n}})
        await bob.wait_for(lambda m: m.get("event") == "chat.note" and m["data"]["n"] == 2)
        history = (await http.get("/api/server/channels/session:s1/history")).json()
        notes = [e for e in history["events"] if e["event"] == "chat.note"]
        assert [e["data"]["n"] for e in notes] == [0, 1, 2] and history["recovered"] is None
        after = (await http.get("/api/server/channels/session:s1/history",
                                params={"since": notes[0]["offset"]})).json()
        assert after["recovered"] is True and [e["data"]["n"] for e in after["events"]
                                               if e["event"] == "chat.note"] == [1, 2]

        revoked = await http.post("/api/server/users/bob/unsubscribe", json={"channels": ["session:s1"]})
        assert revoked.status_code == 200
        told = await bob.wait_for(lambda m: m.get("event") == "subscriptions.revoked")
        assert told["data"]["channels"] == ["session:s1"]
        await asyncio.sleep(0.2)
        await http.post("/api/server/publish", json={"channels": ["session:s1"], "event": "chat.note",
                                                     "data": {"n": 99}})
        await ann.wait_for(lambda m: m.get("event") == "chat.note" and m["data"]["n"] == 99)
        await asyncio.sleep(0.3)
        assert all(m["data"].get("n") != 99 for m in bob.events("chat.note"))

        assert (await http.post("/api/server/users/ann/disconnect")).status_code == 200
        await ann.wait_for(lambda m: m.get("event") == "session.disconnected")
        code, _ = await ann.wait_closed()
        assert code == 4010
        assert (await bob.ok("ping"))  # others stay connected


class Receiver:
    """A webhook receiver: answers each POST with the next status of ``statuses`` (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.calls.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def _worker(live: Any, scorer: Any) -> Worker:
    s = msgspec.structs.replace(live.gateway.settings, worker_block_ms=10)
    return Worker(s, live.gateway.pool, live.gateway.redis, scorer, Policy.from_settings("flag", ""), "w")


async def test_moderate_waits_for_the_decision_cases_it_under_the_app_and_signs_webhooks(
        start_gateway, connect, tmp_path, keyword_scorer) -> None:
    live, _, http = await _setup(start_gateway, tmp_path, moderate_wait_s=5.0)
    worker = _worker(live, keyword_scorer({"creep": {"insult": 0.8}}))
    await worker.ensure_group()
    running = asyncio.create_task(worker.run(asyncio.Event()))
    receiver = Receiver([500])
    pool = live.gateway.pool
    try:
        async with http, receiver as url:
            app = await apps.set_webhook(pool, "miel", url)
            body = {"content_type": "message", "content_id": "msg-1", "author_id": "u-77", "text": "you creep",
                    "wait": True}
            answer = await http.post("/api/server/moderate", json=body)
            assert answer.status_code == 200, answer.text
            item = answer.json()
            assert item["decision"] == "flag" and item["state"] == "flagged" and item["case_id"]
            assert item["scores"]["insult"] == 0.8 and item["app"] == "miel"
            again = await http.post("/api/server/moderate", json=body)  # a retry: the same item
            assert again.json()["item_id"] == item["item_id"]
            edited = await http.post("/api/server/moderate", json={**body, "text": "you are lovely"})
            assert edited.status_code == 409 and edited.json()["code"] == "conflict"
            fine = await http.post("/api/server/moderate", json={**body, "content_id": "msg-2", "text": "hi!",
                                                                 "wait": False})
            assert fine.status_code == 202 and fine.json()["state"] == "pending"

            # The case is in the same console, under the app.
            mod = await connect(live, live.token("mia", "MODERATOR"))
            async with httpx.AsyncClient(base_url=live.http) as console:
                queue = (await console.get("/api/mod/queue", params={"app": "miel"}, headers={
                    "authorization": f"Bearer {live.token('mia', 'MODERATOR')}"})).json()
            assert [(c["app"], c["content_type"], c["content_id"], c["author_id"]) for c in queue] == [
                ("miel", "message", "msg-1", "u-77")]

            # Webhooks: the first POST fails (500) and is retried; each carries a valid signature.
            for _ in range(200):
                scored = [json.loads(b) for _, b in receiver.calls if json.loads(b)["event"] == "moderation.scored"]
                if len(scored) >= 3:  # msg-1 (refused, then retried) and msg-2
                    break
                await asyncio.sleep(0.05)
            headers, raw = receiver.calls[0]
            assert verify_webhook(app.webhook_secret, raw, headers["x-vybe-signature"])
            assert not verify_webhook("whsec_other", raw, headers["x-vybe-signature"])
            assert not verify_webhook(app.webhook_secret, raw + b" ", headers["x-vybe-signature"])
            assert not verify_webhook(app.webhook_secret, raw, headers["x-vybe-signature"], now=time.time() + 301)
            ids = [h["x-vybe-delivery"] for h, _ in receiver.calls]
            assert len(ids) >= 3 and len(set(ids)) == len(ids) - 1  # the retry reuses its delivery id

            case = queue[0]
            await mod.ok("resolve", case_id=case["case_id"], version=case["version"], action="remove",
                         labels=["insult"])
            for _ in range(100):
                decided = [json.loads(b) for _, b in receiver.calls if json.loads(b)["event"] == "moderation.decided"]
                if decided:
                    break
                await asyncio.sleep(0.05)
            assert decided[0]["data"]["resolution"] == "remove" and decided[0]["data"]["state"] == "removed"
            read = (await http.get(f"/api/server/moderation/{item['item_id']}")).json()
            assert read["resolution"] == "remove"
            other_app_key = (await apps.create_app(pool, "soulseer"))[1]
            async with httpx.AsyncClient(base_url=live.http) as other:
                hidden = await other.get(f"/api/server/moderation/{item['item_id']}",
                                         headers={"authorization": f"Bearer {other_app_key}"})
            assert hidden.status_code == 404
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


async def test_webhooks_retry_with_backoff_then_give_up(pool) -> None:
    """A receiver that keeps failing: each attempt is recorded, spaced by the backoff, and the delivery
    is given up after the last attempt (never silently dropped before)."""
    _, _ = await apps.create_app(pool, "flaky", webhook_url="http://127.0.0.1:9/hook")  # nothing listens
    async with pool.acquire() as conn:
        assert await apps.enqueue_webhook(conn, "flaky", "moderation.scored", {"item_id": "x"})
    settings = load_settings({}, webhook_timeout_s=1.0)
    async with httpx.AsyncClient() as client:
        assert await webhooks.deliver_once(pool, client, settings) == 1
        row = await pool.fetchrow("SELECT attempts, next_at - now() AS wait, last_error, failed_at "
                                  "FROM webhook_deliveries")
        assert row["attempts"] == 1 and 4 < row["wait"].total_seconds() <= 5 and row["failed_at"] is None
        assert await webhooks.deliver_once(pool, client, settings) == 0  # not due yet
        await pool.execute("UPDATE webhook_deliveries SET attempts = $1, next_at = now()", apps.WEBHOOK_ATTEMPTS - 1)
        assert await webhooks.deliver_once(pool, client, settings) == 1
        row = await pool.fetchrow("SELECT attempts, failed_at FROM webhook_deliveries")
        assert row["attempts"] == apps.WEBHOOK_ATTEMPTS and row["failed_at"] is not None
    # Finished deliveries and expired idempotency keys are pruned, fresh ones kept.
    await pool.execute("INSERT INTO app_requests (app_id, request_id, operation, result) VALUES "
                       "('flaky', 'old', 'publish', '{}'), ('flaky', 'new', 'publish', '{}')")
    await pool.execute("UPDATE app_requests SET created_at = now() - interval '25 hours' WHERE request_id = 'old'")
    assert (await apps.prune(pool))["app_requests"] == 1
    await pool.execute("UPDATE webhook_deliveries SET failed_at = now() - interval '8 days'")
    assert (await apps.prune(pool))["webhook_deliveries"] == 1
    assert await pool.fetchval("SELECT count(*) FROM app_requests") == 1

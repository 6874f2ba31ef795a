"""The server API through faults that last as long as real ones: Redis down 3 s (a backend's publish is
acknowledged, stored, and delivered once Redis is back, exactly once), and PostgreSQL down 3 s (every
call answers `unavailable` with retry_after; nothing half-done; it works again after)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets

from db import apps
from db.pool import create_pool

if TYPE_CHECKING:
    from conftest import Rig

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


async def _key(rig: Rig) -> str:
    pool = await create_pool(rig.dsn, min_size=1, max_size=1)
    try:
        _, key = await apps.create_app(pool, "miel")
        return key
    finally:
        await pool.close()


async def _reader(url: str, token: str, seen: list[dict[str, Any]]) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "id": "a", "token": token}))
        while True:
            for msg in json.loads(await ws.recv()):
                if msg.get("type") == "event":
                    seen.append(msg)


@pytest.mark.timeout(120)
async def test_redis_down_3s_a_backend_publish_is_kept_and_delivered_once(rig: Rig) -> None:
    [gw] = await rig.start(gateways=1, workers=0)
    key = await _key(rig)
    seen: list[dict[str, Any]] = []
    reader = asyncio.create_task(_reader(gw.ws, rig.token("ann"), seen))
    await asyncio.sleep(0.5)
    async with httpx.AsyncClient(base_url=gw.http, headers={"authorization": f"Bearer {key}"}, timeout=10) as http:
        await asyncio.to_thread(rig.redis.stop)
        down = time.monotonic()
        body = {"channels": ["user:ann"], "event": "match.created", "data": {"match_id": "m-1"},
                "idempotency_key": "m-1"}
        answered = await http.post("/api/server/publish", json=body)
        assert answered.status_code == 200, answered.text  # stored in PostgreSQL's outbox with its key
        retried = await http.post("/api/server/publish", json=body)
        assert retried.json()["replayed"] is True
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - down)))
        await asyncio.to_thread(rig.redis.start)
        for _ in range(200):
            if any(m["event"] == "match.created" for m in seen):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
    reader.cancel()
    got = [m for m in seen if m["event"] == "match.created"]
    assert len(got) == 1 and got[0]["data"] == {"match_id": "m-1"}, seen


@pytest.mark.timeout(120)
async def test_postgres_down_3s_the_server_api_answers_unavailable_then_works(rig: Rig) -> None:
    [gw] = await rig.start(gateways=1, workers=0)
    key = await _key(rig)
    publish = {"channels": ["user:ann"], "event": "note", "data": {}}
    moderate = {"content_type": "message", "content_id": "c-1", "author_id": "u-1", "text": "hello"}
    async with httpx.AsyncClient(base_url=gw.http, headers={"authorization": f"Bearer {key}"}, timeout=15) as http:
        await asyncio.to_thread(rig.pg.stop)
        try:
            for path, body in (("/api/server/publish", publish), ("/api/server/moderate", moderate)):
                r = await http.post(path, json=body)
                assert r.status_code == 503 and r.json()["code"] == "unavailable", (path, r.status_code, r.text)
                assert r.json()["retry_after"] > 0 and r.headers.get("retry-after")
            await asyncio.sleep(3.0)
        finally:
            await asyncio.to_thread(rig.pg.start)
        for _ in range(100):
            r = await http.post("/api/server/publish", json=publish)
            if r.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert r.status_code == 200, r.text
        item = await http.post("/api/server/moderate", json=moderate)
        assert item.status_code == 202 and item.json()["state"] == "pending"

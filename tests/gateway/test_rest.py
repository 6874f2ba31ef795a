"""REST: the same writes as the socket, the feed with cursors, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.anyio


def _auth(live, user: str, role: str = "MEMBER") -> dict[str, str]:
    return {"Authorization": f"Bearer {live.token(user, role)}"}


async def test_rest_writes_publish_like_the_socket(live, connect) -> None:
    """A vybe posted over REST is stored, returned, and announced on the feed."""
    watcher = await connect(live, live.token("watcher"))
    await watcher.ok("subscribe", channel="feed")
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post("/api/vybes", json={"content": "posted over REST", "id": "req-1"},
                            headers=_auth(live, "rest"))
        assert r.status_code == 201, r.text
        vybe = r.json()
        again = await http.post("/api/vybes", json={"content": "posted over REST", "id": "req-1"},
                                headers=_auth(live, "rest"))
        assert again.json()["id"] == vybe["id"]
        await watcher.wait_for(lambda m: m.get("event") == "vybe.created" and m["data"]["id"] == vybe["id"])
        r = await http.post("/api/reactions", json={"target_id": vybe["id"], "reaction": "FIRE"},
                            headers=_auth(live, "fan"))
        assert r.json()["reaction_count"] == 1
        r = await http.post(f"/api/vybes/{vybe['id']}/comments", json={"content": "nice"}, headers=_auth(live, "fan"))
        assert r.status_code == 201
        r = await http.get(f"/api/vybes/{vybe['id']}", headers=_auth(live, "fan"))
        body = r.json()
        assert body["vybe"]["reaction_count"] == 1 and [c["content"] for c in body["comments"]["items"]] == ["nice"]
        bad = await http.post("/api/vybes", json={"content": ""}, headers=_auth(live, "rest"))
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_content"
        bad = await http.post("/api/vybes", content=b"[1,2", headers=_auth(live, "rest"))
        assert bad.status_code == 400 and bad.json()["code"] == "malformed"  # not JSON: as on the socket
        missing = await http.get("/api/vybes/00000000-0000-0000-0000-000000000000", headers=_auth(live, "fan"))
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        forged = await http.get("/api/feed", headers={"Authorization": "Bearer abc.def.ghi"})
        assert forged.status_code == 401 and forged.json()["code"] == "auth_failed"


async def test_feed_cursor_pagination(live, connect) -> None:
    """Pages follow each other with no duplicate and no gap."""
    poster = await connect(live, live.token("poster"))
    for i in range(7):
        await poster.ok("post_vybe", content=f"vybe {i}")
    seen: list[str] = []
    cursor = None
    async with httpx.AsyncClient(base_url=live.http) as http:
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = (await http.get("/api/feed", params=params, headers=_auth(live, "reader"))).json()
            seen += [v["content"] for v in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        bad = await http.get("/api/feed", params={"cursor": "garbage!"}, headers=_auth(live, "reader"))
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    assert seen == [f"vybe {i}" for i in reversed(range(7))]


async def test_moderation_queue_is_for_moderators(live) -> None:
    """The moderator queue answers moderators and refuses members."""
    async with httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.get("/api/mod/queue", headers=_auth(live, "m", "MODERATOR"))).json() == []
        r = await http.get("/api/mod/queue", headers=_auth(live, "member"))
        assert r.status_code == 403 and r.json()["code"] == "forbidden"


async def test_operations_endpoints(live, connect) -> None:
    """healthz, readyz (with each dependency), Prometheus metrics and the OpenAPI schema."""
    c = await connect(live, live.token("metered"))
    await c.ok("subscribe", channel="feed")
    async with httpx.AsyncClient(base_url=live.http) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = (await http.get("/readyz")).json()
        tasks = dict.fromkeys(
            ("reaction-writer", "outbox-publisher", "outbox-relay", "outbox-deleter", "presence", "flag-stats",
             "keepalive"),
            True)
        assert ready == {"ready": True, "draining": False, "postgres": True, "redis": True, "pubsub": True,
                         "tasks": tasks}
        metrics = (await http.get("/metrics")).text
        for name in ("vybe_connections 1.0", "vybe_channels", "vybe_slow_consumer_closes_total",
                     "vybe_publish_to_fanout_seconds_bucket", "vybe_redis_reconnects", "vybe_outbox_published_total",
                     'vybe_task_restarts_total{task="outbox-relay"} 0.0', "vybe_outbox_backlog"):
            assert name in metrics
        schema = (await http.get("/schema/openapi.json")).json()
        assert "/api/feed" in schema["paths"] and "/api/mod/cases/{case_id}/resolve" in schema["paths"]
        plain = await http.get("/ws")
        assert plain.status_code == 426


async def test_the_token_is_checked_before_the_body_and_the_query(live) -> None:
    """Without a valid token a request is refused for that, whatever else is wrong with it (a malformed or
    mistyped body, a bad query); a member is refused the moderator API before its query is read. Before, the
    body was validated first: anyone was answered 400/422 with what the body lacked."""
    async with httpx.AsyncClient(base_url=live.http) as http:
        bad = {"authorization": "Bearer not-a-token"}
        cases = [
            (await http.post("/api/vybes", content=b"{"), "auth_required"),
            (await http.post("/api/vybes", json={"content": 5}), "auth_required"),
            (await http.post("/api/reactions", json={}), "auth_required"),
            (await http.post("/api/vybes", json=["not", "an", "object"], headers=bad), "auth_failed"),
            (await http.get("/api/feed?limit=0", headers=bad), "auth_failed"),
            (await http.get("/api/mod/queue?limit=0"), "auth_required"),
            (await http.get("/api/mod/queue?limit=0", headers=_auth(live, "member")), "forbidden"),
            (await http.post("/api/mod/care/00000000-0000-0000-0000-000000000000/close", content=b"{",
                             headers=_auth(live, "member")), "forbidden"),
        ]
        for response, code in cases:
            assert response.json()["code"] == code, (response.request.url, response.json())


async def test_every_refusal_has_the_error_envelope_and_its_catalog_status(live) -> None:
    """Litestar's own refusals (bad query parameter, unknown path, wrong method, a body that is not
    JSON, a wrong type) answer {code, message} with the status of the code in the catalog."""
    from common.errors import status

    async with httpx.AsyncClient(base_url=live.http) as http:
        cases = [
            (await http.get("/api/feed?limit=abc", headers=_auth(live, "r")), "invalid"),
            (await http.get("/api/feed?limit=0", headers=_auth(live, "r")), "invalid"),
            (await http.get("/api/feed?cursor=garbage", headers=_auth(live, "r")), "invalid_cursor"),
            (await http.get("/api/nowhere", headers=_auth(live, "r")), "not_found"),
            (await http.patch("/api/vybes", headers=_auth(live, "r")), "method_not_allowed"),
            (await http.post("/api/vybes", content=b"{", headers=_auth(live, "r")), "malformed"),
            (await http.post("/api/vybes", json={"content": "x", "is_anonymous": 0}, headers=_auth(live, "r")),
             "invalid"),
            (await http.post("/api/vybes", json={"content": " \t"}, headers=_auth(live, "r")), "invalid_content"),
            (await http.post("/api/vybes", json={"content": "x" * 5001}, headers=_auth(live, "r")),
             "content_too_long"),
            (await http.post("/api/vybes", json={"content": "x"}), "auth_required"),
            # Over litestar's 10 MB body limit: a typed refusal, not `internal` (which says "retry").
            (await http.post("/api/vybes", content=b'{"content": "' + b"x" * 10_000_001 + b'"}',
                             headers={**_auth(live, "r"), "content-type": "application/json"}), "frame_too_large"),
        ]
        for response, code in cases:
            body = response.json()
            assert set(body) >= {"code", "message"} and body["code"] == code, (response.request.url, body)
            assert response.status_code == status(code), (response.request.url, response.status_code, code)
        options = await http.options("/api/vybes/00000000-0000-0000-0000-000000000000")
        assert options.status_code == 204, "OPTIONS needs no token"
        assert options.headers["allow"] == "DELETE, GET, OPTIONS"
        assert (await http.get("/api/feed?cursor=", headers=_auth(live, "r"))).status_code == 200  # first page


async def test_api_docs_load_nothing_from_outside(live) -> None:
    """/schema is served from the package (no CDN): the page's script is ours and answers."""
    async with httpx.AsyncClient(base_url=live.http) as http:
        page = (await http.get("/schema")).text
        scripts = re.findall(r"src=\"([^\"]+)\"", page)
        assert scripts and all(src.startswith("/") for src in scripts), scripts
        assert "fonts.googleapis" not in page
        for src in scripts:
            assert (await http.get(src)).status_code == 200, src
        openapi = (await http.get("/schema/openapi.json")).json()
        post = openapi["paths"]["/api/vybes"]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]
        assert {"201", "401", "409", "422", "503"} <= set(post["responses"])
        protocol = (await http.get("/schema/protocol.json")).json()
        assert {"ClientCommand", "ServerFrame", "ServerMessage"} <= set(protocol["$defs"])


async def test_the_moderator_queue_pages_by_cursor(live, pool) -> None:
    """`GET /api/mod/queue` gives at most `limit` cases; `after` (the last case's `cursor`) gives the next, oldest
    first, each case once, a page shorter than `limit` the last. The cursor is the place the case had, so a case
    decided and reported again between pages (opened anew, at the end) moves nothing: before, the next page was
    looked up from the case's new place and came back empty. A cursor no page gave is invalid_cursor (422)."""
    from db import moderation as mdb

    async with pool.acquire() as conn:
        ids = [str(await mdb.open_case(conn, "user", f"paged-{i}", ["user reports: SPAM x3"], None)) for i in range(7)]
        for i, case_id in enumerate(ids):
            await conn.execute("UPDATE moderation_cases SET opened_at = now() - make_interval(mins => 100 - $2) "
                               "WHERE id = $1::uuid", case_id, i)
    mods = _auth(live, "mod", "MODERATOR")
    async with httpx.AsyncClient(base_url=live.http) as http:
        first = (await http.get("/api/mod/queue", params={"limit": 3}, headers=mods)).json()
        assert [c["case_id"] for c in first] == ids[:3]
        view = first[-1]
        await mdb.resolve(pool, view["case_id"], view["version"], "dismiss", "done", "mod")
        async with pool.acquire() as conn:
            await mdb.open_case(conn, "user", "paged-2", ["user reports: SPAM x4"], None)
        second = (await http.get("/api/mod/queue", params={"limit": 3, "after": view["cursor"]}, headers=mods)).json()
        assert [c["case_id"] for c in second] == ids[3:6]
        last = (await http.get("/api/mod/queue", params={"limit": 3, "after": second[-1]["cursor"]},
                               headers=mods)).json()
        assert [c["case_id"] for c in last] == [ids[6], ids[2]], "the reopened case comes again, at its new place"
        for bogus in (ids[0], "not-a-cursor", "1_zz"):
            r = await http.get("/api/mod/queue", params={"after": bogus}, headers=mods)
            assert r.status_code == 422 and r.json()["code"] == "invalid_cursor", r.text


async def test_the_care_queue_pages_like_the_moderator_queue(live, pool) -> None:
    """`GET /api/mod/care` pages the same way: `after` the last case's `cursor`, oldest first, each case once."""
    import uuid

    from db import learning

    async with pool.acquire() as conn:
        ids = []
        for i in range(5):
            care = await learning.open_care(conn, "shared_vybe", uuid.uuid4(), f"member-{i}", 0.9, "test")
            await conn.execute("UPDATE care_cases SET opened_at = now() - make_interval(mins => 100 - $2) "
                               "WHERE id = $1", care.care_id, i)
            ids.append(str(care.care_id))
    mods = _auth(live, "mod", "MODERATOR")
    async with httpx.AsyncClient(base_url=live.http) as http:
        first = (await http.get("/api/mod/care", params={"limit": 3}, headers=mods)).json()
        page = {"limit": 3, "after": first[-1]["cursor"]}
        rest = (await http.get("/api/mod/care", params=page, headers=mods)).json()
        assert [c["care_id"] for c in first + rest] == ids
        r = await http.get("/api/mod/care", params={"after": ids[0]}, headers=mods)
        assert r.status_code == 422 and r.json()["code"] == "invalid_cursor", r.text


async def test_reaching_out_holds_a_care_case_until_released_or_lapsed(live, pool) -> None:
    """A care claim: others get conflict on claim, release and close while it holds; the holder's retry with the same
    id is `replayed`; claiming again extends it; once lapsed, anyone may claim it; closing clears it. Releasing a
    case nobody holds changes nothing (its version stays, so nobody else's next step turns stale)."""
    import uuid

    from db import learning

    async with pool.acquire() as conn:
        care = await learning.open_care(conn, "shared_vybe", uuid.uuid4(), "member", 0.9, "test")
    url = f"/api/mod/care/{care.care_id}"
    one, two = _auth(live, "mod1", "MODERATOR"), _auth(live, "mod2", "MODERATOR")
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post(f"{url}/claim", json={"version": care.version, "release": True}, headers=two)
        assert r.status_code == 200 and r.json()["version"] == care.version, "releasing nobody's claim changes nothing"
        r = await http.post(f"{url}/claim", json={"version": care.version, "id": "c-1"}, headers=one)
        assert r.status_code == 200 and r.json()["claimed_by"] == "mod1" and r.json()["claim_expires_at"], r.text
        held = r.json()
        again = await http.post(f"{url}/claim", json={"version": care.version, "id": "c-1"}, headers=one)
        assert again.json()["replayed"] is True and again.json()["version"] == held["version"]
        for body, path in (({}, "claim"), ({"release": True}, "claim"), ({}, "close")):
            r = await http.post(f"{url}/{path}", json={"version": held["version"], **body}, headers=two)
            assert r.status_code == 409 and "mod1 is reaching out" in r.json()["message"], (path, body, r.text)
        r = await http.post(f"{url}/claim", json={"version": held["version"]}, headers=one)
        assert r.status_code == 200 and r.json()["claim_expires_at"] >= held["claim_expires_at"], r.text
        await pool.execute("UPDATE care_cases SET claim_expires_at = now() - interval '1 second' WHERE id = $1",
                           care.care_id)
        r = await http.post(f"{url}/claim", json={"version": r.json()["version"]}, headers=two)
        assert r.status_code == 200 and r.json()["claimed_by"] == "mod2", r.text
        r = await http.post(f"{url}/close", json={"version": r.json()["version"], "note": "talked"}, headers=two)
        assert r.status_code == 200 and r.json()["state"] == "closed" and r.json()["claimed_by"] is None, r.text


async def test_a_care_claim_refuses_members_bad_bodies_and_unknown_cases(live, pool) -> None:
    """The care claim's hostile inputs, each a typed answer that changes nothing: no token (auth_required), a
    member's token (forbidden), a body without a version or with a string for it (invalid), an unknown or
    malformed case id (not_found)."""
    import uuid

    from db import learning

    async with pool.acquire() as conn:
        care = await learning.open_care(conn, "shared_vybe", uuid.uuid4(), "member", 0.9, "test")
    url = f"/api/mod/care/{care.care_id}/claim"
    mods = _auth(live, "mod", "MODERATOR")
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post(url, json={"version": care.version})
        assert r.status_code == 401 and r.json()["code"] == "auth_required", r.text
        r = await http.post(url, json={"version": care.version}, headers=_auth(live, "member"))
        assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
        for body in ({}, {"version": "one"}, {"version": care.version, "release": "yes"}):
            r = await http.post(url, json=body, headers=mods)
            assert r.status_code in (400, 422) and r.json()["code"].startswith("invalid"), (body, r.text)
        for bogus in (str(uuid.uuid4()), "not-a-case"):
            r = await http.post(f"/api/mod/care/{bogus}/claim", json={"version": 1}, headers=mods)
            assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    row = await pool.fetchrow("SELECT version, claimed_by FROM care_cases WHERE id = $1", care.care_id)
    assert (row["version"], row["claimed_by"]) == (care.version, None)

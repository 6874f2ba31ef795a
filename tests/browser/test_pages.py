"""The pages in a real browser: the moderator console and the live feed against a live gateway."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tests.browser.conftest import CHROMIUM, PHONE, score_all

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from playwright.async_api import expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

TOXIC = "You are a worthless idiot and everyone here hates you"


async def _post(live: Any, user: str, content: str, **fields: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post("/api/vybes", json={"content": content, **fields},
                            headers={"Authorization": f"Bearer {live.token(user)}"})
        assert r.status_code == 201, r.text
        return r.json()


async def _live(page: Any) -> None:
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)


async def _shoot(page: Any, path: Any) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")


async def test_pages_are_served_same_origin(live: Any) -> None:
    """/ and /mod are HTML with a same-origin-only CSP; the flag thresholds in force reach /mod."""
    async with httpx.AsyncClient(base_url=live.http) as http:
        for path in ("/", "/mod"):
            r = await http.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
            assert "connect-src 'self'" in r.headers["content-security-policy"]
            assert "http://" not in r.text.replace(live.http, "") and "https://" not in r.text
        meta = (await http.get("/mod")).text.split('name="vybe-thresholds" content="')[1].split('"')[0]
        assert json.loads(meta.replace("&quot;", '"'))["toxicity"] == 0.8
        js = await http.get("/static/js/live.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]


async def test_flagged_vybe_reaches_mod_with_scores(live: Any, pages: Any, shots: Any) -> None:
    """A toxic vybe posted by someone else appears on /mod within seconds with its scores,
    reasons, reports and (anonymous) author; the token is read from the URL fragment and kept."""
    token = live.token("mod1", "MODERATOR")
    page = await pages.open(f"{live.http}/mod#token={token}")
    await _live(page)
    assert page.url == f"{live.http}/mod"
    assert await page.evaluate("sessionStorage.getItem('vybe.mod.token')") == token
    await expect(page.locator("#queue-empty")).to_be_visible()

    await _post(live, "author", "Grateful for my morning walk by the river")
    vybe = await _post(live, "author", TOXIC, is_anonymous=True)
    await score_all(live)

    case = page.locator(f"article.case[data-target-id='{vybe['id']}']")
    await expect(case).to_be_visible(timeout=5000)
    await expect(page.locator("article.case")).to_have_count(1)  # the kind one was not flagged
    await expect(case.locator(".case-text")).to_have_text(TOXIC)
    await expect(case.locator(".author")).to_have_text("author")
    await expect(case.locator(".badge-anon")).to_have_text("posted anonymously")
    await expect(case.locator(".score")).to_have_count(7)
    tox = case.locator(".score[data-label='toxicity']")
    await expect(tox).to_have_class("score is-over")
    assert float(await tox.get_attribute("data-score")) >= 0.8
    await expect(tox.locator(".score-limit")).to_have_text(" ≥ 0.80")
    await expect(case.locator(".score[data-label='threat']")).to_have_class("score")
    await expect(case.locator(".chip").first).to_contain_text("toxicity>=0.80")
    await expect(case.locator(".reports h4")).to_have_text("Reports: 1")
    await expect(case.locator(".reporter")).to_have_text("model")
    await expect(page.locator("#count-open")).to_have_text("1")
    await expect(case.locator(".claim-line")).to_have_text("Unclaimed")

    await _shoot(page, shots / "mod.png")
    await page.set_viewport_size(PHONE)
    await _shoot(page, shots / "mod-phone.png")


async def test_moderator_hides_and_feed_drops_it(live: Any, pages: Any, shots: Any) -> None:
    """The feed shows live posts, reactions and comments; a moderator's hide on /mod removes the vybe
    from / in another browser context at once."""
    kind = await _post(live, "friend", "30 days of journaling! Small steps add up.", vybe_type="MILESTONE")
    toxic = await _post(live, "troll", TOXIC)
    feed = await pages.open(f"{live.http}/#token={live.token('viewer')}")
    await _live(feed)
    assert feed.url == f"{live.http}/"
    await expect(feed.locator("article.vybe")).to_have_count(2)

    # Post from the page; it lands on top.
    await feed.get_by_role("textbox", name="Share a vybe").fill("Grateful for this morning's breathwork")
    await feed.get_by_label("Kind").select_option("GRATITUDE")
    await feed.get_by_role("button", name="Share", exact=True).click()
    await expect(feed.locator("article.vybe").first).to_contain_text("Grateful for this morning's breathwork")

    # Reactions tick live: one from another user's REST call, one from this page.
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post("/api/reactions", json={"target_id": kind["id"], "reaction": "CLAP"},
                            headers={"Authorization": f"Bearer {live.token('friend2')}"})
        assert r.status_code == 200, r.text
    mine = feed.locator(f"article[data-vybe-id='{kind['id']}']")
    await expect(mine.locator(".reaction-number")).to_have_text("1", timeout=5000)
    await mine.get_by_role("button", name="Heart").click()
    await expect(mine.locator(".reaction-number")).to_have_text("2")
    await expect(mine.get_by_role("button", name="Heart")).to_have_attribute("aria-pressed", "true")

    # Comments expand, take a comment from the page, and stream others' comments in.
    await mine.locator(".btn-comments").click()
    await expect(mine.get_by_text("No comments yet.")).to_be_visible()
    await mine.get_by_label("Add a comment").fill("So proud of you")
    await mine.get_by_role("button", name="Send").click()
    await expect(mine.locator(".comment")).to_have_count(1)
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post(f"/api/vybes/{kind['id']}/comments", json={"content": "Keep going!"},
                            headers={"Authorization": f"Bearer {live.token('friend2')}"})
        assert r.status_code == 201, r.text
    await expect(mine.locator(".comment")).to_have_count(2, timeout=5000)
    await expect(mine.locator(".comment-count")).to_have_text("2")

    await _shoot(feed, shots / "feed.png")

    await score_all(live)
    mod = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    case = mod.locator(f"article.case[data-target-id='{toxic['id']}']")
    await expect(case).to_be_visible(timeout=5000)
    await case.get_by_role("button", name="Claim").click()
    await expect(case.locator(".claim-line")).to_contain_text("Claimed by you")
    await case.get_by_label("Note").fill("harassment")
    await case.get_by_role("button", name="Hide").click()
    await expect(case).to_have_count(0)
    await expect(mod.locator(".resolved-item")).to_contain_text("Hidden")
    await expect(mod.locator(".resolved-item")).to_contain_text("harassment")

    await expect(feed.locator(f"article[data-vybe-id='{toxic['id']}']")).to_have_count(0, timeout=5000)
    await expect(feed.locator("article.vybe")).to_have_count(2)

    await feed.set_viewport_size(PHONE)
    await _shoot(feed, shots / "feed-phone.png")


async def test_claim_on_one_console_shows_on_another(live: Any, pages: Any, shots: Any) -> None:
    """Two moderators: a claim on one /mod page shows on the other, whose actions are then disabled;
    the release shows too."""
    vybe = await _post(live, "troll", TOXIC)
    await score_all(live)
    one = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    two = await pages.open(f"{live.http}/mod#token={live.token('mod2', 'ADMIN')}")
    await _live(one)
    await _live(two)
    sel = f"article.case[data-target-id='{vybe['id']}']"
    await expect(two.locator(sel)).to_be_visible()

    await one.locator(sel).get_by_role("button", name="Claim").focus()
    await one.keyboard.press("Enter")
    seen = two.locator(sel)
    await expect(seen.locator(".claim-line")).to_contain_text("Claimed by mod1", timeout=5000)
    await expect(seen.get_by_role("button", name="Claim")).to_be_disabled()
    await expect(seen.get_by_role("button", name="Hide")).to_be_disabled()
    await expect(two.locator("#count-others")).to_have_text("1")
    await expect(one.locator("#count-mine")).to_have_text("1")
    await _shoot(two, shots / "mod-claimed-by-other.png")

    await one.locator(sel).get_by_role("button", name="Release").click()
    await expect(seen.locator(".claim-line")).to_have_text("Unclaimed", timeout=5000)
    await expect(seen.get_by_role("button", name="Dismiss")).to_be_enabled()
    await seen.get_by_role("button", name="Dismiss").click()
    await expect(one.locator(sel)).to_have_count(0, timeout=5000)
    await expect(one.locator(".resolved-item")).to_contain_text("by mod2")


async def test_dropped_socket_resumes_by_offset(live: Any, pages: Any) -> None:
    """The server drops the console's socket; items flagged meanwhile arrive after the reconnect,
    replayed from the channel history (subscribe with `since`, recovered), none lost."""
    frames: list[dict[str, Any]] = []
    routes: list[Any] = []

    async def relay(ws: Any) -> None:
        server = ws.connect_to_server()
        routes.append((ws, server))

        def from_page(message: str | bytes) -> None:
            if isinstance(message, str):
                frames.append(json.loads(message))
            server.send(message)

        ws.on_message(from_page)

    token = live.token("mod1", "MODERATOR")
    context = await pages.browser.new_context(service_workers="block")
    pages.contexts.append(context)
    page = await context.new_page()
    page.on("pageerror", lambda e: pages.errors.append(f"pageerror: {e}"))
    await page.route_web_socket("**/ws", relay)
    await page.goto(f"{live.http}/mod#token={token}")
    await _live(page)
    first = await _post(live, "troll", TOXIC)
    await score_all(live)
    await expect(page.locator("article.case")).to_have_count(1, timeout=5000)

    ws, _ = routes[-1]
    await ws.close(code=1001, reason="going away")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=3000)
    second = await _post(live, "troll2", TOXIC + " (again)")
    await score_all(live)

    await _live(page)
    await expect(page.locator(f"article.case[data-target-id='{second['id']}']")).to_be_visible(timeout=5000)
    await expect(page.locator(f"article.case[data-target-id='{first['id']}']")).to_be_visible()
    resumes = [f for f in frames if f.get("type") == "subscribe" and f.get("channel") == "mod:flagged"]
    assert len(resumes) == 2 and "since" not in resumes[0] and resumes[1]["since"], resumes


async def test_stale_offset_reloads_queue_from_rest(live: Any, pages: Any) -> None:
    """When the resume offset is too old (`recovered: false`) the console reloads the queue over REST."""
    queue_loads: list[str] = []
    routes: list[Any] = []

    async def relay(ws: Any) -> None:
        server = ws.connect_to_server()
        routes.append(ws)

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "subscribe" and frame.get("since"):
                frame["since"] = "1-2-3"  # an offset from before the history (or a Redis data loss)
            server.send(json.dumps(frame))

        ws.on_message(from_page)

    context = await pages.browser.new_context(service_workers="block")
    pages.contexts.append(context)
    page = await context.new_page()
    page.on("pageerror", lambda e: pages.errors.append(f"pageerror: {e}"))
    page.on("request", lambda r: "/api/mod/queue" in r.url and queue_loads.append(r.url))
    await page.route_web_socket("**/ws", relay)
    await page.goto(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    await _live(page)
    await _post(live, "troll", TOXIC)
    await score_all(live)
    await expect(page.locator("article.case")).to_have_count(1, timeout=5000)
    loads = len(queue_loads)

    await routes[-1].close(code=1001, reason="going away")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting", timeout=3000)
    second = await _post(live, "troll2", TOXIC + " (again)")
    await score_all(live)
    await expect(page.locator(f"article.case[data-target-id='{second['id']}']")).to_be_visible(timeout=5000)
    await expect(page.locator("article.case")).to_have_count(2)
    assert len(queue_loads) == loads + 1, queue_loads


async def test_sign_in_form_token_expiry_and_roles(start_gateway: Any, pages: Any) -> None:
    """Without a token the page asks for one (and keeps it for a reload); a member token is turned
    away from /mod; `token_expiring` shows a notice whose form renews the session on the socket."""
    live = await start_gateway(token_warn_s=4, jwt_leeway_s=0)
    page = await pages.open(f"{live.http}/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    token = live.token("viewer", ttl=6)
    expires = time.time() + 6
    await page.get_by_label("Access token").fill(token)
    await page.get_by_label("Access token").press("Enter")  # keyboard only
    await _live(page)
    await expect(page.locator("#who")).to_contain_text("viewer")

    notice = page.locator(".notice-warn")
    await expect(notice).to_contain_text("Your session expires", timeout=5000)
    await notice.get_by_label("New token").fill(live.token("viewer"))
    await notice.get_by_role("button", name="Renew session").click()
    await expect(notice).to_have_count(0)
    await asyncio.sleep(max(0.0, expires - time.time()) + 1)  # past the first token's expiry
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await page.reload()
    await _live(page)  # the renewed token was kept in sessionStorage

    mod = await pages.open(f"{live.http}/mod#token={live.token('member')}")
    await expect(mod.locator("#signin-why")).to_contain_text("MODERATOR and ADMIN", timeout=5000)


async def test_a_post_shared_while_the_feed_reloads_stays(live: Any, pages: Any) -> None:
    """The feed page reloads its snapshot when it (re)subscribes; a vybe shared while that snapshot is on its way
    (taken before the post) must stay: absent from the snapshot means removed only for what the page showed before
    it asked. The subscribe's reload is held here until the post is shared."""
    await _post(live, "friend", "30 days of journaling! Small steps add up.")
    context = await pages.browser.new_context(service_workers="block")
    pages.contexts.append(context)
    feed_calls, release = [], asyncio.Event()

    async def hold_second_snapshot(route: Any) -> None:
        feed_calls.append(route.request.url)
        if len(feed_calls) != 2:
            await route.continue_()
            return
        snapshot = await route.fetch()  # taken now, before the post
        await release.wait()
        await route.fulfill(response=snapshot)

    await context.route("**/api/feed?*", hold_second_snapshot)
    page = await context.new_page()
    page.on("pageerror", lambda e: pages.errors.append(f"pageerror: {e}"))
    await page.goto(f"{live.http}/#token={live.token('viewer')}")
    await _live(page)
    for _ in range(100):  # the subscribe's reload is on its way (and held)
        if len(feed_calls) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(feed_calls) == 2
    await page.get_by_role("textbox", name="Share a vybe").fill("Shared while the feed reloads")
    await page.get_by_role("button", name="Share", exact=True).click()
    await expect(page.locator("#post-status")).to_have_text("Shared.")
    await expect(page.locator("article.vybe").first).to_contain_text("Shared while the feed reloads")
    release.set()
    await page.wait_for_timeout(500)  # the held snapshot is applied
    await expect(page.locator("article.vybe").first).to_contain_text("Shared while the feed reloads")
    await expect(page.locator("article.vybe")).to_have_count(2)

"""What the feed tells a member about their own content, in a real browser: the moderation outcome
(naming the vybe, with the moderator's message, never the internal note) with an appeal round trip,
and the care notice with its resources."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from common import events
from db import learning
from db.outbox import Announcement
from db.writes._tx import in_transaction
from gateway.auth import mint_token
from tests.browser.conftest import CHROMIUM, PHONE, score_all

if TYPE_CHECKING:
    import asyncpg

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from playwright.async_api import expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

TOXIC = "You are a worthless idiot and everyone here hates you"
CARE_BORDER = "rgb(21, 94, 117)"  # --care in app.css
DANGER = "rgb(159, 18, 57)"        # --danger in app.css


async def _call(live: Any, token: str, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (200, 201), r.text
        return r.json()


async def _open_feed(live: Any, pages: Any, token: str, viewport: Any = None) -> Any:
    page = await pages.open(f"{live.http}/#token={token}", viewport)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    return page


async def _shoot(page: Any, path: Any) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")


async def test_outcome_names_the_vybe_and_the_appeal_round_trip(live: Any, pages: Any, shots: Any) -> None:
    """A moderator hides a vybe over REST with a message and an internal note: the author's page names
    the vybe by its excerpt and shows the message (not the note) with an Appeal; the appeal is sent once
    from the page and lands in the appeals queue; another moderator restores it and the page says the
    appeal was granted and shows the vybe again."""
    sam = mint_token(live.settings, "sam", name="Sam Lee")
    vybe = await _call(live, sam, "POST", "/api/vybes", {"content": TOXIC})
    await score_all(live)
    feed = await _open_feed(live, pages, sam)
    mod1 = live.token("mod1", "MODERATOR")
    mod2 = live.token("mod2", "MODERATOR")
    queue = await _call(live, mod1, "GET", "/api/mod/queue")
    case = next(c for c in queue if c["target_id"] == vybe["id"])
    await _call(live, mod1, "POST", f"/api/mod/cases/{case['case_id']}/resolve",
                {"version": case["version"], "action": "hide", "note": "INTERNAL: repeat offender?",
                 "message": "Please disagree without name-calling."})

    outcome = feed.locator(f".notice-outcome[data-target-id='{vybe['id']}']")
    await expect(outcome).to_be_visible(timeout=5000)
    await expect(outcome.locator(".notice-text")).to_contain_text("A moderator hid your vybe")
    await expect(outcome.locator(".excerpt")).to_have_text(TOXIC)
    await expect(outcome.locator(".mod-message")).to_have_text(
        "Message from the moderator: Please disagree without name-calling.")
    await expect(outcome).not_to_contain_text("INTERNAL")
    await expect(feed.locator(f"article[data-vybe-id='{vybe['id']}']")).to_have_count(0, timeout=5000)
    assert await outcome.evaluate("el => getComputedStyle(el).borderColor") != DANGER

    await outcome.get_by_role("button", name="Appeal").click()
    statement = outcome.get_by_label("Why should it be visible again?")
    await expect(statement).to_be_focused()
    await statement.fill("I was quoting what someone said to me, to ask for advice.")
    await _shoot(feed, shots / "feed-appeal.png")
    await outcome.get_by_role("button", name="Send appeal").click()
    await expect(outcome.locator(".appeal-sent")).to_contain_text("Appeal sent.")
    await expect(outcome.get_by_role("button", name="Appeal")).to_have_count(0)

    appeals = await _call(live, mod2, "GET", "/api/mod/queue?appeals=true")
    appealed = next(c for c in appeals if c["target_id"] == vybe["id"])
    assert appealed["appeal_statement"] == "I was quoting what someone said to me, to ask for advice."
    assert appealed["appeal_of"] == "mod1"
    await _call(live, mod2, "POST", f"/api/mod/cases/{appealed['case_id']}/resolve",
                {"version": appealed["version"], "action": "restore", "message": "Restored, sorry about that."})
    await expect(outcome.locator(".notice-text")).to_contain_text("Your appeal was granted", timeout=5000)
    await expect(outcome.locator(".mod-message")).to_contain_text("Restored, sorry about that.")
    await expect(outcome.get_by_role("button", name="Appeal")).to_have_count(0)
    await expect(feed.locator(f"article[data-vybe-id='{vybe['id']}']")).to_be_visible(timeout=5000)
    await _shoot(feed, shots / "feed-appeal-granted.png")
    await feed.set_viewport_size(PHONE)
    await _shoot(feed, shots / "feed-appeal-granted-phone.png")


async def test_denied_appeal_is_said_plainly(live: Any, pages: Any) -> None:
    """An appeal that another moderator turns down is shown as not granted, with no second Appeal."""
    sam = mint_token(live.settings, "sam", name="Sam Lee")
    vybe = await _call(live, sam, "POST", "/api/vybes", {"content": TOXIC})
    await score_all(live)
    mod1, mod2 = live.token("mod1", "MODERATOR"), live.token("mod2", "MODERATOR")
    case = next(c for c in await _call(live, mod1, "GET", "/api/mod/queue") if c["target_id"] == vybe["id"])
    await _call(live, mod1, "POST", f"/api/mod/cases/{case['case_id']}/resolve",
                {"version": case["version"], "action": "remove"})
    feed = await _open_feed(live, pages, sam)
    # The page was closed when the outcome came: appeal over REST, then watch the decision arrive.
    await _call(live, sam, "POST", "/api/appeals",
                {"target_type": "SHARED_VYBE", "target_id": vybe["id"], "statement": "Please look again."})
    appealed = next(c for c in await _call(live, mod2, "GET", "/api/mod/queue?appeals=true")
                    if c["target_id"] == vybe["id"])
    await _call(live, mod2, "POST", f"/api/mod/cases/{appealed['case_id']}/resolve",
                {"version": appealed["version"], "action": "remove"})
    outcome = feed.locator(f".notice-outcome[data-target-id='{vybe['id']}']")
    await expect(outcome.locator(".notice-text")).to_have_text(
        f"Your appeal was reviewed and not granted: your vybe {TOXIC} stays removed.", timeout=5000)
    await expect(outcome.get_by_role("button", name="Appeal")).to_have_count(0)


async def test_care_notice_is_calm_with_resource_links(live: Any, pool: asyncpg.Pool, pages: Any,
                                                       shots: Any) -> None:
    """`care.notice` reaches its author's page as a calm notice (care colours, not the error red) with the
    deployment's message and each resource as a link."""
    kim = mint_token(live.settings, "kim", name="Kim")
    vybe = await _call(live, kim, "POST", "/api/vybes", {"content": "Some nights I just want to disappear"})
    feed = await _open_feed(live, pages, kim)
    s = live.gateway.settings
    announce = Announcement.of(lambda care: events.care_opened(care, s.care_message, s.care_links))

    async def body(conn: asyncpg.Connection) -> Any:
        return await learning.open_care(conn, "shared_vybe", uuid.UUID(vybe["id"]), "kim", 0.9, "test")

    await in_transaction(pool, body, announce)
    live.gateway.announce(announce)

    care = feed.locator(".notice-care")
    await expect(care).to_be_visible(timeout=5000)
    await expect(care.locator(".notice-text")).to_have_text(s.care_message)
    links = care.get_by_role("link")
    await expect(links).to_have_count(len(s.care_links))
    for i, resource in enumerate(s.care_links):
        await expect(links.nth(i)).to_have_text(resource["title"])
        await expect(links.nth(i)).to_have_attribute("href", resource["url"])
        await expect(links.nth(i)).to_have_attribute("target", "_blank")
    assert await care.evaluate("el => getComputedStyle(el).borderTopColor") == CARE_BORDER
    await expect(care).to_have_attribute("role", "status")
    await expect(feed.locator(f"article[data-vybe-id='{vybe['id']}']")).to_be_visible()  # never hidden for it
    await _shoot(feed, shots / "feed-care.png")
    await feed.set_viewport_size(PHONE)
    await _shoot(feed, shots / "feed-care-phone.png")

"""The feed's member tools in a real browser: the actions menu on vybes and comments (report, block,
delete), display names with anonymity, the reaction breakdown, the new-vybes pill and safe links."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from gateway.auth import mint_token
from tests.browser.conftest import CHROMIUM, PHONE

if TYPE_CHECKING:
    import asyncpg

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from playwright.async_api import expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

NAMES = {"bob": "Bob Rivers", "carol": "Carol Ng", "viewer": "Vee Member", "dan": "Dan Okafor"}


def _token(live: Any, user: str) -> str:
    return mint_token(live.settings, user, name=NAMES.get(user))


async def _call(live: Any, user: str, method: str, path: str, body: Any = None, status: int = 200) -> Any:
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.request(method, path, json=body, headers={"Authorization": f"Bearer {_token(live, user)}"})
        assert r.status_code == status, r.text
        return r.json() if r.content else None


async def _post(live: Any, user: str, content: str, **fields: Any) -> dict[str, Any]:
    return await _call(live, user, "POST", "/api/vybes", {"content": content, **fields}, status=201)


async def _open_feed(live: Any, pages: Any, user: str = "viewer", viewport: Any = None) -> Any:
    page = await pages.open(f"{live.http}/#token={_token(live, user)}", viewport)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    return page


def _vybe(page: Any, vybe: dict[str, Any]) -> Any:
    return page.locator(f"article[data-vybe-id='{vybe['id']}']")


async def _shoot(page: Any, path: Any) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")


async def test_menu_by_keyboard_report_and_delete_own(live: Any, pool: asyncpg.Pool, pages: Any, shots: Any) -> None:
    """The actions menu is a real menu button (Enter opens it on its first item, arrows move, Escape
    closes and returns focus); a report's type and description are stored; deleting your own vybe
    asks first (Keep it keeps it) and then deletes it for good."""
    theirs = await _post(live, "bob", "Morning pages, day 12")
    feed = await _open_feed(live, pages)
    card = _vybe(feed, theirs)
    button = card.get_by_role("button", name="Actions for the vybe by Bob Rivers")
    await expect(button).to_have_attribute("aria-haspopup", "menu")
    await expect(button).to_have_attribute("aria-expanded", "false")

    await button.focus()
    await feed.keyboard.press("Enter")
    menu = card.get_by_role("menu")
    await expect(menu).to_be_visible()
    await expect(button).to_have_attribute("aria-expanded", "true")
    await expect(menu.get_by_role("menuitem", name="Report this vybe")).to_be_focused()
    await feed.keyboard.press("ArrowDown")
    await expect(menu.get_by_role("menuitem", name="Block Bob Rivers")).to_be_focused()
    # A live update re-draws the vybe: the menu stays open, focus where it was.
    await _call(live, "carol", "POST", "/api/reactions", {"target_id": theirs["id"], "reaction": "FIRE"})
    await expect(card.get_by_role("button", name="Fire")).to_have_text("Fire 1", timeout=5000)
    await expect(menu).to_be_visible()
    await expect(menu.get_by_role("menuitem", name="Block Bob Rivers")).to_be_focused()
    await feed.keyboard.press("ArrowDown")  # wraps around
    await expect(menu.get_by_role("menuitem", name="Report this vybe")).to_be_focused()
    await feed.keyboard.press("Escape")
    await expect(menu).to_be_hidden()
    await expect(button).to_be_focused()
    await expect(button).to_have_attribute("aria-expanded", "false")

    # Report, by keyboard again: the dialog takes focus, a reason is required.
    await feed.keyboard.press("ArrowDown")
    await expect(menu.get_by_role("menuitem", name="Report this vybe")).to_be_focused()
    await feed.keyboard.press("Enter")
    dialog = feed.get_by_role("dialog", name="Report this vybe")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Harassment or bullying").check()
    await dialog.get_by_label("Anything moderators should know? (optional)").fill("Targets a member in every post")
    await _shoot(feed, shots / "feed-report.png")
    await dialog.get_by_role("button", name="Send report").click()
    await expect(dialog.get_by_role("status").first).to_have_text("Thanks, moderators will look.")
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_have_count(0)
    await expect(button).to_be_focused()
    row = await pool.fetchrow("SELECT reporter_id, reported_type, type::text AS type, description FROM reports "
                              "WHERE reported_id = $1", theirs["id"])
    assert dict(row) == {"reporter_id": "viewer", "reported_type": "shared_vybe", "type": "HARASSMENT",
                         "description": "Targets a member in every post"}

    # Your own vybe offers Delete (not Report or Block), with a confirmation.
    await feed.get_by_role("textbox", name="Share a vybe").fill("A draft I will take back")
    await feed.get_by_role("button", name="Share", exact=True).click()
    own = feed.locator("article.vybe").first
    await expect(own).to_contain_text("A draft I will take back")
    await expect(own.locator(".author")).to_have_text("Vee Member (you)")
    own_id = await own.get_attribute("data-vybe-id")
    await own.get_by_role("button", name="Actions for your vybe").click()
    await expect(own.get_by_role("menuitem")).to_have_count(1)
    await own.get_by_role("menuitem", name="Delete this vybe").click()
    confirm = feed.get_by_role("dialog", name="Delete this vybe?")
    await expect(confirm.get_by_role("button", name="Keep it")).to_be_focused()
    await confirm.get_by_role("button", name="Keep it").click()
    await expect(confirm).to_have_count(0)
    await expect(own).to_be_visible()
    await own.get_by_role("button", name="Actions for your vybe").click()
    await own.get_by_role("menuitem", name="Delete this vybe").click()
    await feed.get_by_role("dialog", name="Delete this vybe?").get_by_role("button", name="Delete vybe").click()
    await expect(feed.locator(f"article[data-vybe-id='{own_id}']")).to_have_count(0)
    await _call(live, "viewer", "GET", f"/api/vybes/{own_id}", status=404)


async def test_block_hides_author_live_and_unblock_brings_back(live: Any, pages: Any, shots: Any) -> None:
    """Blocking from the menu takes the author's vybes and comments off the page at once and keeps their
    new ones away (while others' still arrive); Unblock from the Blocked list brings them back."""
    first = await _post(live, "bob", "Bob's first vybe")
    carols = await _post(live, "carol", "Carol's garden is blooming")
    await _call(live, "bob", "POST", f"/api/vybes/{carols['id']}/comments", {"content": "Lovely!"}, status=201)
    await _call(live, "dan", "POST", f"/api/vybes/{carols['id']}/comments", {"content": "Wow"}, status=201)
    feed = await _open_feed(live, pages)
    await expect(feed.locator("article.vybe")).to_have_count(2)
    garden = _vybe(feed, carols)
    await garden.locator(".btn-comments").click()
    await expect(garden.locator(".comment")).to_have_count(2)
    await expect(garden.locator(".comment .author")).to_have_text(["Bob Rivers", "Dan Okafor"])

    # Block from a comment's menu.
    comment = garden.locator(".comment").first
    await comment.get_by_role("button", name="Actions for the comment by Bob Rivers").click()
    await comment.get_by_role("menuitem", name="Block Bob Rivers").click()
    await expect(_vybe(feed, first)).to_have_count(0)
    await expect(garden.locator(".comment")).to_have_count(1)
    await expect(feed.locator(".notice")).to_contain_text("You blocked Bob Rivers")
    await expect(feed.locator("#blocked-box")).to_be_visible()
    await expect(feed.locator(".blocked > summary")).to_have_text("Blocked (1)")

    # Bob's new vybe never reaches the page; Carol's does (behind the pill).
    await _post(live, "bob", "Bob again")
    await _post(live, "carol", "Carol again")
    await expect(feed.locator("#new-pill")).to_have_text("1 new vybe", timeout=5000)
    await feed.locator("#new-pill").click()
    await expect(feed.locator("article.vybe")).to_have_count(2)
    await expect(feed.locator("article.vybe").first).to_contain_text("Carol again")
    await expect(feed.get_by_text("Bob again")).to_have_count(0)
    await feed.locator(".blocked > summary").click()
    await expect(feed.locator(".blocked-item .author")).to_have_text(["Bob Rivers"])
    await _shoot(feed, shots / "feed-blocked.png")

    await feed.get_by_role("button", name="Unblock Bob Rivers").click()
    await expect(feed.locator("#blocked-box")).to_be_hidden()
    await expect(feed.locator("article.vybe")).to_have_count(4, timeout=5000)
    await expect(_vybe(feed, first)).to_be_visible()
    await expect(garden.locator(".comment")).to_have_count(2, timeout=5000)

    # The list survives a reload (the server only hands it out in answers to block/unblock).
    await _vybe(feed, first).get_by_role("button", name="Actions for the vybe by Bob Rivers").click()
    await _vybe(feed, first).get_by_role("menuitem", name="Block Bob Rivers").click()
    await expect(_vybe(feed, first)).to_have_count(0)
    await feed.reload()
    await expect(feed.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    await expect(feed.locator(".blocked > summary")).to_have_text("Blocked (1)")
    await expect(feed.locator("article.vybe")).to_have_count(2)


async def test_delete_own_comment(live: Any, pages: Any) -> None:
    """Your comment's menu deletes it after a confirmation; others' comments offer Report and Block."""
    vybe = await _post(live, "carol", "Ask me anything about sourdough")
    await _call(live, "dan", "POST", f"/api/vybes/{vybe['id']}/comments", {"content": "Starter tips?"}, status=201)
    feed = await _open_feed(live, pages)
    card = _vybe(feed, vybe)
    await card.locator(".btn-comments").click()
    await card.get_by_label("Add a comment").fill("Mine, soon gone")
    await card.get_by_role("button", name="Send").click()
    await expect(card.locator(".comment")).to_have_count(2)
    theirs = card.locator(".comment").first
    await theirs.get_by_role("button", name="Actions for the comment by Dan Okafor").click()
    await expect(theirs.get_by_role("menuitem")).to_have_text(["Report this comment", "Block Dan Okafor"])
    await feed.keyboard.press("Escape")
    mine = card.locator(".comment").nth(1)
    await expect(mine.locator(".author")).to_have_text("Vee Member (you)")
    await mine.get_by_role("button", name="Actions for your comment").click()
    await mine.get_by_role("menuitem", name="Delete this comment").click()
    await feed.get_by_role("dialog", name="Delete this comment?").get_by_role("button", name="Delete comment").click()
    await expect(card.locator(".comment")).to_have_count(1)
    await expect(card.locator(".comment-count")).to_have_text("1", timeout=5000)
    detail = await _call(live, "viewer", "GET", f"/api/vybes/{vybe['id']}")
    assert [c["content"] for c in detail["comments"]["items"]] == ["Starter tips?"]


async def test_names_reactions_pill_and_links(live: Any, pages: Any, shots: Any) -> None:
    """Display names instead of ids and "Anonymous" where withheld; the reaction breakdown with your own
    pressed, kept live from another member's reaction and toggled by a tap; new vybes wait behind the
    pill while your own go straight in; http(s) URLs become safe links and javascript: stays text."""
    named = await _post(live, "bob", "Ran my first 5k today")
    await _post(live, "bob", "Something I can only say anonymously", is_anonymous=True)
    linked = await _post(live, "carol", "Read this: https://example.org/guide?x=1. Not this: javascript:alert(1)")
    for user, reaction in (("carol", "CLAP"), ("dan", "FIRE"), ("viewer", "HEART")):
        await _call(live, user, "POST", "/api/reactions", {"target_id": named["id"], "reaction": reaction})
    feed = await _open_feed(live, pages)
    await expect(feed.locator("#who")).to_contain_text("Vee Member")
    await expect(feed.locator("article.vybe .author")).to_have_text(["Carol Ng", "Anonymous", "Bob Rivers"])
    await expect(feed.locator("main")).not_to_contain_text("bob")

    # The breakdown: Heart (mine, pressed), Clap and Fire with their counts.
    card = _vybe(feed, named)
    await expect(card.locator(".reaction-number")).to_have_text("3")
    react = card.locator(".btn-react")
    await expect(react).to_have_text(["Heart 1", "Clap 1", "Fire 1"])
    await expect(card.get_by_role("button", name="Heart")).to_have_attribute("aria-pressed", "true")
    await expect(card.get_by_role("button", name="Clap")).to_have_attribute("aria-pressed", "false")
    await _call(live, "dan", "POST", "/api/reactions", {"target_id": named["id"], "reaction": "CLAP"})
    await expect(card.get_by_role("button", name="Clap")).to_have_text("Clap 2", timeout=5000)
    await expect(card.locator(".reaction-number")).to_have_text("4")
    await card.get_by_role("button", name="Clap").click()
    await expect(card.get_by_role("button", name="Clap")).to_have_attribute("aria-pressed", "true")
    await expect(card.get_by_role("button", name="Clap")).to_have_text("Clap 3")
    await card.get_by_role("button", name="Clap").click()
    await expect(card.get_by_role("button", name="Clap")).to_have_attribute("aria-pressed", "false")
    await expect(card.get_by_role("button", name="Clap")).to_have_text("Clap 2")
    await card.locator(".more-reactions > summary").click()
    await card.get_by_role("button", name="Mindful").click()
    await expect(card.locator(".btn-react")).to_have_text(["Heart 1", "Clap 2", "Fire 1", "Mindful 1"])
    await expect(card.get_by_role("button", name="Mindful")).to_have_attribute("aria-pressed", "true")

    # Safe links.
    text = _vybe(feed, linked).locator(".vybe-content")
    link = text.get_by_role("link")
    await expect(link).to_have_count(1)
    await expect(link).to_have_attribute("href", "https://example.org/guide?x=1")
    await expect(link).to_have_attribute("rel", "noopener noreferrer nofollow ugc")
    await expect(link).to_have_attribute("target", "_blank")
    await expect(text).to_have_text("Read this: https://example.org/guide?x=1. Not this: javascript:alert(1)")
    assert await feed.locator("a[href^='javascript']").count() == 0

    # The pill: others' new vybes wait; the feed does not move under the reader.
    top = await feed.locator("article.vybe").first.get_attribute("data-vybe-id")
    await _post(live, "carol", "New from Carol")
    await expect(feed.locator("#new-pill")).to_have_text("1 new vybe", timeout=5000)
    await _post(live, "dan", "New from Dan")
    await expect(feed.locator("#new-pill")).to_have_text("2 new vybes", timeout=5000)
    await expect(feed.locator("article.vybe")).to_have_count(3)
    assert await feed.locator("article.vybe").first.get_attribute("data-vybe-id") == top
    await _shoot(feed, shots / "feed-members.png")
    await feed.get_by_role("textbox", name="Share a vybe").fill("Mine goes straight in")
    await feed.get_by_role("button", name="Share", exact=True).click()
    await expect(feed.locator("article.vybe").first).to_contain_text("Mine goes straight in")
    await expect(feed.locator("#new-pill")).to_have_text("2 new vybes")
    await feed.locator("#new-pill").click()
    await expect(feed.locator("#new-pill")).to_be_hidden()
    await expect(feed.locator("article.vybe")).to_have_count(6)
    await expect(feed.locator("article.vybe .vybe-content")).to_have_text(
        ["Mine goes straight in", "New from Dan", "New from Carol",
         "Read this: https://example.org/guide?x=1. Not this: javascript:alert(1)",
         "Something I can only say anonymously", "Ran my first 5k today"])
    await expect(feed.locator("article.vybe").nth(1)).to_be_focused()  # the newest of those that waited

    await feed.set_viewport_size(PHONE)
    await _vybe(feed, named).get_by_role("button", name="Actions for the vybe by Bob Rivers").click()
    await _shoot(feed, shots / "feed-members-phone.png")


async def test_phone_menu_and_pill(live: Any, pages: Any, shots: Any) -> None:
    """At phone size the menu opens within the screen and the pill sits on top of the feed."""
    vybe = await _post(live, "bob", "Phone-sized vybe with a link https://example.org/a")
    feed = await _open_feed(live, pages, viewport=PHONE)
    card = _vybe(feed, vybe)
    await card.get_by_role("button", name="Actions for the vybe by Bob Rivers").click()
    menu = card.get_by_role("menu")
    await expect(menu).to_be_visible()
    # The vybe may be re-drawn as its channel's first snapshot lands (the menu stays open): measure in one go.
    measure = "el => el.isConnected ? [el.getBoundingClientRect().left, el.getBoundingClientRect().right] : null"
    for _ in range(50):
        edges = await menu.evaluate(measure)
        if edges and edges[1] > edges[0]:
            break
        await asyncio.sleep(0.05)
    assert edges and 0 <= edges[0] < edges[1] <= PHONE["width"], edges
    await feed.locator("h1").click()  # a click elsewhere closes it
    await expect(menu).to_be_hidden()
    await _post(live, "carol", "Arrives while reading on a phone")
    await expect(feed.locator("#new-pill")).to_be_visible(timeout=5000)
    await _shoot(feed, shots / "feed-pill-phone.png")


async def test_sign_in_explains_tokens(live: Any, pages: Any, shots: Any) -> None:
    """Without a token the page says how to sign in (the `vybe dev` member link) and how a real app passes
    its token (Authorization: Bearer header, or a first `auth` frame on the socket)."""
    page = await pages.open(f"{live.http}/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#signin-why")).to_contain_text("vybe dev")
    await expect(page.locator("#signin-why")).to_contain_text("#token=")
    await page.get_by_text("How does a real app pass its token?").click()
    howto = page.locator(".howto-body")
    await expect(howto).to_contain_text("Authorization: Bearer <token>")
    await expect(howto).to_contain_text('{"type":"auth","id":"a1","token":"<token>"}')
    await _shoot(page, shots / "feed-signin.png")
    await page.set_viewport_size(PHONE)
    await _shoot(page, shots / "feed-signin-phone.png")
    await page.get_by_label("Access token").fill(_token(live, "viewer"))
    await page.get_by_label("Access token").press("Enter")
    await expect(page.locator("#who")).to_have_text("Vee Member · member")

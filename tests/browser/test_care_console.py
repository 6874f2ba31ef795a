"""The moderator console's Care tab, model-accuracy panel, cleared-by-model note and label checkboxes
in a real browser against a live gateway."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from common import events
from db import learning
from db import moderation as mdb
from db.outbox import Announcement
from db.writes._tx import in_transaction
from db.writes.users import upsert_user
from seed import post_vybe as _post
from tests.browser.conftest import CHROMIUM, PHONE, score_all

if TYPE_CHECKING:
    import asyncpg

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from playwright.async_api import expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

TOXIC = "You are a worthless idiot and everyone here hates you"
CARE_BORDER = "rgb(21, 94, 117)"  # --care in app.css: calm, not the queue's danger red


async def _live(page: Any) -> None:
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)


async def _open_care(live: Any, pool: asyncpg.Pool, vybe: dict[str, Any], score: float) -> learning.CareCase:
    """Open a care case and publish `care.opened` as the worker does: through the outbox, then the
    gateway's fast path."""
    s = live.gateway.settings
    announce = Announcement.of(lambda care: events.care_opened(care, s.care_message, s.care_links))

    async def body(conn: asyncpg.Connection) -> learning.CareCase:
        care = await learning.open_care(conn, "shared_vybe", uuid.UUID(vybe["id"]), vybe["user_id"], score, "test")
        assert care is not None
        return care

    care = await in_transaction(pool, body, announce)
    live.gateway.announce(announce)
    return care


async def _decide(pool: asyncpg.Pool, vybe: dict[str, Any], reasons: list[str], action: str,
                  labels: list[str]) -> None:
    """A case on ``vybe`` flagged for ``reasons`` and resolved with ``action`` confirming ``labels``
    (no event: seeded data)."""
    await upsert_user(pool, "mod9", "MODERATOR")
    async with pool.acquire() as conn, conn.transaction():
        case_id = await mdb.open_case(conn, "shared_vybe", vybe["id"], reasons, None, model_flagged=True)
        version = await conn.fetchval("SELECT version FROM moderation_cases WHERE id = $1", case_id)
    await mdb.resolve(pool, str(case_id), version, action, None, "mod9", labels=labels)


async def test_care_cases_listed_live_and_closed_with_note(live: Any, pool: asyncpg.Pool, pages: Any,
                                                           shots: Any) -> None:
    """A care case seeded before the page loads is in the Care tab (text, author, a plain-word score,
    not red); one opened later arrives live on two consoles; closing it with a note removes it on both
    and stores the note."""
    first = await _post(live, "sam", "I keep thinking about hurting myself and I don't know who to tell")
    seeded = await _open_care(live, pool, first, 0.93)
    one = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    two = await pages.open(f"{live.http}/mod#token={live.token('mod2', 'ADMIN')}")
    await _live(one)
    await _live(two)

    await expect(one.locator("#tab-count-care")).to_have_text("1")
    await expect(one.locator("#panel-care")).to_be_hidden()  # the abuse queue is the first tab
    await one.get_by_role("tab", name="Care").click()
    await expect(one.get_by_role("tab", name="Care")).to_have_attribute("aria-selected", "true")
    await expect(one.locator("#panel-queue")).to_be_hidden()
    case = one.locator(f"article.care-case[data-care-id='{seeded.care_id}']")
    await expect(case).to_be_visible()
    await expect(case.locator(".case-text")).to_have_text(first["content"])
    await expect(case.locator(".author")).to_have_text("sam")
    await expect(case.locator(".care-likelihood")).to_have_text("disclosure: very likely")
    await expect(case.locator("time")).to_have_text("just now")
    assert await case.evaluate("el => getComputedStyle(el).borderLeftColor") == CARE_BORDER

    later = await _post(live, "kim", "Some nights I just want to disappear for good", is_anonymous=True)
    opened = await _open_care(live, pool, {**later, "user_id": "kim"}, 0.62)
    fresh = one.locator(f"article.care-case[data-care-id='{opened.care_id}']")
    await expect(fresh).to_be_visible(timeout=5000)
    # Posted anonymously: the moderator is told, so reaching out never shows others who wrote it.
    await expect(fresh.locator(".badge-anon")).to_have_text("posted anonymously")
    await expect(case.locator(".badge-anon")).to_have_count(0)
    await expect(fresh.locator(".care-likelihood")).to_have_text("disclosure: possible")
    await expect(one.locator("article.care-case")).to_have_count(2)
    await expect(one.locator("article.care-case").first).to_have_attribute("data-care-id", str(seeded.care_id))
    await expect(two.locator("#tab-count-care")).to_have_text("2", timeout=5000)

    # The second console switches tabs by keyboard only.
    await two.locator("#tab-queue").focus()
    await two.keyboard.press("ArrowRight")
    await expect(two.locator("#tab-care")).to_be_focused()
    await expect(two.locator("#panel-care")).to_be_visible()
    await expect(two.locator("article.care-case")).to_have_count(2)
    await _shoot(one, shots / "mod-care.png")

    await case.get_by_label("What you did").fill("Sent a DM with the helpline links")
    await case.get_by_role("button", name="Close").click()
    await expect(case).to_have_count(0)
    await expect(one.locator("#tab-count-care")).to_have_text("1")
    await expect(one.locator(".care-closed-item")).to_contain_text("Sent a DM with the helpline links")
    await expect(two.locator(f"article.care-case[data-care-id='{seeded.care_id}']")).to_have_count(0, timeout=5000)
    await expect(two.locator("#tab-count-care")).to_have_text("1")

    row = await pool.fetchrow("SELECT state, closed_by, note FROM care_cases WHERE id = $1", seeded.care_id)
    assert dict(row) == {"state": "closed", "closed_by": "mod1", "note": "Sent a DM with the helpline links"}
    audit = await pool.fetchval("SELECT note FROM moderation_audit WHERE action = 'care.close'")
    assert audit == "Sent a DM with the helpline links"
    # Sent with an id, so trying again after a lost answer is answered `replayed`, not "someone else changed it".
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys WHERE user_id = 'mod1' AND operation = $1",
                               f"care.close:{seeded.care_id}") == 1

    await one.set_viewport_size(PHONE)
    await _shoot(one, shots / "mod-care-phone.png")


async def test_reaching_out_claims_a_care_case_on_every_console(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """"I'm reaching out" claims the care case: the other console shows who, live, and cannot close it or claim it
    (nor can the API: conflict), so the member is not contacted twice; released, it is free again; closing it
    clears the claim."""
    vybe = await _post(live, "lee", "I don't really see the point of anything anymore")
    care = await _open_care(live, pool, vybe, 0.91)
    one = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    two = await pages.open(f"{live.http}/mod#token={live.token('mod2', 'MODERATOR')}")
    for page in (one, two):
        await _live(page)
        await page.get_by_role("tab", name="Care").click()
    mine = one.locator(f"article.care-case[data-care-id='{care.care_id}']")
    theirs = two.locator(f"article.care-case[data-care-id='{care.care_id}']")
    await mine.get_by_role("button", name="I'm reaching out").click()
    await expect(mine.locator(".care-claim")).to_contain_text("You are reaching out")
    await expect(theirs.locator(".care-claim")).to_contain_text("mod1 is reaching out", timeout=5000)
    await expect(theirs.get_by_role("button", name="Close")).to_be_disabled()
    await expect(theirs.get_by_role("button", name="I'm reaching out")).to_be_disabled()
    await theirs.get_by_label("What you did").fill("Sent the helpline links")
    await theirs.get_by_label("What you did").press("Enter")   # Enter in the note closes: not over a claim
    await expect(theirs.locator(".case-error")).to_contain_text("mod1 is reaching out: leave the member to them")
    row = await pool.fetchrow("SELECT version, claimed_by FROM care_cases WHERE id = $1", care.care_id)
    assert row["claimed_by"] == "mod1"
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post(f"/api/mod/care/{care.care_id}/close", json={"version": row["version"]},
                            headers={"Authorization": f"Bearer {live.token('mod2', 'MODERATOR')}"})
    assert r.status_code == 409 and "mod1 is reaching out" in r.json()["message"], r.text
    await mine.get_by_role("button", name="Still reaching out").click()   # extends the claim
    for _ in range(50):
        if await pool.fetchval("SELECT version FROM care_cases WHERE id = $1", care.care_id) > row["version"]:
            break
        await asyncio.sleep(0.1)
    await expect(theirs.locator(".care-claim")).to_contain_text("mod1 is reaching out")

    await mine.get_by_role("button", name="Release").click()
    await expect(theirs.locator(".care-claim")).to_have_count(0, timeout=5000)
    await theirs.get_by_role("button", name="I'm reaching out").click()
    await expect(mine.locator(".care-claim")).to_contain_text("mod2 is reaching out", timeout=5000)
    await theirs.get_by_label("What you did").fill("Called them, they are with family tonight")
    await theirs.get_by_role("button", name="Close").click()
    await expect(mine).to_have_count(0, timeout=5000)
    row = await pool.fetchrow("SELECT state, closed_by, claimed_by FROM care_cases WHERE id = $1", care.care_id)
    assert dict(row) == {"state": "closed", "closed_by": "mod2", "claimed_by": None}
    actions = await pool.fetch("SELECT actor_id, action FROM moderation_audit WHERE action LIKE 'care.%' ORDER BY id")
    assert [tuple(a) for a in actions] == [("mod1", "care.claim"), ("mod1", "care.claim"), ("mod1", "care.release"),
                                           ("mod2", "care.claim"), ("mod2", "care.close")]


async def test_accuracy_panel_shows_decisions_and_refreshes(live: Any, pool: asyncpg.Pool, pages: Any,
                                                            shots: Any) -> None:
    """The panel says "No decisions yet." on an empty record, shows per-label precision and recall from
    earlier decisions on open, and refreshes after this console's and another moderator's resolutions;
    the labels ticked on a hide are the ones recorded."""
    empty = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    await expect(empty.locator("#accuracy-summary")).to_have_text("No decisions yet.")
    await expect(empty.locator("#accuracy-window")).to_have_text("last 30 days")
    await expect(empty.locator(".accuracy-row")).to_have_count(0)

    seeded = await _post(live, "a1", "Seeded decision: a quiet walk in the park")  # the model will not flag it
    await _decide(pool, seeded, ["insult>=0.60 (0.91)"], "hide", ["insult"])
    mod = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    await _live(mod)
    panel = mod.locator(".accuracy")
    await expect(panel.locator("#accuracy-summary")).to_have_text("From 1 decision by moderators.")
    await expect(panel.locator(".accuracy-row")).to_have_count(8)
    await expect(panel.locator(".accuracy-row").first).to_have_text(
        "any label: 100 % of 1 flag confirmed · caught 100 % of 1")
    await expect(panel.locator(".accuracy-row[data-label='insult']")).to_have_text(
        "insult: 100 % of 1 flag confirmed · caught 100 % of 1")
    await expect(panel.locator(".accuracy-row[data-label='toxicity']")).to_have_text(
        "toxicity: no flags · caught 0 % of 1")
    await expect(panel.locator(".accuracy-row[data-label='threat']")).to_have_text(
        "threat: no flags · no harm found")

    # This console hides a flagged post, adding a label the model did not flag.
    hidden = await _post(live, "troll", TOXIC)
    dismissed = await _post(live, "troll2", TOXIC + " (joke)")
    await score_all(live)
    case = mod.locator(f"article.case[data-target-id='{hidden['id']}']")
    await expect(case).to_be_visible(timeout=5000)
    await expect(case.locator(".labels-chosen")).to_contain_text("toxicity")
    await case.locator(".labels-pick > summary").click()
    await expect(case.get_by_role("checkbox", name="toxicity", exact=True)).to_be_checked()
    await expect(case.get_by_role("checkbox", name="threat")).not_to_be_checked()
    await case.get_by_role("checkbox", name="threat").check()
    await expect(case.locator(".labels-chosen")).to_contain_text("threat")
    await _shoot(mod, shots / "mod-labels.png")
    await case.get_by_role("button", name="Hide").click()
    await expect(case).to_have_count(0)
    await expect(panel.locator("#accuracy-summary")).to_have_text("From 2 decisions by moderators.", timeout=5000)
    await expect(panel.locator(".accuracy-row").first).to_have_text(
        "any label: 100 % of 2 flags confirmed · caught 100 % of 2")
    labels = await pool.fetchval("SELECT labels FROM moderation_labels WHERE target_id::text = $1", hidden["id"])
    assert "threat" in labels and "toxicity" in labels, labels

    # Another moderator dismisses over REST: the event refreshes this console's figures too.
    async with httpx.AsyncClient(base_url=live.http) as http:
        auth = {"Authorization": f"Bearer {live.token('mod2', 'MODERATOR')}"}
        queue = (await http.get("/api/mod/queue", headers=auth)).json()
        other = next(c for c in queue if c["target_id"] == dismissed["id"])
        r = await http.post(f"/api/mod/cases/{other['case_id']}/resolve", headers=auth,
                            json={"version": other["version"], "action": "dismiss"})
        assert r.status_code == 200, r.text
    await expect(panel.locator("#accuracy-summary")).to_have_text("From 3 decisions by moderators.", timeout=5000)
    await expect(panel.locator(".accuracy-row").first).to_have_text(
        "any label: 67 % of 3 flags confirmed · caught 100 % of 2")
    await _shoot(mod, shots / "mod-accuracy.png")


async def test_case_cleared_by_newer_model_says_so(live: Any, pool: asyncpg.Pool, pages: Any, shots: Any) -> None:
    """When a newer model no longer flags an open case (`case.rescored`), the case says so plainly (in its row
    too, ranked low: before, its old scores kept it at the top as severe) and stays open for a quick Dismiss."""
    vybe = await _post(live, "troll", TOXIC)
    await score_all(live)
    mod = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    await _live(mod)
    case = mod.locator(f"article.case[data-target-id='{vybe['id']}']")
    await expect(case).to_be_visible(timeout=5000)
    await expect(case.locator(".cleared-note")).to_have_count(0)

    async def rescored(conn: asyncpg.Connection, case_id: uuid.UUID) -> list[Any]:
        return [events.case_changed("case.rescored", v) for v in await mdb.case_views(conn, [case_id])]

    announce = Announcement(rescored)

    async def body(conn: asyncpg.Connection) -> uuid.UUID:
        case_id = await learning.mark_cleared(conn, "shared_vybe", uuid.UUID(vybe["id"]), "20261205-r1")
        assert case_id is not None
        return case_id

    await in_transaction(pool, body, announce)
    live.gateway.announce(announce)
    await expect(case.locator(".cleared-note")).to_have_text(
        "The current model (20261205-r1) no longer flags this. If you agree, Dismiss.", timeout=5000)
    # In the row too (seen without opening the case), and its old scores no longer rank it severe.
    await expect(case.locator(".badge-cleared")).to_have_text("model cleared")
    await expect(case.locator(".sev")).to_have_text("low")
    await _shoot(mod, shots / "mod-cleared.png")
    await case.get_by_role("button", name="Dismiss").click()
    await expect(case).to_have_count(0)
    await expect(mod.locator(".resolved-item")).to_contain_text("Dismissed")


async def _shoot(page: Any, path: Any) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")

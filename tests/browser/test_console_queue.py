"""The moderator console's queue in a real browser against a live gateway: sorting by severity,
filters and search, the context pane, keyboard shortcuts, bulk dismiss, undo and reopen, the Remove
confirmation, and an appeal decided by another moderator. Screenshots at desktop and phone size."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from db import moderation as mdb
from db.writes.users import upsert_user
from seed import post_vybe as _post
from tests.browser.conftest import CHROMIUM, PHONE

if TYPE_CHECKING:
    import asyncpg

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium)", allow_module_level=True)

from playwright.async_api import expect

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

DANGER = "rgb(159, 18, 57)"  # --danger in app.css: Remove is filled with it, Hide is not


# -- seeding ------------------------------------------------------------------------------------

async def _comment(live: Any, user: str, vybe_id: str, content: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=live.http) as http:
        r = await http.post(f"/api/vybes/{vybe_id}/comments", json={"content": content},
                            headers={"Authorization": f"Bearer {live.token(user)}"})
        assert r.status_code == 201, r.text
        return r.json()


async def _report(live: Any, users: list[str], target_type: str, target_id: str, report_type: str,
                  description: str | None = None) -> None:
    async with httpx.AsyncClient(base_url=live.http) as http:
        for user in users:
            body = {"target_type": target_type, "target_id": target_id, "report_type": report_type,
                    **({"description": description} if description else {})}
            r = await http.post("/api/reports", json=body, headers={"Authorization": f"Bearer {live.token(user)}"})
            assert r.status_code == 200, r.text


async def _flag(pool: asyncpg.Pool, vybe_id: str, reasons: list[str], scores: dict[str, float],
                minutes_ago: int = 0) -> str:
    """A model-flagged case on a vybe, opened ``minutes_ago`` (as the moderation worker leaves it)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE shared_vybes SET moderation_state = 'flagged' WHERE id = $1::uuid", vybe_id)
        case_id = await mdb.open_case(conn, "shared_vybe", vybe_id, reasons, scores, model_flagged=True)
        await conn.execute("UPDATE moderation_cases SET opened_at = now() - make_interval(mins => $2) WHERE id = $1",
                           case_id, minutes_ago)
    return str(case_id)


async def _case(pool: asyncpg.Pool, target_id: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM moderation_cases WHERE target_id = $1", target_id)
    assert row is not None, target_id
    return dict(row)


async def _decide(pool: asyncpg.Pool, target_id: str, action: str, moderator: str = "mod9") -> None:
    """Resolve the open case on ``target_id`` as ``moderator`` (no event: seeded history)."""
    await upsert_user(pool, moderator, "MODERATOR")
    case = await _case(pool, target_id)
    await mdb.resolve(pool, str(case["id"]), case["version"], action, "seeded", moderator)


async def _rest(live: Any, user: str, method: str, path: str, body: Any = None,
                role: str = "MODERATOR") -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.http) as http:
        auth = {"Authorization": f"Bearer {live.token(user, role)}"}
        return await http.request(method, path, json=body, headers=auth)


async def _console(pages: Any, live: Any, user: str = "mod1", viewport: dict[str, int] | None = None) -> Any:
    page = await pages.open(f"{live.http}/mod#token={live.token(user, 'MODERATOR')}", viewport)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    return page


async def _shoot(page: Any, path: Any) -> None:
    await page.screenshot(path=str(path), full_page=True, animations="disabled")


def _row(page: Any, target_id: str) -> Any:
    return page.locator(f"article.case[data-target-id='{target_id}']")


async def _order(page: Any) -> list[str]:
    return await page.locator("article.case").evaluate_all("els => els.map(e => e.dataset.targetId)")


# -- tests ------------------------------------------------------------------------------------------

async def test_sorted_by_severity_filtered_searched_with_context(live: Any, pool: asyncpg.Pool, pages: Any,
                                                                shots: Any) -> None:
    """The queue opens most severe first (a threat far over its threshold before an insult just over,
    before a toxicity score at the line), sorts by age and by reports, filters by label, source and claim,
    searches author and text; the pane shows a comment's parent vybe, the author's earlier cases and each
    reporter's record."""
    low = await _post(live, "ann", "Honestly this whole thread is garbage")
    severe = await _post(live, "bob", "Watch your back tonight, I know where you park")
    medium = await _post(live, "cat", "Only a clown would write a post like this")
    await _flag(pool, low["id"], ["toxicity>=0.80 (0.81)"], {"toxicity": 0.81, "insult": 0.2}, minutes_ago=50)
    await _flag(pool, severe["id"], ["threat>=0.60 (0.97)"], {"threat": 0.97, "toxicity": 0.7}, minutes_ago=5)
    await _flag(pool, medium["id"], ["insult>=0.60 (0.72)"], {"insult": 0.72, "toxicity": 0.5}, minutes_ago=30)
    # The comment's author had a vybe hidden before; its three reporters were upheld then.
    earlier = await _post(live, "troll", "Earlier nastiness that a moderator hid")
    await _report(live, ["rita", "ray", "rob"], "SHARED_VYBE", earlier["id"], "HARASSMENT")
    await _decide(pool, earlier["id"], "hide")
    parent = await _post(live, "dee", "Finished my first 10k run today!")
    reply = await _comment(live, "troll", parent["id"], "Nobody cares about your slow little jog")
    await _report(live, ["rita", "ray", "rob"], "COMMENT", reply["id"], "HARASSMENT", "mocking her on purpose")

    mod = await _console(pages, live)
    await expect(mod.locator("article.case")).to_have_count(4)
    await expect(mod.locator("#count-open")).to_have_text("4")
    # Three people reporting harassment outrank an insult the model scored a little over its line.
    assert await _order(mod) == [severe["id"], reply["id"], medium["id"], low["id"]]
    first = _row(mod, severe["id"])
    await expect(first.locator(".case-open")).to_have_attribute("aria-expanded", "true")  # selected, in the pane
    await expect(first.locator(".sev")).to_have_text("severe")
    await expect(_row(mod, low["id"]).locator(".sev")).to_have_text("low")
    await expect(first.locator(".case-text")).to_have_text(severe["content"])
    await expect(first.locator(".score")).to_have_count(2)      # each score once, in the pane only
    await expect(mod.locator(".row-facts .score, .row-facts .score-value")).to_have_count(0)
    await expect(first.get_by_role("button", name="Restore")).to_have_count(0)   # content still visible
    await expect(mod.locator("#shown-line")).to_have_text("Showing 4 of 4 open · most severe first")
    await _shoot(mod, shots / "console-queue.png")

    await mod.get_by_label("Sort", exact=True).select_option("oldest")
    assert await _order(mod) == [low["id"], medium["id"], severe["id"], reply["id"]]
    await mod.get_by_label("Sort", exact=True).select_option("reports")
    assert (await _order(mod))[0] == reply["id"]

    await mod.get_by_label("Label", exact=True).select_option("threat")
    assert await _order(mod) == [severe["id"]]
    await mod.get_by_label("Label", exact=True).select_option("")
    await mod.get_by_label("Raised by", exact=True).select_option("members")
    assert await _order(mod) == [reply["id"]]
    await mod.get_by_label("Raised by", exact=True).select_option("")
    await mod.get_by_role("searchbox", name="Search").fill("clown")
    assert await _order(mod) == [medium["id"]]
    await mod.get_by_role("searchbox", name="Search").fill("ANN")
    assert await _order(mod) == [low["id"]]
    await mod.get_by_role("searchbox", name="Search").fill("nobody wrote this")
    await expect(mod.locator("#filter-empty")).to_be_visible()
    await mod.locator("#filter-empty").get_by_role("button", name="Clear filters").click()
    await expect(mod.locator("article.case")).to_have_count(4)
    await mod.get_by_label("Claimed by", exact=True).select_option("me")
    await expect(mod.locator("article.case")).to_have_count(0)
    await mod.get_by_label("Claimed by", exact=True).select_option("nobody")
    await expect(mod.locator("article.case")).to_have_count(4)

    # The comment's context: its parent vybe, the author's earlier (hidden) case, the reporters' record.
    case = _row(mod, reply["id"])
    await case.locator(".case-open").click()
    await expect(case.locator(".case-text")).to_have_text(reply["content"])
    await expect(case.locator(".ctx-parent-text")).to_have_text(parent["content"])
    await expect(case.locator(".ctx-parent-author")).to_have_text("dee")
    await expect(case.locator(".ctx-parent .badge-anon")).to_have_count(0)
    await expect(case.locator(".history-item")).to_have_count(1)
    await expect(case.locator(".history-item")).to_contain_text("Hidden")
    await expect(case.locator(".history-item")).to_contain_text("Earlier nastiness")
    await expect(case.locator(".reporters li")).to_have_count(3)
    rita = case.locator(".reporters li[data-reporter='rita']")
    await expect(rita).to_contain_text("harassment")
    await expect(rita).to_contain_text("mocking her on purpose")
    await expect(rita.locator(".reporter-accuracy")).to_have_text(" — 1 of 1 earlier report upheld (100 %)")
    await expect(case.locator(".scores-none")).to_contain_text("members reported it")
    await _shoot(mod, shots / "console-context.png")

    await mod.set_viewport_size(PHONE)
    row_box = await case.locator(".case-row").bounding_box()
    pane_box = await case.locator(".case-detail").bounding_box()
    assert pane_box["y"] >= row_box["y"] + row_box["height"] - 1, (row_box, pane_box)   # the pane stacks
    assert pane_box["width"] <= PHONE["width"]
    await _shoot(mod, shots / "console-context-phone.png")


async def test_content_the_model_could_not_score_is_shown_as_such(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """A case the worker opened because the model could not score its content (reason ``unscored``): ranked medium,
    above a score at its line, raised by the model, and its pane says why there are no scores."""
    low = await _post(live, "ann", "Honestly this whole thread is garbage")
    poison = await _post(live, "zed", "a text the model chokes on")
    await _flag(pool, low["id"], ["toxicity>=0.80 (0.81)"], {"toxicity": 0.81}, minutes_ago=50)
    async with pool.acquire() as conn:
        await mdb.open_case(conn, "shared_vybe", poison["id"], ["unscored"], None)
    mod = await _console(pages, live)
    await expect(mod.locator("article.case")).to_have_count(2)
    assert await _order(mod) == [poison["id"], low["id"]]
    row = _row(mod, poison["id"])
    await expect(row.locator(".sev")).to_have_text("medium")
    await expect(row.locator(".scores-none")).to_contain_text("The model could not score it")
    await mod.get_by_label("Raised by", exact=True).select_option("model")
    assert await _order(mod) == [poison["id"], low["id"]]
    await row.locator(".case-open").click()  # closes the pane: the row says what the case is about
    await expect(row.locator(".row-about")).to_have_text("could not be scored")


async def test_keyboard_help_claim_hide_undo_and_remove_confirmation(live: Any, pool: asyncpg.Pool, pages: Any,
                                                                     shots: Any) -> None:
    """j/k and the arrows move through the queue, `?` opens the help, `c` claims, `h` hides (the claim
    and the decision are the moderator's), `u` undoes within the window; `r` asks before removing and
    Escape cancels; Remove looks unlike Hide."""
    one = await _post(live, "u1", "First flagged post for the keyboard")
    two = await _post(live, "u2", "Second flagged post for the keyboard")
    three = await _post(live, "u3", "Third flagged post for the keyboard")
    for i, v in enumerate((one, two, three)):
        await _flag(pool, v["id"], ["insult>=0.60 (0.80)"], {"insult": 0.8}, minutes_ago=30 - i)
    mod = await _console(pages, live)
    await mod.get_by_label("Sort", exact=True).select_option("oldest")
    await expect(_row(mod, one["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")
    await mod.locator("#queue-title").focus()

    await mod.keyboard.press("j")
    await expect(_row(mod, two["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")
    await expect(_row(mod, two["id"]).locator(".case-open")).to_be_focused()
    await expect(_row(mod, one["id"]).locator(".case-detail")).to_have_count(0)
    await mod.keyboard.press("ArrowDown")
    await expect(_row(mod, three["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")
    await mod.keyboard.press("k")
    await mod.keyboard.press("ArrowUp")
    await expect(_row(mod, one["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")

    await mod.keyboard.press("?")
    help_ = mod.get_by_role("dialog", name="Keyboard shortcuts")
    await expect(help_).to_be_visible()
    await expect(help_).to_contain_text("Undo your last decision")
    await _shoot(mod, shots / "console-keys-help.png")
    await mod.keyboard.press("Escape")
    await expect(help_).to_be_hidden()

    case = _row(mod, one["id"])
    await mod.keyboard.press("c")
    await expect(case.locator(".claim-line")).to_contain_text("Claimed by you")
    assert (await _case(pool, one["id"]))["claimed_by"] == "mod1"
    await mod.keyboard.press("n")
    await expect(case.get_by_label("Internal note")).to_be_focused()
    await mod.keyboard.type("insulting a member")
    await mod.keyboard.press("Escape")
    await mod.keyboard.press("h")
    await expect(case).to_have_count(0)
    await expect(mod.locator("#count-open")).to_have_text("2")
    row = await _case(pool, one["id"])
    assert (row["state"], row["resolution"], row["resolved_by"], row["note"]) == \
        ("resolved", "hide", "mod1", "insulting a member")
    await expect(_row(mod, two["id"]).locator(".case-open")).to_be_focused()   # on to the next case
    undo = mod.locator("#undo")
    await expect(undo).to_contain_text("Hidden")
    await expect(mod.locator(f".resolved-item[data-case-id='{row['id']}']")).to_contain_text("insulting a member")
    await _shoot(mod, shots / "console-undo.png")
    await mod.keyboard.press("u")
    await expect(case).to_have_count(1)
    await expect(case.locator(".claim-line")).to_have_text("Unclaimed")
    await expect(undo).to_be_hidden()
    row = await _case(pool, one["id"])
    assert (row["state"], row["resolution"]) == ("open", None)
    # Out of view until decided again (an undo no longer puts taken-down content back in every feed).
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid", one["id"]) \
        == "hidden"
    await expect(mod.locator(f".resolved-item[data-case-id='{row['id']}']")).to_have_count(0)

    # Remove asks first; Escape (or Cancel) leaves the case as it was.
    remove = case.get_by_role("button", name="Remove")
    assert await remove.evaluate("el => getComputedStyle(el).backgroundColor") == DANGER
    assert await case.get_by_role("button", name="Keep hidden").evaluate(  # hidden still: its decisions say so
        "el => getComputedStyle(el).backgroundColor") != DANGER
    await mod.keyboard.press("r")
    confirm = mod.get_by_role("dialog", name="Remove for good?")
    await expect(confirm).to_be_visible()
    await expect(confirm.locator("#remove-what")).to_contain_text(one["content"])
    await expect(confirm.get_by_role("button", name="Cancel")).to_be_focused()
    await _shoot(mod, shots / "console-remove-confirm.png")
    await mod.keyboard.press("Escape")
    await expect(confirm).to_be_hidden()
    await expect(case).to_have_count(1)
    assert (await _case(pool, one["id"]))["state"] == "open"
    await remove.click()
    await confirm.get_by_role("button", name="Remove for good").click()
    await expect(case).to_have_count(0)
    row = await _case(pool, one["id"])
    assert (row["state"], row["resolution"]) == ("resolved", "remove")

    await mod.keyboard.press("d")   # the selection moved on: dismiss the next one
    await expect(mod.locator("#count-open")).to_have_text("1")
    assert (await _case(pool, two["id"]))["resolution"] == "dismiss"


async def test_forty_cases_worked_through_by_keyboard(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """Forty flagged cases, keyboard only: each decision claims, acts and moves to the next case."""
    ids = []
    for i in range(40):
        v = await _post(live, f"writer{i % 7}", f"Flagged post number {i}: you people are all idiots")
        await _flag(pool, v["id"], ["insult>=0.60 (0.75)"], {"insult": 0.75}, minutes_ago=60 - i)
        ids.append(v["id"])
    mod = await _console(pages, live)
    await expect(mod.locator("#count-open")).to_have_text("40")
    await mod.locator("#queue-title").focus()
    for i in range(40):
        await mod.keyboard.press("h" if i % 3 == 0 else "d")
        await expect(mod.locator("#count-open")).to_have_text(str(39 - i))
    await expect(mod.locator("#queue-empty")).to_be_visible()
    rows = await pool.fetch("SELECT resolution, resolved_by, count(*) AS n FROM moderation_cases GROUP BY 1, 2")
    counts = {(r["resolution"], r["resolved_by"]): r["n"] for r in rows}
    assert counts == {("hide", "mod1"): 14, ("dismiss", "mod1"): 26}


async def test_a_case_decided_by_someone_else_leaves_nothing_selected(live: Any, pool: asyncpg.Pool,
                                                                     pages: Any) -> None:
    """The case open in the pane is decided by another moderator: the console says so and selects nothing, so a
    key pressed next decides nothing (before, the next case was selected at once, and `h` hid a case the moderator
    never read); j selects where it was, and keys work again."""
    first = await _post(live, "w1", "You are a pathetic excuse for a coach")
    second = await _post(live, "w2", "Nobody here would miss you, loser")
    await _flag(pool, first["id"], ["insult>=0.60 (0.90)"], {"insult": 0.9}, minutes_ago=5)
    await _flag(pool, second["id"], ["insult>=0.60 (0.70)"], {"insult": 0.7}, minutes_ago=4)
    mod = await _console(pages, live)
    await expect(_row(mod, first["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")
    case = await _case(pool, first["id"])
    r = await _rest(live, "mod2", "POST", f"/api/mod/cases/{case['id']}/resolve",
                    {"version": case["version"], "action": "hide"})
    assert r.status_code == 200, r.text
    await expect(_row(mod, first["id"])).to_have_count(0)
    await expect(mod.locator("#notices")).to_contain_text("was hidden by mod2")
    await expect(mod.locator("article.case .case-open[aria-expanded='true']")).to_have_count(0)
    await mod.locator("#queue-title").focus()
    await mod.keyboard.press("h")
    await expect(mod.locator("#count-open")).to_have_text("1")
    assert (await _case(pool, second["id"]))["state"] == "open", "a key with nothing selected decides nothing"
    await mod.keyboard.press("j")
    await expect(_row(mod, second["id"]).locator(".case-open")).to_have_attribute("aria-expanded", "true")
    await mod.keyboard.press("d")
    await expect(mod.locator("#count-open")).to_have_text("0")
    assert (await _case(pool, second["id"]))["resolution"] == "dismiss"


async def test_a_refused_decision_lets_go_of_the_claim_it_took(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """Hide on an unclaimed case claims it first (so others see who acts); when the server refuses the decision,
    the console lets that claim go: before, the case stayed held from every other moderator until the claim
    expired, by someone who had moved on. The note is made longer than the server takes (as a console older than
    the server's limit would send it), a refusal that comes at once."""
    vybe = await _post(live, "w1", "You are a pathetic excuse for a coach")
    await _flag(pool, vybe["id"], ["insult>=0.60 (0.90)"], {"insult": 0.9})
    loads: list[str] = []
    mod = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}", None,
                           on_request=lambda r: "/api/mod/queue" in r.url and loads.append(r.url))
    await expect(mod.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    for _ in range(100):   # both of the console's own loads done: neither redraws the pane under the note below
        if len(loads) >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    row = _row(mod, vybe["id"])
    await expect(row.locator(".case-open")).to_have_attribute("aria-expanded", "true")
    note = row.locator(".note-input")
    await note.evaluate("el => el.removeAttribute('maxlength')")
    await note.fill("n" * 2500)
    await row.get_by_role("button", name="Hide").click()
    await expect(row).to_contain_text("Not done (")
    for _ in range(50):
        case = await _case(pool, vybe["id"])
        if case["claimed_by"] is None:
            break
        await asyncio.sleep(0.1)
    assert case["state"] == "open", case
    assert case["claimed_by"] is None, f"the refused decision left the case claimed by {case['claimed_by']}"
    r = await _rest(live, "mod2", "POST", f"/api/mod/cases/{case['id']}/resolve",
                    {"version": case["version"], "action": "hide"})
    assert r.status_code == 200, r.text


async def test_a_backlog_past_one_page_is_loaded_whole(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """A raid leaves 520 open cases, more than the server gives one request (500): the console pages through the
    queue, so the count, the severity sort and the search cover them all, and a reload keeps them (before, it
    showed the oldest 500, and every reload marked newer cases it held as decided). The console loads the queue
    twice on its own (at start, and when its subscription to mod:flagged starts without a resume point): a case
    that arrives live between the two must survive the second."""
    async with pool.acquire() as conn, conn.transaction():
        for i in range(520):
            case_id = await mdb.open_case(conn, "user", f"raider-{i:03d}", ["user reports: HARASSMENT x3"], None)
            await conn.execute("UPDATE moderation_cases SET opened_at = now() - make_interval(secs => 600 - $2) "
                               "WHERE id = $1", case_id, i)
    loads: list[str] = []
    page = await pages.open(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}", None,
                            on_request=lambda r: "/api/mod/queue" in r.url and loads.append(r.url))
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=5000)
    await expect(page.locator("#count-open")).to_have_text("520")
    for _ in range(100):
        if len(loads) >= 4:   # two loads of two pages each
            break
        await asyncio.sleep(0.05)
    assert len(loads) >= 4 and sum("after=" in u for u in loads) >= 2, loads
    await expect(page.locator("#count-open")).to_have_text("520")
    await page.get_by_label("Search").fill("raider-519")
    await expect(page.locator("article.case")).to_have_count(1)
    await page.get_by_label("Search").fill("raider-000")
    await expect(page.locator("article.case")).to_have_count(1)


async def test_a_comment_on_an_anonymous_vybe_says_so(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """The context of a comment on an anonymous vybe marks it: the moderator sees its author (to judge), and is
    told members do not, so a message to the commenter does not name them."""
    parent = await _post(live, "quiet", "I relapsed last night and I am scared to tell anyone", is_anonymous=True)
    reply = await _comment(live, "troll", parent["id"], "Typical, you were always going to fail")
    await _report(live, ["rita", "ray", "rob"], "COMMENT", reply["id"], "HARASSMENT", "kicking her while she is down")
    case = await _case(pool, reply["id"])
    r = await _rest(live, "mod2", "GET", f"/api/mod/cases/{case['id']}/context")
    assert r.status_code == 200 and r.json()["parent"]["is_anonymous"] is True, r.text
    mod = await _console(pages, live)
    row = _row(mod, reply["id"])
    await expect(row.locator(".ctx-parent-author")).to_have_text("quiet")
    await expect(row.locator(".ctx-parent .badge-anon")).to_have_text("posted anonymously")


async def test_bulk_hide_keeps_the_labels_picked_on_a_case(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """Labels picked in a case's pane go with a bulk Hide (before, the bulk run sent none: the model learned the
    flags it had, not the moderator's correction)."""
    one = await _post(live, "b1", "Keep posting and see what happens to your car")
    two = await _post(live, "b2", "You are all idiots")
    await _flag(pool, one["id"], ["insult>=0.60 (0.70)"], {"insult": 0.7}, minutes_ago=5)
    await _flag(pool, two["id"], ["insult>=0.60 (0.65)"], {"insult": 0.65}, minutes_ago=4)
    mod = await _console(pages, live)
    case = await _case(pool, one["id"])
    await _row(mod, one["id"]).locator(".case-open").click()
    await mod.locator(".labels-pick summary").first.click()  # the selected case's pane
    await mod.locator(f"#case-{case['id']}-label-threat").check()
    await mod.get_by_label("Select all shown").check()
    await mod.get_by_role("button", name="Hide selected").click()
    await expect(mod.locator("#bulk-status")).to_contain_text("Hidden 2 of 2.")
    labels = {r["target_id"]: set(r["labels"]) for r in await pool.fetch("SELECT * FROM moderation_labels")}
    assert "threat" in labels[one["id"]] and "threat" not in labels[two["id"]], labels


async def test_a_queue_that_cannot_load_says_so_and_loads_again(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """The queue's load answered `unavailable` (PostgreSQL down) with retry_after: the console says the queue
    may be incomplete (not "Nothing flagged") and loads it again after retry_after by itself (before: an error
    notice, "Nothing flagged right now", and no second try). The 503s are the browser's, as the server sends them
    while PostgreSQL is down (tests/faults)."""
    v = await _post(live, "q1", "You people are all idiots")
    await _flag(pool, v["id"], ["insult>=0.60 (0.70)"], {"insult": 0.7})
    refusals = 0

    async def refuse(route: Any) -> None:
        nonlocal refusals
        refusals += 1
        if refusals > 2:
            await route.continue_()
            return
        await route.fulfill(status=503, json={"code": "unavailable", "message": "PostgreSQL is unreachable",
                                              "retry_after": 1})

    page = await pages.open("about:blank")
    await page.route("**/api/mod/queue*", refuse)
    await page.goto(f"{live.http}/mod#token={live.token('mod1', 'MODERATOR')}")
    await expect(page.locator("#queue-incomplete")).to_be_visible()
    await expect(page.locator("#queue-empty")).to_be_hidden()
    await expect(_row(page, v["id"])).to_have_count(1, timeout=10_000)
    await expect(page.locator("#queue-incomplete")).to_be_hidden()
    assert refusals >= 3
    # The browser logs each refused request; those two were this test's own.
    pages.errors[:] = [e for e in pages.errors if "status of 503" not in e]


async def test_bulk_dismiss_reports_each_case(live: Any, pool: asyncpg.Pool, pages: Any, shots: Any) -> None:
    """Selecting several cases and Dismiss selected sends one versioned resolve per case: the ones
    another moderator holds are reported by name and stay; Undo reopens the dismissed ones."""
    posts = [await _post(live, f"p{i}", f"Spammy post {i}: follow me for free money") for i in range(4)]
    for i, v in enumerate(posts):
        await _flag(pool, v["id"], ["toxicity>=0.80 (0.85)"], {"toxicity": 0.85}, minutes_ago=10 - i)
    held = await _case(pool, posts[3]["id"])
    r = await _rest(live, "mod2", "POST", f"/api/mod/cases/{held['id']}/claim", {"version": held["version"]})
    assert r.status_code == 200, r.text

    mod = await _console(pages, live)
    await mod.get_by_label("Sort", exact=True).select_option("oldest")
    await expect(_row(mod, posts[3]["id"]).locator(".row-claim")).to_have_text("held by mod2")
    await mod.get_by_label("Select all shown").check()
    await expect(mod.locator("#bulk-count")).to_have_text("4 selected")
    await _row(mod, posts[2]["id"]).locator(".case-check").uncheck()
    await mod.locator("#queue-title").focus()
    await mod.keyboard.press("j")
    await mod.keyboard.press("j")
    await mod.keyboard.press("x")   # the keyboard selects too: posts[2] again
    await expect(mod.locator("#bulk-count")).to_have_text("4 selected")
    await _shoot(mod, shots / "console-bulk.png")
    await mod.get_by_role("button", name="Dismiss selected").click()

    status = mod.locator("#bulk-status")
    await expect(status).to_contain_text("Dismissed 3 of 4.")
    await expect(status.locator(f"li[data-case-id='{held['id']}']")).to_contain_text("mod2 is working on this case")
    await expect(mod.locator("article.case")).to_have_count(1)
    rows = {r["target_id"]: r for r in await pool.fetch("SELECT * FROM moderation_cases")}
    assert [rows[v["id"]]["resolution"] for v in posts] == ["dismiss", "dismiss", "dismiss", None]
    audits = await pool.fetchval("SELECT count(*) FROM moderation_audit WHERE action = 'dismiss' AND actor_id = 'mod1'")
    assert audits == 3
    await _shoot(mod, shots / "console-bulk-done.png")

    await expect(mod.locator("#undo")).to_contain_text("Dismissed 3 of 4.")
    await mod.locator("#undo").get_by_role("button", name="Undo").click()
    await expect(mod.locator("article.case")).to_have_count(4)
    assert await pool.fetchval("SELECT count(*) FROM moderation_cases WHERE state = 'open'") == 4

    await mod.set_viewport_size(PHONE)
    await _shoot(mod, shots / "console-queue-phone.png")


async def test_reopen_from_recently_resolved(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """A decision made earlier (by anyone) is under "Recently resolved"; Reopen puts the case back in the
    queue, selected, and the content back under review (hidden content stays out of view until decided again)."""
    v = await _post(live, "ed", "A post another moderator hid yesterday")
    await _flag(pool, v["id"], ["insult>=0.60 (0.70)"], {"insult": 0.7})
    await _decide(pool, v["id"], "hide", moderator="mod9")
    mod = await _console(pages, live)
    await expect(mod.locator("#queue-empty")).to_be_visible()
    item = mod.locator(".resolved-item")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("Hidden")
    await expect(item).to_contain_text("by mod9")
    await item.get_by_role("button", name="Reopen").click()
    case = _row(mod, v["id"])
    await expect(case).to_be_visible()
    await expect(case.locator(".case-open")).to_have_attribute("aria-expanded", "true")
    await expect(mod.locator(".resolved-item")).to_have_count(0)
    row = await _case(pool, v["id"])
    assert row["state"] == "open"
    assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes WHERE id = $1::uuid", v["id"]) \
        == "hidden"
    audit = await pool.fetchval("SELECT note FROM moderation_audit WHERE action = 'reopen' AND actor_id = 'mod1'")
    assert audit == "was hide"


async def test_appeal_decided_by_another_moderator(live: Any, pool: asyncpg.Pool, pages: Any, shots: Any) -> None:
    """mod1 hides a post with a message for its author; the author appeals. On mod1's console the appeal
    shows the statement and who acted, and mod1's decision buttons are off with the reason (the server
    refuses mod1 too: forbidden); mod2, filtering to appeals, restores it and the appeal is granted."""
    v = await _post(live, "sam", "I will end you at chess tonight")
    await _flag(pool, v["id"], ["threat>=0.60 (0.82)"], {"threat": 0.82})
    one = await _console(pages, live, "mod1")
    case = _row(one, v["id"])
    await case.get_by_label("Message to the author").fill("This reads as a threat.")
    await case.get_by_role("button", name="Hide").click()
    await expect(case).to_have_count(0)
    row = await _case(pool, v["id"])
    assert (row["message"], row["note"]) == ("This reads as a threat.", None)

    r = await _rest(live, "sam", "POST", "/api/appeals", {"target_type": "SHARED_VYBE", "target_id": v["id"],
                                                          "statement": "It is about a chess game with my brother."},
                    role="MEMBER")
    assert r.status_code == 200, r.text
    await expect(case).to_be_visible(timeout=5000)
    await expect(one.locator("#count-appeals")).to_have_text("1")
    await expect(case.locator(".badge-appeal")).to_have_text("appeal")
    await case.locator(".case-open").click()
    await expect(case.locator(".appeal-statement")).to_have_text("It is about a chess game with my brother.")
    await expect(case.locator(".appeal-acted")).to_contain_text("Hidden by you.")
    await expect(case.locator(".blocked-why")).to_have_text(
        "You hid this, so another moderator decides the appeal.")
    await expect(case.get_by_role("button", name="Restore")).to_be_disabled()
    await expect(case.get_by_role("button", name="Keep hidden")).to_be_disabled()
    await one.locator("#queue-title").focus()
    await one.keyboard.press("s")
    await expect(case.locator(".case-error")).to_have_text(
        "Not done: You hid this, so another moderator decides the appeal.")
    appeal = await _case(pool, v["id"])
    r = await _rest(live, "mod1", "POST", f"/api/mod/cases/{appeal['id']}/resolve",
                    {"version": appeal["version"], "action": "restore"})
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    await _shoot(one, shots / "console-appeal-own.png")

    two = await _console(pages, live, "mod2")
    await two.get_by_label("Appeals", exact=True).select_option("only")
    seen = _row(two, v["id"])
    await expect(two.locator("article.case")).to_have_count(1)
    await expect(seen.locator(".appeal-acted")).to_contain_text("Hidden by mod1.")
    await expect(seen.locator(".appeal-message")).to_have_text("The author was told: This reads as a threat.")
    await expect(seen.locator(".blocked-why")).to_have_count(0)
    await expect(seen.get_by_role("button", name="Dismiss")).to_have_count(0)   # hidden content: Restore instead
    await _shoot(two, shots / "console-appeal.png")
    await two.set_viewport_size(PHONE)
    await _shoot(two, shots / "console-appeal-phone.png")
    await seen.get_by_label("Message to the author").fill("Restored, sorry about that.")
    await seen.get_by_role("button", name="Restore").click()
    await expect(seen).to_have_count(0)
    await expect(case).to_have_count(0, timeout=5000)   # gone from mod1's console too
    row = await _case(pool, v["id"])
    assert (row["resolution"], row["resolved_by"], row["appeal_outcome"]) == ("restore", "mod2", "granted")
    await expect(one.locator(f".resolved-item[data-case-id='{row['id']}']")).to_contain_text("appeal granted")


async def test_sister_apps_cases_show_their_app_and_filter_by_it(live: Any, pool: asyncpg.Pool, pages: Any) -> None:
    """A Miel message moderated as a service sits in the same queue, named as Miel's, and the App
    filter shows one app's cases at a time."""
    from db import apps

    vybe = await _post(live, "ann", "you are all pathetic")
    await _flag(pool, vybe["id"], ["insult>=0.60 (0.90)"], {"insult": 0.9})
    await apps.create_app(pool, "miel", "Miel")
    async with pool.acquire() as conn, conn.transaction():
        item_id, _ = await apps.submit_item(conn, "miel", content_type="message", content_id="msg-9",
                                            user_id="u-77", text="send me pics or else")
        await conn.execute("UPDATE app_items SET moderation_state = 'flagged' WHERE id = $1", item_id)
        await mdb.open_case(conn, "app_item", str(item_id), ["threat>=0.60 (0.80)"], {"threat": 0.8},
                            model_flagged=True)
    mod = await _console(pages, live)
    miel = _row(mod, str(item_id))
    await expect(miel).to_be_visible()
    await expect(miel.locator(".row-facts .badge-app")).to_have_text("miel")
    await expect(miel.locator(".row-title")).to_contain_text("Message by u-77")
    await mod.get_by_label("App", exact=True).select_option("miel")
    assert await _order(mod) == [str(item_id)]
    await mod.get_by_label("App", exact=True).select_option("vybe")
    assert await _order(mod) == [vybe["id"]]
    await mod.get_by_label("App", exact=True).select_option("")
    assert sorted(await _order(mod)) == sorted([vybe["id"], str(item_id)])
    await miel.locator(".case-open").click()
    await expect(mod.locator(".case-detail .app-ref")).to_contain_text("miel id msg-9")
    pages.check()

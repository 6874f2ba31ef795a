"""Reads with per-viewer rules: privacy, anonymity, blocks, moderation state, keyset pagination."""

from __future__ import annotations

import base64
import uuid
from typing import TYPE_CHECKING

import pytest

from db.writes import Invalid, NotFound, comment, feed_page, get_vybe, post_vybe, vybe_comments
from db.writes.feed import encode_cursor
from test_writes_support import looproom, set_state, users

if TYPE_CHECKING:
    import asyncpg

pytestmark = pytest.mark.anyio


async def _ids(pool: asyncpg.Pool, viewer: str, **kwargs: object) -> list[str]:
    page = await feed_page(pool, viewer, limit=100, **kwargs)  # type: ignore[arg-type]
    return [v.content for v in page.items]


async def test_private_and_friends_only_vybes_only_reach_their_author(pool: asyncpg.Pool) -> None:
    """PRIVATE (and FRIENDS_ONLY, with no friend graph) appear in the author's feed only."""
    await users(pool, "ann", "bob")
    await post_vybe(pool, "ann", content="public")
    await post_vybe(pool, "ann", content="private", privacy_level="PRIVATE")
    await post_vybe(pool, "ann", content="friends", privacy_level="FRIENDS_ONLY")
    assert sorted(await _ids(pool, "ann")) == ["friends", "private", "public"]
    assert await _ids(pool, "bob") == ["public"]
    secret = (await feed_page(pool, "ann", limit=100)).items
    for v in secret:
        if v.privacy_level == "PRIVATE":
            with pytest.raises(NotFound):
                await get_vybe(pool, v.id, viewer_id="bob")
            assert (await get_vybe(pool, v.id, viewer_id="ann")).content == "private"


async def test_anonymous_vybes_never_expose_the_author_except_to_moderators(pool: asyncpg.Pool) -> None:
    """is_anonymous or privacy ANONYMOUS: user_id is None for everyone but moderators."""
    await users(pool, "ann", "bob", "mod")
    a = await post_vybe(pool, "ann", content="anon flag", is_anonymous=True)
    b = await post_vybe(pool, "ann", content="anon level", privacy_level="ANONYMOUS")
    await post_vybe(pool, "ann", content="named")
    seen = {v.content: v.user_id for v in (await feed_page(pool, "bob")).items}
    assert seen == {"anon flag": None, "anon level": None, "named": "ann"}
    assert {v.user_id for v in (await feed_page(pool, "ann")).items} == {None, "ann"}
    modview = {v.content: v.user_id for v in (await feed_page(pool, "mod", viewer_is_moderator=True)).items}
    assert modview == {"anon flag": "ann", "anon level": "ann", "named": "ann"}
    assert (await get_vybe(pool, a.id, viewer_id="bob")).user_id is None
    assert (await get_vybe(pool, b.id)).user_id == "ann"  # trusted read: the stored row


async def test_blocked_users_content_is_excluded(pool: asyncpg.Pool) -> None:
    """A viewer never sees vybes or comments by users they blocked, except anonymous ones: hiding those would tell
    the blocker which anonymous posts are that user's (before, blocking and comparing the feed named them)."""
    from db.writes import block

    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="ann's")
    await post_vybe(pool, "bob", content="bob's")
    await post_vybe(pool, "bob", content="bob anon", is_anonymous=True)
    await post_vybe(pool, "bob", content="bob ANONYMOUS", privacy_level="ANONYMOUS")
    await comment(pool, "bob", vybe_id=v.id, content="bob comments")
    await comment(pool, "bob", vybe_id=v.id, content="bob comments anonymously", is_anonymous=True)
    await comment(pool, "cat", vybe_id=v.id, content="cat comments")
    await block(pool, "ann", "bob")
    assert sorted(await _ids(pool, "ann")) == ["ann's", "bob ANONYMOUS", "bob anon"]
    assert [c.content for c in (await vybe_comments(pool, v.id, "ann")).items] == [
        "bob comments anonymously", "cat comments"]
    assert len(await _ids(pool, "cat")) == 4


async def test_moderation_states_and_premoderation(pool: asyncpg.Pool) -> None:
    """hidden/removed never show; pending shows unless premoderation is on (then only to its author)."""
    await users(pool, "ann", "bob")
    for state in ("pending", "approved", "flagged", "hidden", "removed"):
        v = await post_vybe(pool, "ann", content=state)
        await set_state(pool, "shared_vybes", v.id, state)
    assert sorted(await _ids(pool, "bob")) == ["approved", "flagged", "pending"]
    assert sorted(await _ids(pool, "bob", premoderation=True)) == ["approved", "flagged"]
    assert sorted(await _ids(pool, "ann", premoderation=True)) == ["approved", "flagged", "pending"]
    hidden = await pool.fetchval("SELECT id FROM shared_vybes WHERE content = 'hidden'")
    with pytest.raises(NotFound):
        await get_vybe(pool, hidden, viewer_id="ann")


async def test_cursor_pages_have_no_duplicates_and_no_gaps(pool: asyncpg.Pool) -> None:
    """Pages of 7 over 30 vybes, many sharing one created_at, return each exactly once, newest first."""
    await users(pool, "ann", "bob")
    for i in range(10):
        await post_vybe(pool, "ann", content=f"solo {i}")
    await pool.execute(
        "INSERT INTO shared_vybes (user_id, content, created_at) "
        "SELECT 'ann', 'tied ' || g, '2020-01-01T00:00:00Z' FROM generate_series(1, 20) g")
    seen: list[tuple[object, object]] = []
    cursor = None
    pages = 0
    while True:
        page = await feed_page(pool, "bob", limit=7, cursor=cursor)
        seen.extend((v.created_at, v.id) for v in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 5
    assert len(seen) == len(set(seen)) == 30
    assert seen == sorted(seen, reverse=True)


async def test_looproom_feed(pool: asyncpg.Pool) -> None:
    """looproom_id narrows the feed to that room."""
    await users(pool, "ann")
    room = await looproom(pool, "ann")
    await post_vybe(pool, "ann", content="in room", looproom_id=room)  # type: ignore[arg-type]
    await post_vybe(pool, "ann", content="outside")
    assert await _ids(pool, "ann", looproom_id=room) == ["in room"]


@pytest.mark.parametrize("cursor", [
    "", "!!!", "bm90IGEgY3Vyc29y", base64.urlsafe_b64encode(b"2020-01-01T00:00:00|nope").decode(),
    base64.urlsafe_b64encode(f"2020-01-01T00:00:00|{uuid.uuid4()}".encode()).decode(),  # naive time
    "x" * 500, base64.urlsafe_b64encode(b"\xff\xfe").decode(), "1_" + "0" * 31, "1_" + "G" * 32,
    f"{10**17}_{uuid.uuid4().hex}", f" 1_{uuid.uuid4().hex}",
])
async def test_malformed_cursor_is_a_typed_error(pool: asyncpg.Pool, cursor: str) -> None:
    """Anything that is not one of our cursors raises invalid_cursor."""
    await users(pool, "ann")
    with pytest.raises(Invalid) as info:
        await feed_page(pool, "ann", cursor=cursor)
    assert info.value.code == "invalid_cursor"


async def test_comments_page_in_order_and_respect_the_vybe_visibility(pool: asyncpg.Pool) -> None:
    """Comments come oldest first over pages; hidden ones and those of invisible vybes do not."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="v")
    made = [await comment(pool, "bob", vybe_id=v.id, content=f"c{i}", is_anonymous=i == 0) for i in range(5)]
    await set_state(pool, "comments", made[2].id, "removed")
    first = await vybe_comments(pool, v.id, "ann", limit=2)
    second = await vybe_comments(pool, v.id, "ann", limit=2, cursor=first.next_cursor)
    assert [c.content for c in first.items + second.items] == ["c0", "c1", "c3", "c4"]
    assert second.next_cursor is None
    assert first.items[0].user_id is None and first.items[1].user_id == "bob"
    secret = await post_vybe(pool, "ann", content="s", privacy_level="PRIVATE")
    with pytest.raises(NotFound):
        await vybe_comments(pool, secret.id, "bob")
    assert encode_cursor(made[0].created_at, made[0].id)  # round-trips through decode in the page calls

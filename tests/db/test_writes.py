"""The write path: stored rows, typed refusals that store nothing, deletes, blocks, idempotency."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import msgspec
import pytest

from db.counters import check_counters
from db.writes import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Unavailable,
    WriteError,
    block,
    comment,
    delete_comment,
    delete_vybe,
    post_vybe,
    react,
    report,
    share,
    unblock,
    upsert_user,
)
from test_writes_support import looproom, set_state, snapshot, users, wrong_counters

pytestmark = pytest.mark.anyio


async def test_post_vybe_returns_the_stored_row_and_counts_vibes_shared(pool: asyncpg.Pool) -> None:
    """post_vybe returns what was committed, and the author's vibes_shared is the number of their vybes."""
    await users(pool, "ann")
    room = await looproom(pool, "ann")
    v = await post_vybe(pool, "ann", content="  grateful today  ", type="GRATITUDE", privacy_level="PUBLIC",
                        looproom_id=str(room), loopchain_id="chain-1")
    row = await pool.fetchrow(
        "SELECT content, type::text, looproom_id, loopchain_id FROM shared_vybes WHERE id = $1", v.id)
    assert (row["content"], row["type"], row["looproom_id"], row["loopchain_id"]) == (
        "  grateful today  ", "GRATITUDE", room, "chain-1")
    assert (v.user_id, v.type, v.looproom_id, v.moderation_state, v.reaction_count) == (
        "ann", "GRATITUDE", room, "pending", 0)
    await post_vybe(pool, "ann", content="second")
    assert await pool.fetchval("SELECT vibes_shared FROM user_profiles WHERE user_id = 'ann'") == 2


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"content": ""}, "invalid_content"),
    ({"content": " \n\t "}, "invalid_content"),
    ({"content": "x" * 5001}, "content_too_long"),
    ({"content": "a\x00b"}, "invalid_content"),
    ({"content": "lone \ud800 surrogate"}, "invalid_content"),
    ({"content": 42}, "invalid_content"),
    ({"content": "ok", "type": "RANT"}, "invalid_value"),
    ({"content": "ok", "privacy_level": "SECRET"}, "invalid_value"),
    ({"content": "ok", "is_anonymous": "yes"}, "invalid_value"),
    ({"content": "ok", "looproom_id": str(uuid.uuid4())}, "not_found"),
    ({"content": "ok", "looproom_id": "not-a-uuid"}, "not_found"),
])
async def test_bad_vybe_is_refused_with_a_typed_error_and_nothing_stored(
    pool: asyncpg.Pool, kwargs: dict[str, object], code: str
) -> None:
    """Every malformed post raises its WriteError code and leaves every table and counter as it was."""
    await users(pool, "ann")
    before = await snapshot(pool)
    with pytest.raises(WriteError) as info:
        await post_vybe(pool, "ann", request_id="r1", **kwargs)  # type: ignore[arg-type]
    assert info.value.code == code
    assert await snapshot(pool) == before


async def test_length_limits_are_parameters(pool: asyncpg.Pool) -> None:
    """The limits default to 5000/2000 and can be lowered per call; exactly at the limit is accepted."""
    await users(pool, "ann")
    v = await post_vybe(pool, "ann", content="x" * 5000)
    with pytest.raises(Invalid, match="longer") as info:
        await post_vybe(pool, "ann", content="x" * 11, max_chars=10)
    assert info.value.code == "content_too_long"
    await comment(pool, "ann", vybe_id=v.id, content="y" * 2000)
    with pytest.raises(Invalid):
        await comment(pool, "ann", vybe_id=v.id, content="y" * 2001)
    assert await pool.fetchval("SELECT count(*) FROM comments") == 1


async def test_unknown_author_is_not_found_and_nothing_stored(pool: asyncpg.Pool) -> None:
    """A user the gateway never upserted cannot post (FK translated to not_found)."""
    before = await snapshot(pool)
    with pytest.raises(NotFound):
        await post_vybe(pool, "ghost", content="boo")
    with pytest.raises(NotFound):
        await post_vybe(pool, "ghost", content="boo", request_id="r")
    assert await snapshot(pool) == before


async def test_comment_and_reply_count_on_the_vybe(pool: asyncpg.Pool) -> None:
    """Comments and replies each add one to the vybe's comment_count; the result carries it and the author."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="hello")
    c1 = await comment(pool, "bob", vybe_id=v.id, content="hi")
    c2 = await comment(pool, "ann", vybe_id=str(v.id), content="hi back", parent_id=str(c1.id), is_anonymous=True)
    assert (c1.comment_count, c2.comment_count, c2.parent_id, c2.vybe_author_id) == (1, 2, c1.id, "ann")
    assert await pool.fetchval("SELECT comment_count FROM shared_vybes WHERE id = $1", v.id) == 2


@pytest.mark.parametrize(("case", "code"), [
    ("reply_to_other_vybe", "invalid_parent"), ("unknown_vybe", "not_found"), ("unknown_parent", "content_unavailable"),
    ("empty", "invalid_content"), ("nul", "invalid_content"), ("too_long", "content_too_long"),
    ("hidden_vybe", "content_unavailable"), ("removed_vybe", "content_unavailable"),
    ("hidden_parent", "content_unavailable"), ("private_vybe", "not_found"),
])
async def test_bad_comment_is_refused_and_nothing_stored(pool: asyncpg.Pool, case: str, code: str) -> None:
    """Bad comments (wrong parent, unknown or unavailable target, bad text) store nothing."""
    await users(pool, "ann", "bob")
    v1 = await post_vybe(pool, "ann", content="one")
    v2 = await post_vybe(pool, "ann", content="two")
    secret = await post_vybe(pool, "ann", content="mine", privacy_level="PRIVATE")
    parent = await comment(pool, "ann", vybe_id=v2.id, content="on two")
    args: dict[str, object] = {"vybe_id": v1.id, "content": "reply"}
    if case == "reply_to_other_vybe":
        args["parent_id"] = parent.id
    elif case == "unknown_vybe":
        args["vybe_id"] = uuid.uuid4()
    elif case == "unknown_parent":
        args["parent_id"] = uuid.uuid4()
    elif case in ("empty", "nul", "too_long"):
        args["content"] = {"empty": "   ", "nul": "\x00", "too_long": "z" * 2001}[case]
    elif case in ("hidden_vybe", "removed_vybe"):
        await set_state(pool, "shared_vybes", v1.id, case.split("_")[0])
    elif case == "hidden_parent":
        await set_state(pool, "comments", parent.id, "hidden")
        args["vybe_id"], args["parent_id"] = v2.id, parent.id
    elif case == "private_vybe":
        args["vybe_id"] = secret.id
    before = await snapshot(pool)
    with pytest.raises(WriteError) as info:
        await comment(pool, "bob", request_id="c1", **args)  # type: ignore[arg-type]
    assert info.value.code == code
    assert await snapshot(pool) == before


@pytest.mark.parametrize("state", ["hidden", "removed"])
async def test_hidden_or_removed_vybe_cannot_be_reacted_to_or_shared(pool: asyncpg.Pool, state: str) -> None:
    """Moderated-away content refuses reactions and shares with content_unavailable, storing nothing."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    c = await comment(pool, "bob", vybe_id=v.id, content="y")
    await set_state(pool, "shared_vybes", v.id, state)
    before = await snapshot(pool)
    with pytest.raises(Unavailable):
        await react(pool, "bob", target_type="SHARED_VYBE", target_id=v.id, reaction_type="HEART")
    with pytest.raises(Unavailable):
        await react(pool, "ann", target_type="COMMENT", target_id=c.id, reaction_type="HEART")
    with pytest.raises(Unavailable) as info:
        await share(pool, "bob", v.id)
    assert info.value.code == "content_unavailable"
    assert await snapshot(pool) == before


async def test_share_counts_rows(pool: asyncpg.Pool) -> None:
    """Each share is a row; share_count follows; unknown vybes are not_found."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x")
    first = await share(pool, "bob", v.id)
    second = await share(pool, "bob", str(v.id))
    assert (first.share_count, second.share_count, second.vybe_author_id) == (1, 2, "ann")
    with pytest.raises(NotFound):
        await share(pool, "bob", uuid.uuid4())
    assert await pool.fetchval("SELECT count(*) FROM shares") == 2


async def test_report_once_per_reporter_counts_distinct_reporters(pool: asyncpg.Pool) -> None:
    """A repeat report is a no-op returning the first one; report_count is the number of distinct reporters."""
    await users(pool, "ann", "bob", "cat")
    v = await post_vybe(pool, "ann", content="x")
    r1 = await report(pool, "bob", target_type="shared_vybe", target_id=v.id, report_type="SPAM")
    again = await report(pool, "bob", target_type="shared_vybe", target_id=str(v.id), report_type="OTHER",
                         description="changed my mind")
    r3 = await report(pool, "cat", target_type="shared_vybe", target_id=v.id, report_type="HARASSMENT")
    assert (r1.created, again.created, again.report_id, again.report_type) == (True, False, r1.report_id, "SPAM")
    assert (r1.report_count, again.report_count, r3.report_count) == (1, 1, 2)
    row = await pool.fetchrow("SELECT report_count, is_reported FROM shared_vybes WHERE id = $1", v.id)
    assert (row["report_count"], row["is_reported"]) == (2, True)
    ru = await report(pool, "bob", target_type="user", target_id="ann", report_type="SPAM")
    assert ru.report_count == 1
    assert await pool.fetchval("SELECT report_count FROM users WHERE id = 'ann'") == 1


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"target_type": "shared_vybe", "target_id": str(uuid.uuid4())}, "not_found"),
    ({"target_type": "comment", "target_id": "nope"}, "not_found"),
    ({"target_type": "user", "target_id": "ghost"}, "not_found"),
    ({"target_type": "looproom", "target_id": str(uuid.uuid4())}, "invalid_value"),
    ({"target_type": "user", "target_id": "ann", "report_type": "MEAN"}, "invalid_value"),
    ({"target_type": "user", "target_id": "ann", "description": "d" * 1001}, "content_too_long"),
    ({"target_type": "user", "target_id": "ann", "description": "\x00"}, "invalid_content"),
])
async def test_bad_report_is_refused_and_nothing_stored(pool: asyncpg.Pool, kwargs: dict[str, object],
                                                        code: str) -> None:
    """Reports of unknown targets or with bad values raise their code and store nothing."""
    await users(pool, "ann", "bob")
    before = await snapshot(pool)
    with pytest.raises(WriteError) as info:
        await report(pool, "bob", **{"report_type": "SPAM", **kwargs})  # type: ignore[arg-type]
    assert info.value.code == code
    assert await snapshot(pool) == before


async def _busy_vybe(pool: asyncpg.Pool) -> tuple[object, object, object]:
    """ann's vybe with comments and a reply by others, reactions everywhere, shares and reports."""
    await users(pool, "ann", "bob", "cat", "dan")
    v = await post_vybe(pool, "ann", content="busy")
    other = await post_vybe(pool, "bob", content="unrelated")
    c1 = await comment(pool, "bob", vybe_id=v.id, content="c1")
    c2 = await comment(pool, "cat", vybe_id=v.id, content="reply", parent_id=c1.id)
    for who in ("bob", "cat", "dan"):
        await react(pool, who, target_type="SHARED_VYBE", target_id=v.id, reaction_type="HEART")
        await react(pool, who, target_type="COMMENT", target_id=c2.id, reaction_type="FIRE")
    await react(pool, "ann", target_type="COMMENT", target_id=c1.id, reaction_type="CLAP")
    await react(pool, "ann", target_type="SHARED_VYBE", target_id=other.id, reaction_type="CLAP")
    await share(pool, "dan", v.id)
    await report(pool, "dan", target_type="comment", target_id=c1.id, report_type="SPAM")
    return v.id, c1.id, c2.id


async def test_delete_vybe_own_only_and_every_counter_stays_exact(pool: asyncpg.Pool) -> None:
    """Deleting a vybe removes its comments, shares and all reactions on them, and fixes every author's counters."""
    vid, _, _ = await _busy_vybe(pool)
    before = await snapshot(pool)
    with pytest.raises(Forbidden):
        await delete_vybe(pool, "bob", vid)
    assert await snapshot(pool) == before
    gone = await delete_vybe(pool, "ann", vid)
    assert (gone.comments_deleted, gone.reactions_deleted) == (2, 7)
    assert await pool.fetchval("SELECT count(*) FROM comments") == 0
    assert await pool.fetchval("SELECT count(*) FROM shares") == 0
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 1  # ann's CLAP on bob's vybe
    profiles = dict(await pool.fetch("SELECT user_id, positive_reactions FROM user_profiles"))
    assert profiles == {"ann": 0, "bob": 1, "cat": 0, "dan": 0}
    assert await pool.fetchval("SELECT vibes_shared FROM user_profiles WHERE user_id = 'ann'") == 0
    assert await wrong_counters(pool) == {}
    assert await check_counters(pool) == []
    with pytest.raises(NotFound):
        await delete_vybe(pool, "ann", vid)


async def test_delete_comment_removes_replies_and_their_reactions(pool: asyncpg.Pool) -> None:
    """Deleting a comment deletes its replies (cascade) and the reactions on both; counters stay exact."""
    vid, c1, _ = await _busy_vybe(pool)
    with pytest.raises(Forbidden):
        await delete_comment(pool, "ann", c1)
    gone = await delete_comment(pool, "bob", c1)
    assert (gone.comments_deleted, gone.reactions_deleted) == (2, 4)
    assert await pool.fetchval("SELECT comment_count FROM shared_vybes WHERE id = $1", vid) == 0
    assert await pool.fetchval("SELECT positive_reactions FROM user_profiles WHERE user_id = 'cat'") == 0
    assert await pool.fetchval("SELECT positive_reactions FROM user_profiles WHERE user_id = 'ann'") == 3
    assert await wrong_counters(pool) == {}
    with pytest.raises(NotFound):
        await delete_comment(pool, "bob", c1)


async def test_counter_keys_cannot_be_moved_by_update(pool: asyncpg.Pool) -> None:
    """Admin SQL moving a reaction or comment to another target is refused (counters would silently drift)."""
    _, c1, _ = await _busy_vybe(pool)
    other = await post_vybe(pool, "bob", content="elsewhere")
    with pytest.raises(asyncpg.FeatureNotSupportedError):
        await pool.execute("UPDATE comments SET shared_vybe_id = $1 WHERE id = $2", other.id, c1)
    with pytest.raises(asyncpg.FeatureNotSupportedError):
        await pool.execute("UPDATE reactions SET reactable_id = $1", other.id)
    await pool.execute("UPDATE comments SET content = 'edited' WHERE id = $1", c1)  # other columns are fine
    assert await wrong_counters(pool) == {}


async def test_block_and_unblock_are_idempotent(pool: asyncpg.Pool) -> None:
    """Blocking twice lists once; unblocking what is not blocked is a no-op; unknown users and self are refused."""
    await users(pool, "ann", "bob", "cat")
    assert await block(pool, "ann", "bob") == ["bob"]
    assert await block(pool, "ann", "bob") == ["bob"]
    assert await block(pool, "ann", "cat") == ["bob", "cat"]
    assert await unblock(pool, "ann", "bob") == ["cat"]
    assert await unblock(pool, "ann", "bob") == ["cat"]
    with pytest.raises(NotFound):
        await block(pool, "ann", "ghost")
    with pytest.raises(Invalid):
        await block(pool, "ann", "ann")
    assert await pool.fetchval("SELECT blocked_users FROM users WHERE id = 'ann'") == ["cat"]


async def test_upsert_user_takes_role_from_token_and_keeps_display_name(pool: asyncpg.Pool) -> None:
    """A second sight updates the role; a token without a name keeps the stored one."""
    first = await upsert_user(pool, "ann", "MEMBER", "Ann")
    again = await upsert_user(pool, "ann", "MODERATOR")
    assert (first.role, again.role, again.display_name) == ("MEMBER", "MODERATOR", "Ann")
    assert await pool.fetchval("SELECT count(*) FROM user_profiles WHERE user_id = 'ann'") == 1
    with pytest.raises(Invalid):
        await upsert_user(pool, "bob", "OWNER")
    assert await pool.fetchval("SELECT count(*) FROM users WHERE id = 'bob'") == 0


async def test_same_request_id_applies_once(pool: asyncpg.Pool) -> None:
    """A retry with the same request id returns the first result and stores nothing more."""
    await users(pool, "ann", "bob")
    v1 = await post_vybe(pool, "ann", content="once", request_id="req-1")
    v2 = await post_vybe(pool, "ann", content="once", request_id="req-1")
    assert v2 == msgspec.structs.replace(v1, replayed=True) and not v1.replayed
    c1 = await comment(pool, "bob", vybe_id=v1.id, content="c", request_id="req-1")  # another user's key space
    assert await comment(pool, "bob", vybe_id=v1.id, content="c", request_id="req-1") == \
        msgspec.structs.replace(c1, replayed=True)
    s1 = await share(pool, "bob", v1.id, request_id="req-2")
    assert await share(pool, "bob", v1.id, request_id="req-2") == msgspec.structs.replace(s1, replayed=True)
    counts = await pool.fetchrow("SELECT comment_count, share_count FROM shared_vybes WHERE id = $1", v1.id)
    assert (counts["comment_count"], counts["share_count"]) == (1, 1)
    assert await pool.fetchval("SELECT vibes_shared FROM user_profiles WHERE user_id = 'ann'") == 1


async def test_a_retry_after_the_content_was_deleted_is_a_conflict(pool: asyncpg.Pool) -> None:
    """A retry (same request id) of a vybe or comment deleted since gets conflict, not a stale copy,
    and creates nothing again."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="soon gone", request_id="r-v")
    c = await comment(pool, "bob", vybe_id=v.id, content="gone too", request_id="r-c")
    await delete_comment(pool, "bob", c.id)
    with pytest.raises(Conflict):
        await comment(pool, "bob", vybe_id=v.id, content="gone too", request_id="r-c")
    await delete_vybe(pool, "ann", v.id)
    with pytest.raises(Conflict):
        await post_vybe(pool, "ann", content="soon gone", request_id="r-v")
    assert await pool.fetchval("SELECT count(*) FROM shared_vybes") == 0
    assert await pool.fetchval("SELECT count(*) FROM comments") == 0


async def test_concurrent_retries_apply_once(pool: asyncpg.Pool) -> None:
    """Ten concurrent calls with one request id: one vybe, ten identical results."""
    await users(pool, "ann")
    results = await asyncio.gather(*(post_vybe(pool, "ann", content="burst", request_id="same") for _ in range(10)))
    assert len({r.id for r in results}) == 1
    assert await pool.fetchval("SELECT count(*) FROM shared_vybes") == 1
    assert await pool.fetchval("SELECT vibes_shared FROM user_profiles WHERE user_id = 'ann'") == 1


async def test_request_id_reused_for_another_operation_is_a_conflict(pool: asyncpg.Pool) -> None:
    """The same id for a different operation raises conflict and stores nothing."""
    await users(pool, "ann", "bob")
    v = await post_vybe(pool, "ann", content="x", request_id="dup")
    before = await snapshot(pool)
    with pytest.raises(Conflict) as info:
        await comment(pool, "ann", vybe_id=v.id, content="c", request_id="dup")
    assert info.value.code == "conflict"
    assert await snapshot(pool) == before


async def test_refused_write_does_not_keep_its_request_id(pool: asyncpg.Pool) -> None:
    """A refused write rolls its key back: the corrected retry with the same id is applied."""
    await users(pool, "ann")
    with pytest.raises(Invalid):
        await post_vybe(pool, "ann", content="", request_id="fixme")
    v = await post_vybe(pool, "ann", content="fixed", request_id="fixme")
    assert v.content == "fixed"


async def test_request_id_older_than_24h_is_a_new_request(pool: asyncpg.Pool) -> None:
    """After the 24 h window the same id applies again."""
    await users(pool, "ann")
    v1 = await post_vybe(pool, "ann", content="old", request_id="r")
    await pool.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    v2 = await post_vybe(pool, "ann", content="new", request_id="r")
    assert v1.id != v2.id
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 1
    assert v2.created_at > v1.created_at - dt.timedelta(seconds=1)

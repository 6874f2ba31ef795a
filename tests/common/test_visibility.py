"""Who may see what: the Python rule and its SQL twin agree on every combination, against PostgreSQL."""

from __future__ import annotations

import itertools
import re
import uuid
from typing import TYPE_CHECKING

import pytest

from common.visibility import (
    HIDING_STATES,
    LIVE_PRIVACY,
    SEE_ROW_SQL,
    SEE_VYBE_SQL,
    Viewer,
    hides_author,
    hides_author_sql,
    may_follow,
    may_see,
    shown_author,
)
from db.writes import upsert_user

if TYPE_CHECKING:
    import asyncpg

pytestmark = pytest.mark.anyio

PRIVACY = ("PUBLIC", "FRIENDS_ONLY", "PRIVATE", "ANONYMOUS")
STATES = ("pending", "approved", "flagged", "hidden", "removed")
AUTHOR = "ann"
# Viewer kinds: the author, another member, a moderator, and a member who blocked the author.
VIEWERS = {
    "author": Viewer(AUTHOR),
    "member": Viewer("bob"),
    "moderator": Viewer("mod", is_moderator=True),
    "blocker": Viewer("cat", blocked=frozenset({AUTHOR})),
}
Row = tuple[uuid.UUID, str, str, bool]  # id, privacy level (or "" for a comment), state, is_anonymous


async def _world(pool: asyncpg.Pool) -> tuple[list[Row], list[Row]]:
    """Every (privacy, state, anonymous) vybe by the author, and a comment by them in every
    (state, anonymous) on a public approved vybe of someone else."""
    for uid, viewer in VIEWERS.items():
        await upsert_user(pool, viewer.id, "MODERATOR" if viewer.is_moderator else "MEMBER", uid)
    await upsert_user(pool, "zed", "MEMBER")
    await pool.execute("UPDATE users SET blocked_users = $2 WHERE id = $1", "cat", [AUTHOR])
    vybes = [(uuid.uuid4(), p, s, a) for p, s, a in itertools.product(PRIVACY, STATES, (False, True))]
    await pool.executemany(
        """INSERT INTO shared_vybes (id, user_id, content, privacy_level, moderation_state, is_anonymous)
           VALUES ($1, $2, 'v', $3::privacy_level, $4::moderation_state, $5)""",
        [(i, AUTHOR, p, s, a) for i, p, s, a in vybes])
    host = await pool.fetchval(
        "INSERT INTO shared_vybes (user_id, content, moderation_state) VALUES ('zed', 'host', 'approved') RETURNING id")
    comments = [(uuid.uuid4(), "", s, a) for s, a in itertools.product(STATES, (False, True))]
    await pool.executemany(
        """INSERT INTO comments (id, user_id, shared_vybe_id, content, moderation_state, is_anonymous)
           VALUES ($1, $2, $3, 'c', $4::moderation_state, $5)""",
        [(i, AUTHOR, host, s, a) for i, _, s, a in comments])
    return vybes, comments


@pytest.mark.parametrize("premoderation", [False, True], ids=["open", "premoderated"])
@pytest.mark.parametrize("kind", list(VIEWERS))
async def test_python_rule_and_sql_fragment_agree(pool: asyncpg.Pool, kind: str, premoderation: bool) -> None:
    """For each viewer kind and premoderation setting, every vybe (privacy x state x anonymity) and
    every comment (state x anonymity) is visible to may_see exactly when the SQL fragment returns it."""
    viewer = VIEWERS[kind]
    vybes, comments = await _world(pool)
    sql_vybes = {r["id"] for r in await pool.fetch(
        f"SELECT id FROM shared_vybes WHERE user_id = '{AUTHOR}' AND {SEE_VYBE_SQL}", viewer.id, premoderation)}
    sql_comments = {r["id"] for r in await pool.fetch(
        f"SELECT id FROM comments WHERE {SEE_ROW_SQL}", viewer.id, premoderation)}
    for ident, privacy, state, anonymous in vybes:
        python = may_see(viewer, author_id=AUTHOR, privacy_level=privacy, moderation_state=state,
                         premoderation=premoderation, is_anonymous=anonymous)
        assert python == (ident in sql_vybes), (kind, premoderation, privacy, state, anonymous)
    for ident, _, state, anonymous in comments:
        python = may_see(viewer, author_id=AUTHOR, privacy_level=None, moderation_state=state,
                         premoderation=premoderation, is_anonymous=anonymous)
        assert python == (ident in sql_comments), (kind, premoderation, "comment", state, anonymous)
    # And the rule is the one documented: not two forms agreeing on something else.
    expected_states = 2 if premoderation and kind != "author" else 3
    if kind == "blocker":  # a block spares anonymous items (hiding them would name their author): a PUBLIC vybe
        # flagged anonymous, an ANONYMOUS one either way, an anonymous comment
        assert (len(sql_vybes), len(sql_comments)) == (expected_states * 3, expected_states)
        return
    expected_privacy = len(PRIVACY) if kind == "author" else len(LIVE_PRIVACY)
    assert len(sql_vybes) == expected_states * expected_privacy * 2
    assert len(sql_comments) == expected_states * 2


async def test_author_masking_agrees_with_sql(pool: asyncpg.Pool) -> None:
    """is_anonymous or privacy ANONYMOUS withholds the author, in Python and in SQL alike; only
    moderators see it then, the author included among those who do not."""
    vybes, _ = await _world(pool)
    sql = {r["id"]: r["hidden"] for r in await pool.fetch(
        f"SELECT id, {hides_author_sql('v')} AS hidden FROM shared_vybes v WHERE v.user_id = $1", AUTHOR)}
    for ident, privacy, _, anonymous in vybes:
        hidden = hides_author(anonymous, privacy)
        assert sql[ident] is hidden, (privacy, anonymous)
        assert hidden == (anonymous or privacy == "ANONYMOUS")
        for viewer in VIEWERS.values():
            shown = shown_author(AUTHOR, is_anonymous=anonymous, privacy_level=privacy,
                                 viewer_is_moderator=viewer.is_moderator)
            assert shown == (AUTHOR if viewer.is_moderator or not hidden else None)
    assert shown_author("bob", is_anonymous=True, privacy_level=None, viewer_is_moderator=False) is None
    assert shown_author("bob", is_anonymous=False, privacy_level=None, viewer_is_moderator=False) == "bob"


@pytest.mark.parametrize(("kind", "privacy", "state", "premoderation", "follows"), [
    ("moderator", "PRIVATE", "hidden", True, True),
    ("author", "FRIENDS_ONLY", "removed", True, True),
    ("author", "PUBLIC", "pending", True, True),
    ("member", "PUBLIC", "pending", False, True),
    ("member", "PUBLIC", "pending", True, False),
    ("member", "ANONYMOUS", "flagged", False, True),
    ("member", "PUBLIC", "hidden", False, False),
    ("member", "PRIVATE", "approved", False, False),
    ("blocker", "PUBLIC", "approved", False, False),
    ("blocker", "ANONYMOUS", "approved", False, True),
])
def test_live_vybe_channels_stay_open_to_author_and_moderators(kind: str, privacy: str, state: str,
                                                               premoderation: bool, follows: bool) -> None:
    """A vybe's channel: its author and moderators may always follow it; others as they may read it."""
    assert may_follow(VIEWERS[kind], author_id=AUTHOR, privacy_level=privacy, moderation_state=state,
                      premoderation=premoderation) is follows


async def test_the_feed_index_covers_what_the_rule_shows(pool: asyncpg.Pool) -> None:
    """The feed's partial index (migration 0001, which cannot import the rule) holds exactly the
    states that do not hide content and the live privacy levels, and those are the schema's values."""
    predicate = await pool.fetchval(
        "SELECT pg_get_expr(indpred, indrelid) FROM pg_index WHERE indexrelid = 'shared_vybes_feed_idx'::regclass")
    assert set(re.findall(r"'(\w+)'::moderation_state", predicate)) == set(STATES) - set(HIDING_STATES)
    assert set(re.findall(r"'(\w+)'::privacy_level", predicate)) == set(LIVE_PRIVACY)
    enums = {r["typname"]: set(r["labels"]) for r in await pool.fetch(
        """SELECT t.typname, array_agg(e.enumlabel::text) AS labels FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
            WHERE t.typname IN ('privacy_level', 'moderation_state') GROUP BY t.typname""")}
    assert enums == {"privacy_level": set(PRIVACY), "moderation_state": set(STATES)}

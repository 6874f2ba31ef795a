"""Who may see what: the per-viewer rules, once, in Python and in SQL.

The rules (``tests/common/test_visibility.py`` runs every combination through
both forms against PostgreSQL, so the two cannot drift):

- **Privacy.** PUBLIC and ANONYMOUS reach everyone (:data:`LIVE_PRIVACY`);
  PRIVATE and FRIENDS_ONLY reach their author only: there is no friend graph
  to check, so FRIENDS_ONLY is treated as PRIVATE. A comment has no privacy of
  its own: it is seen where its vybe is.
- **Moderation.** ``hidden`` and ``removed`` (:data:`HIDING_STATES`) take content
  out of every read, its author's and moderators' included: moderators see it
  through the case view. Only a live vybe channel stays open to its author and
  to moderators (:func:`may_follow`), so they hear of its fate.
- **Premoderation.** While it is on, a ``pending`` vybe reaches its author only (comments are not held: they
  go out live at once, so reads pass ``premoderation`` false for them).
- **Blocks.** Nothing by a user the viewer blocked, except anonymous content: hiding it would tell the blocker
  which anonymous posts are that user's (block, then compare the feed). Report it instead.
- **Anonymity.** Content that ``is_anonymous`` or has privacy ANONYMOUS never
  names its author to anyone but moderators, not even to the author, whose
  view must look like everyone else's but for ``mine: true`` (reads and acks).

Writes apply the same privacy and moderation rules to their target but answer
differently (``not_found`` for privacy, ``unavailable`` for moderation) and
ignore blocks and premoderation: see :func:`reaches` and :func:`hides`.

The SQL fragments are ``LiteralString`` constants for ``WHERE`` clauses over
``shared_vybes`` or ``comments`` (columns unqualified) and follow one
parameter convention: ``$1`` is the viewer's user id (text) and ``$2`` whether
premoderation is on (bool); a query that uses them numbers its own parameters
from ``$3``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import LiteralString


def _sql_list(values: tuple[LiteralString, ...]) -> LiteralString:
    return "(" + ", ".join("'" + v + "'" for v in values) + ")"


LIVE_PRIVACY: tuple[LiteralString, ...] = ("PUBLIC", "ANONYMOUS")
"""Privacy levels that reach every viewer (the others reach their author only)."""
HIDING_STATES: tuple[LiteralString, ...] = ("hidden", "removed")
"""Moderation states that take content out of every read."""
PENDING: LiteralString = "pending"
"""The state content waits in before it is scored; hidden from others under premoderation."""
ANONYMOUS_PRIVACY: LiteralString = "ANONYMOUS"
"""The privacy level that also withholds the author, as ``is_anonymous`` does."""

LIVE_PRIVACY_SQL: LiteralString = _sql_list(LIVE_PRIVACY)
"""``('PUBLIC', 'ANONYMOUS')``, for ``privacy_level IN ...``."""
HIDING_STATES_SQL: LiteralString = _sql_list(HIDING_STATES)
"""``('hidden', 'removed')``, for ``moderation_state IN ...``."""

def _see_row(anonymous: LiteralString) -> LiteralString:
    """The row's moderation, premoderation and block rules; ``anonymous`` is the row's "withholds its author"."""
    return f"""
        (moderation_state NOT IN {HIDING_STATES_SQL})
    AND (moderation_state <> '{PENDING}' OR NOT $2::bool OR user_id = $1)
    AND ({anonymous} OR user_id <> ALL (coalesce((SELECT blocked_users FROM users WHERE id = $1), '{{}}')))"""


REACHES_SQL: LiteralString = f"(privacy_level IN {LIVE_PRIVACY_SQL} OR user_id = $1)"
"""The vybe's privacy lets the viewer ($1) see it: :func:`reaches`."""
SEE_ROW_SQL: LiteralString = f"({_see_row('is_anonymous')}\n)"
"""A comment row the viewer ($1) may see, premoderation ($2) on or off: :func:`may_see` with
``privacy_level=None``. A comment also needs its vybe to pass :data:`SEE_VYBE_SQL`."""
_VYBE_ANONYMOUS: LiteralString = f"(is_anonymous OR privacy_level = '{ANONYMOUS_PRIVACY}')"
SEE_VYBE_SQL: LiteralString = f"({_see_row(_VYBE_ANONYMOUS)}\n    AND {REACHES_SQL}\n)"
"""A vybe row the viewer ($1) may see, premoderation ($2) on or off: :func:`may_see`."""


def hides_author_sql(alias: LiteralString) -> LiteralString:
    """Whether the vybe row ``alias`` withholds its author (:func:`hides_author`); for a comment its
    ``is_anonymous`` column says it all, a comment having no privacy of its own."""
    return f"({alias}.is_anonymous OR {alias}.privacy_level = '{ANONYMOUS_PRIVACY}')"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: their id, whether they moderate, and whom they blocked."""

    id: str
    is_moderator: bool = False
    blocked: frozenset[str] = frozenset()


def reaches(viewer_id: str, author_id: str, privacy_level: str) -> bool:
    """Whether content of this privacy, by ``author_id``, reaches ``viewer_id``."""
    return privacy_level in LIVE_PRIVACY or author_id == viewer_id


def hides(moderation_state: str | None) -> bool:
    """Whether this moderation state takes content out of reads (writes answer ``unavailable``)."""
    return moderation_state in HIDING_STATES


def may_see(viewer: Viewer, *, author_id: str, privacy_level: str | None, moderation_state: str,
            premoderation: bool = False, is_anonymous: bool = False) -> bool:
    """Whether ``viewer`` may read the item (the feed, one vybe, a vybe's comments).

    ``privacy_level`` is None for a comment, which is seen where its vybe is. Moderators get no
    exception here; they read hidden content through the case view. Blocks spare anonymous items.
    """
    own = author_id == viewer.id
    blocked = author_id in viewer.blocked and not hides_author(is_anonymous, privacy_level)
    if hides(moderation_state) or blocked:
        return False
    if premoderation and moderation_state == PENDING and not own:
        return False
    return privacy_level is None or reaches(viewer.id, author_id, privacy_level)


def may_follow(viewer: Viewer, *, author_id: str, privacy_level: str, moderation_state: str,
               premoderation: bool = False, is_anonymous: bool = False) -> bool:
    """Whether ``viewer`` may subscribe to a vybe's live channel: its author and moderators always
    (they hear of hides and restores there), anyone else where :func:`may_see` lets them read it (so, under
    premoderation, not a vybe still held for its score)."""
    if viewer.is_moderator or author_id == viewer.id:
        return True
    return may_see(viewer, author_id=author_id, privacy_level=privacy_level, moderation_state=moderation_state,
                   premoderation=premoderation, is_anonymous=is_anonymous)


def hides_author(is_anonymous: bool, privacy_level: str | None) -> bool:
    """Whether the item withholds its author: flagged anonymous, or a vybe posted ANONYMOUS."""
    return bool(is_anonymous) or privacy_level == ANONYMOUS_PRIVACY


def shown_author(author_id: str | None, *, is_anonymous: bool, privacy_level: str | None,
                 viewer_is_moderator: bool) -> str | None:
    """The author id as this viewer may see it: None for anonymous items unless they moderate."""
    if viewer_is_moderator or not hides_author(is_anonymous, privacy_level):
        return author_id
    return None


__all__ = [
    "ANONYMOUS_PRIVACY", "HIDING_STATES", "HIDING_STATES_SQL", "LIVE_PRIVACY", "LIVE_PRIVACY_SQL", "PENDING",
    "REACHES_SQL", "SEE_ROW_SQL", "SEE_VYBE_SQL", "Viewer", "hides", "hides_author", "hides_author_sql", "may_follow",
    "may_see", "reaches", "shown_author",
]

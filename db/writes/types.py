"""Results of the write path: frozen msgspec Structs (the gateway encodes them as they are)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal, get_args

import msgspec

from common.visibility import hides_author

ReactionType = Literal["HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL"]
ReactableType = Literal["SHARED_VYBE", "COMMENT", "LOOPROOM"]
VybeType = Literal["REFLECTION", "MILESTONE", "INSPIRATION", "GRATITUDE", "PROGRESS_UPDATE"]
PrivacyLevel = Literal["PUBLIC", "FRIENDS_ONLY", "PRIVATE", "ANONYMOUS"]
Role = Literal["MEMBER", "CREATOR", "MODERATOR", "ADMIN"]
ReportTarget = Literal["shared_vybe", "comment", "user"]
ReportType = Literal["SPAM", "HARASSMENT", "INAPPROPRIATE_CONTENT", "SAFETY_CONCERN", "COPYRIGHT", "OTHER"]

REACTION_TYPES: frozenset[str] = frozenset(get_args(ReactionType))
REACTABLE_TYPES: frozenset[str] = frozenset(get_args(ReactableType))
VYBE_TYPES: frozenset[str] = frozenset(get_args(VybeType))
PRIVACY_LEVELS: frozenset[str] = frozenset(get_args(PrivacyLevel))
ROLES: frozenset[str] = frozenset(get_args(Role))
REPORT_TARGETS: frozenset[str] = frozenset(get_args(ReportTarget))
REPORT_TYPES: frozenset[str] = frozenset(get_args(ReportType))


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    role: str
    display_name: str | None
    blocked_users: list[str]
    created_at: dt.datetime


class Vybe(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A shared vybe. ``user_id`` is None when shown anonymously to a viewer."""

    id: uuid.UUID
    user_id: str | None
    type: str
    content: str
    is_anonymous: bool
    privacy_level: str
    looproom_id: uuid.UUID | None
    loopchain_id: str | None
    reaction_count: int
    comment_count: int
    share_count: int
    report_count: int
    is_reported: bool
    moderation_state: str
    created_at: dt.datetime
    updated_at: dt.datetime
    author_name: str | None = None
    """The author's display name (their token's ``name`` claim); absent when anonymous or never given."""
    reactions: dict[str, int] | None = None
    """In reads (feed, one vybe): the count of each reaction type given (types with none are left out)."""
    my_reactions: list[str] | None = None
    """In reads: the reaction types you gave it."""
    mine: bool | None = None
    """In reads: true when you wrote it (anonymous or not: only you are told)."""
    replayed: bool = False
    """True when this is the stored result of an earlier request with the same id."""


class CommentView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A comment or reply as clients see it. ``user_id`` is None when anonymous."""

    id: uuid.UUID
    user_id: str | None
    shared_vybe_id: uuid.UUID
    parent_id: uuid.UUID | None
    content: str
    is_anonymous: bool
    reaction_count: int
    report_count: int
    is_reported: bool
    moderation_state: str
    created_at: dt.datetime
    updated_at: dt.datetime
    author_name: str | None = None
    """The author's display name (their token's ``name`` claim); absent when anonymous or never given."""
    reactions: dict[str, int] | None = None
    """In reads (a vybe's comments): the count of each reaction type given."""
    my_reactions: list[str] | None = None
    """In reads: the reaction types you gave it."""
    mine: bool | None = None
    """In reads: true when you wrote it (anonymous or not: only you are told)."""
    comment_count: int | None = None
    """The vybe's comment_count after this write (in the answer to ``comment``)."""
    replayed: bool = False
    """True when this is the stored result of an earlier request with the same id."""


class Comment(CommentView, frozen=True, kw_only=True, omit_defaults=True):
    """A comment as the write path returns it: plus whom to notify, never sent to clients."""

    vybe_author_id: str | None = None


class ReactionView(msgspec.Struct, frozen=True, kw_only=True):
    """``applied`` is False when the reaction was already there (react) or absent (unreact)."""

    applied: bool
    target_type: str
    target_id: uuid.UUID
    reaction_type: str
    reaction_count: int
    vybe_id: uuid.UUID | None = None
    """The vybe whose channel hears of it: the target itself, or the comment's vybe; None for a looproom."""


class ReactionResult(ReactionView, frozen=True, kw_only=True):
    target_author_id: str
    """Whom to notify; never sent to clients."""


class ShareView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    share_id: uuid.UUID
    vybe_id: uuid.UUID
    share_count: int
    created_at: dt.datetime
    replayed: bool = False
    """True when this is the stored result of an earlier request with the same id."""


class ShareResult(ShareView, frozen=True, kw_only=True, omit_defaults=True):
    vybe_author_id: str
    """Whom to notify; never sent to clients."""


class ReportResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``created`` is False for a repeat by the same reporter (the first report is returned)."""

    report_id: uuid.UUID
    created: bool
    target_type: str
    target_id: str
    report_type: str
    status: str
    report_count: int
    created_at: dt.datetime
    replayed: bool = False
    """True when this is the stored result of an earlier request with the same id."""


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    kind: str
    comments_deleted: int = 0
    reactions_deleted: int = 0
    author_id: str = ""
    vybe_id: uuid.UUID | None = None
    """A comment's vybe."""
    looproom_id: uuid.UUID | None = None
    privacy_level: str = "PUBLIC"
    is_anonymous: bool = False
    comment_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    """Every comment that went: a deleted comment's replies go with it."""


class Page(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Vybe]
    next_cursor: str | None


class CommentPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Comment]
    next_cursor: str | None


class VybeDetail(msgspec.Struct, frozen=True, kw_only=True):
    """One vybe with the first page of its comments."""

    vybe: Vybe
    comments: CommentPage


class BlockList(msgspec.Struct, frozen=True, kw_only=True):
    blocked: list[str]
    """Everyone you block now, sorted."""


_VIEWS: dict[type[msgspec.Struct], type[msgspec.Struct]] = {
    Comment: CommentView, ReactionResult: ReactionView, ShareResult: ShareView,
}


def public(result: msgspec.Struct) -> msgspec.Struct:
    """``result`` as its writer is answered: without the fields only the server may know (whom to notify), and
    anonymous content without its author, as every read shows it to them (``mine`` says it is theirs): an app
    that shows the answer at once must not print the author's name on an anonymous post."""
    view = _VIEWS.get(type(result))
    if view is not None:
        result = view(**{name: getattr(result, name) for name in view.__struct_fields__})
    if isinstance(result, Vybe | CommentView) and hides_author(result.is_anonymous,
                                                              getattr(result, "privacy_level", None)):
        result = msgspec.structs.replace(result, user_id=None, author_name=None, mine=True)
    return result

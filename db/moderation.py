"""Moderation persistence: scores, cases, claims, resolutions and the audit log.

One case per target, ever: new signals (a model flag, the Nth distinct
reporter) reopen it rather than open another. Every change bumps the case's
``version``; moderator actions carry the version they saw and get ``conflict``
when someone else acted first, so two moderators never handle an item
unknowingly. Counters on reports are kept by the 0002 triggers.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from common.events import excerpt
from common.labels import UNSCORED
from common.visibility import hides_author_sql
from db import learning
from db.writes import validate
from db.writes._tx import idempotent, in_transaction
from db.writes.errors import Conflict, Forbidden, NotFound, WriteError
from db.writes.feed import decode_cursor, encode_cursor
from db.writes.locks import lock_target

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import LiteralString

    import asyncpg

    from db.outbox import Announcement

SYSTEM_REPORTER = "system:moderation"
Kind = Literal["shared_vybe", "comment", "app_item"]
_TABLE = {"shared_vybe": "shared_vybes", "comment": "comments", "app_item": "app_items"}
# Which report type a model flag files, by the label that crossed first.
_REPORT_TYPE = {"threat": "SAFETY_CONCERN", "severe_toxicity": "SAFETY_CONCERN", "identity_attack": "HARASSMENT",
                "insult": "HARASSMENT", "sexual_explicit": "INAPPROPRIATE_CONTENT"}


class Item(msgspec.Struct, frozen=True):
    kind: Kind
    id: uuid.UUID
    user_id: str
    content: str
    moderation_state: str
    is_anonymous: bool
    privacy_level: str
    vybe_id: uuid.UUID | None
    looproom_id: uuid.UUID | None


class Reporter(msgspec.Struct, frozen=True):
    reporter_id: str
    type: str
    description: str | None


class CaseView(msgspec.Struct, frozen=True):
    """Everything a moderator needs on one screen."""

    case_id: uuid.UUID
    version: int
    state: str
    target_type: str
    target_id: str
    text: str | None
    author_id: str | None
    is_anonymous: bool
    moderation_state: str | None
    scores: dict[str, float] | None
    reasons: list[str]
    report_count: int
    reporters: list[Reporter]
    claimed_by: str | None
    claim_expires_at: dt.datetime | None
    resolution: str | None
    resolved_by: str | None
    note: str | None
    opened_at: dt.datetime
    vybe_id: uuid.UUID | None = None
    model_cleared_by: str | None = None
    """A newer model version that scores this content below every threshold (the case stays open)."""
    message: str | None = None
    """What the deciding moderator told the author (``note`` is internal)."""
    appeal_statement: str | None = None
    """The author's appeal, once: the case is open again as an appeal until ``appeal_outcome`` is set."""
    appealed_at: dt.datetime | None = None
    appeal_of: str | None = None
    """The moderator whose action is appealed (None: the model's); another moderator decides."""
    appeal_outcome: str | None = None
    """``granted`` (restored or dismissed) or ``denied`` (hidden or removed again)."""
    resolved_at: dt.datetime | None = None
    app: str | None = None
    """For an ``app_item``: the app it comes from (``vybe``: a publication on one of our own namespaces)."""
    content_type: str | None = None
    """For an ``app_item``: the app's content type (or the namespace of a client publication)."""
    content_id: str | None = None
    """For an ``app_item``: the app's id of the content (a publication's id)."""
    channel: str | None = None
    """For a client publication: the channel it was published on."""
    cursor: str = ""
    """This case's place in the queue (``opened_at`` and id): ``GET /api/mod/queue?after=<cursor>`` of a page's
    last case gives the next page."""


class CaseAck(CaseView, frozen=True):
    """The answer to ``claim``, ``resolve`` and ``reopen``: the case after the command."""

    replayed: bool = False
    """True when this is the stored answer to an earlier command with the same id (applied once, 24 h)."""

    @classmethod
    def of(cls, view: CaseView, replayed: bool = False) -> CaseAck:
        return cls(**msgspec.structs.asdict(view), replayed=replayed)


_T = TypeVar("_T")

_ITEMS = """
SELECT 'shared_vybe' AS kind, id, user_id, content, moderation_state::text, is_anonymous,
       privacy_level::text, NULL::uuid AS vybe_id, looproom_id
  FROM shared_vybes WHERE id = ANY($1::uuid[])
UNION ALL
SELECT 'comment', c.id, c.user_id, c.content, c.moderation_state::text, c.is_anonymous,
       v.privacy_level::text, c.shared_vybe_id, NULL::uuid
  FROM comments c JOIN shared_vybes v ON v.id = c.shared_vybe_id WHERE c.id = ANY($2::uuid[])
UNION ALL
SELECT 'app_item', id, user_id, content, moderation_state::text, false, 'PUBLIC', NULL::uuid, NULL::uuid
  FROM app_items WHERE id = ANY($3::uuid[])
"""


async def fetch_items(conn: asyncpg.Connection | asyncpg.Pool, vybes: list[uuid.UUID],
                      comments: list[uuid.UUID], app_items: Sequence[uuid.UUID] = ()) -> list[Item]:
    rows = await conn.fetch(_ITEMS, vybes, comments, list(app_items))
    return [Item(**dict(r)) for r in rows]


_TARGET_OF: LiteralString = "SELECT target_type, target_id FROM moderation_cases WHERE id = $1"


SCORE_MOVES = ("pending", "approved")
"""The states a score moves content out of: a flag stands until a moderator decides, and a moderator's decision
stands (a later score changes neither)."""


async def record_score(conn: asyncpg.Connection, item: Item, model: tuple[str, str], scores: dict[str, float],
                       action: str, reasons: list[str], premoderation: bool = False) -> str | None:
    """Store one score and apply its decision. Returns the content's state before it (``pending``: this is its
    first score, and under premoderation it was never shown; ``""``: the content is gone), or None when this model
    version had scored it already. Locks the target first: every writer takes the target before its case.
    Under ``premoderation`` a vybe hidden at its first score was never shown: its case is ``held``."""
    before = await lock_target(conn, item.kind, str(item.id)) or ""
    inserted = await conn.fetchval(
        """INSERT INTO moderation_scores (target_type, target_id, model_name, model_version, scores, decision, reasons)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT ON CONSTRAINT moderation_scores_once DO NOTHING
           RETURNING true""",
        item.kind, item.id, model[0], model[1], scores, action, reasons,
    )
    if not inserted:
        return None
    new_state = {"approve": "approved", "shadow": "approved", "flag": "flagged", "hide": "hidden"}[action]
    await conn.execute(
        f"UPDATE {_TABLE[item.kind]} SET moderation_state = $2, updated_at = now() "
        "WHERE id = $1 AND moderation_state::text = ANY($3::text[])",
        item.id, new_state, list(SCORE_MOVES),
    )
    if action in ("flag", "hide"):
        label = reasons[0].split(">=")[0] if reasons else "toxicity"
        await conn.execute(
            """INSERT INTO reports (reporter_id, reported_type, reported_id, type, description)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT ON CONSTRAINT reports_one_per_reporter DO NOTHING""",
            SYSTEM_REPORTER, item.kind, str(item.id), _REPORT_TYPE.get(label, "INAPPROPRIATE_CONTENT"),
            "model: " + ", ".join(reasons),
        )
        await open_case(conn, item.kind, str(item.id), reasons, scores, model_flagged=True)
    if premoderation and item.kind == "shared_vybe" and before == "pending":
        # Its first score decides whether it is shown: hidden now, it never was (migration 0009).
        await conn.execute("UPDATE moderation_cases SET held = $3 WHERE target_type = $1 AND target_id = $2",
                           item.kind, str(item.id), action == "hide")
    return before


async def open_case(conn: asyncpg.Connection, target_type: str, target_id: str, reasons: list[str],
                    scores: dict[str, float] | None, *, model_flagged: bool = False) -> uuid.UUID:
    """Open the target's case, or reopen it with the new reasons; returns its id."""
    case_id: uuid.UUID = await conn.fetchval(
        """INSERT INTO moderation_cases (target_type, target_id, reasons, scores, model_flagged)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT ON CONSTRAINT moderation_cases_one_per_target DO UPDATE
              SET state = 'open', version = moderation_cases.version + 1,
                  reasons = ARRAY(SELECT DISTINCT unnest(moderation_cases.reasons || EXCLUDED.reasons)),
                  scores = coalesce(EXCLUDED.scores, moderation_cases.scores),
                  model_flagged = moderation_cases.model_flagged OR EXCLUDED.model_flagged,
                  model_cleared_by = CASE WHEN EXCLUDED.model_flagged THEN NULL
                                          ELSE moderation_cases.model_cleared_by END,
                  opened_at = CASE WHEN moderation_cases.state = 'resolved' THEN now()
                                   ELSE moderation_cases.opened_at END,
                  updated_at = now()
           RETURNING id""",
        target_type, target_id, reasons, scores, model_flagged,
    )
    return case_id


async def on_user_report(conn: asyncpg.Connection, target_type: str, target_id: str,
                         threshold: int) -> uuid.UUID | None:
    """In the report's transaction (the target already locked, so reports, scoring and
    moderator actions take the target before the case: one lock order): flag the
    target once ``threshold`` distinct people reported it. A report on a target whose
    case is open changes that case (its reporters), so it bumps the case's version.
    Returns the case to announce, if any."""
    reporters = await conn.fetchval(
        "SELECT count(*) FROM reports WHERE reported_type = $1 AND reported_id = $2 AND reporter_id <> $3",
        target_type, target_id, SYSTEM_REPORTER)
    if reporters < threshold:
        bumped: uuid.UUID | None = await conn.fetchval(
            """UPDATE moderation_cases SET version = version + 1, updated_at = now()
                WHERE target_type = $1 AND target_id = $2 AND state = 'open' RETURNING id""",
            target_type, target_id)
        return bumped
    if target_type in _TABLE:
        await conn.execute(
            # Not pending content: its first score decides (under premoderation it is held, never shown, until then).
            f"UPDATE {_TABLE[target_type]} SET moderation_state = 'flagged', updated_at = now() "
            "WHERE id = $1::uuid AND moderation_state = 'approved'", target_id)
    return await open_case(conn, target_type, target_id, [f"reports>={threshold} ({reporters})"], None)


# The target is joined by its primary key: target_id (text) is cast to uuid, never the key to
# text (that scans the table). The CASE keeps the cast off user cases, whose target_id is a
# user id and no uuid: PostgreSQL evaluates a CASE branch only for the rows that take it,
# while a plain ``target_type = ... AND id = target_id::uuid`` may cast first (an index
# condition is evaluated before the join filter).
_CASE: LiteralString = f"""
SELECT c.*, coalesce(v.content, cm.content, ai.content) AS text,
       CASE WHEN c.scores IS NULL AND '{UNSCORED}' = ANY(c.reasons)  -- scored since by a retry: its latest score
            THEN (SELECT s.scores FROM moderation_scores s WHERE s.target_type = c.target_type
                     AND s.target_id = c.target_id::uuid ORDER BY s.created_at DESC LIMIT 1)
            ELSE c.scores END AS model_scores,
       coalesce(v.user_id, cm.user_id, ai.user_id, u.id) AS author_id,
       coalesce({hides_author_sql("v")}, cm.is_anonymous, false) AS is_anonymous,
       coalesce(v.moderation_state, cm.moderation_state, ai.moderation_state)::text AS content_state,
       coalesce(v.report_count, cm.report_count, u.report_count, 0) AS report_count,
       cm.shared_vybe_id AS vybe_id, ai.app_id AS app, ai.content_type, ai.content_id, ai.channel
  FROM moderation_cases c
  LEFT JOIN shared_vybes v ON v.id = (CASE WHEN c.target_type = 'shared_vybe' THEN c.target_id::uuid END)
  LEFT JOIN comments cm ON cm.id = (CASE WHEN c.target_type = 'comment' THEN c.target_id::uuid END)
  LEFT JOIN app_items ai ON ai.id = (CASE WHEN c.target_type = 'app_item' THEN c.target_id::uuid END)
  LEFT JOIN users u ON c.target_type = 'user' AND u.id = c.target_id
 WHERE c.id = ANY($1::uuid[])
"""


async def case_views(conn: asyncpg.Connection | asyncpg.Pool, case_ids: list[uuid.UUID]) -> list[CaseView]:
    rows = await conn.fetch(_CASE, case_ids)
    reports = await conn.fetch(
        """SELECT c.id AS case_id, r.reporter_id, r.type::text AS type, r.description
             FROM moderation_cases c JOIN reports r ON r.reported_type = c.target_type AND r.reported_id = c.target_id
            WHERE c.id = ANY($1::uuid[]) ORDER BY r.created_at""", case_ids)
    by_case: dict[uuid.UUID, list[Reporter]] = {}
    for r in reports:
        by_case.setdefault(r["case_id"], []).append(Reporter(r["reporter_id"], r["type"], r["description"]))
    order = {cid: i for i, cid in enumerate(case_ids)}
    views = [_view(r, by_case.get(r["id"], [])) for r in rows]
    return sorted(views, key=lambda v: order[v.case_id])


def _view(r: asyncpg.Record, reporters: list[Reporter]) -> CaseView:
    return CaseView(
        case_id=r["id"], version=r["version"], state=r["state"], target_type=r["target_type"],
        target_id=r["target_id"], text=r["text"], author_id=r["author_id"], is_anonymous=r["is_anonymous"],
        moderation_state=r["content_state"], scores=r["model_scores"], reasons=list(r["reasons"]),
        report_count=r["report_count"], reporters=reporters, claimed_by=r["claimed_by"],
        claim_expires_at=r["claim_expires_at"], resolution=r["resolution"], resolved_by=r["resolved_by"],
        note=r["note"], opened_at=r["opened_at"], vybe_id=r["vybe_id"], model_cleared_by=r["model_cleared_by"],
        message=r["message"], appeal_statement=r["appeal_statement"], appealed_at=r["appealed_at"],
        appeal_of=r["appeal_of"], appeal_outcome=r["appeal_outcome"], resolved_at=r["resolved_at"],
        app=r["app"], content_type=r["content_type"], content_id=r["content_id"], channel=r["channel"],
        cursor=encode_cursor(r["opened_at"], r["id"]),
    )


async def open_queue(pool: asyncpg.Pool, limit: int = 100, appeals: bool | None = None,
                     app: str | None = None, after: str | None = None) -> list[CaseView]:
    """Open cases, oldest first (the moderator's queue); ``appeals``: only appeals (True), none (False);
    ``app``: only that app's items (``vybe``: this app's own content, publications on its namespaces included).
    ``after``: the ``cursor`` of the last case of the page before (keyset paging on the place it had then, so a
    case decided or reopened between pages moves nothing); one that no page gave is :class:`Invalid`
    (``invalid_cursor``)."""
    opened, last = decode_cursor(after)
    ids = await pool.fetch(
        """SELECT c.id FROM moderation_cases c
             LEFT JOIN app_items ai ON ai.id = (CASE WHEN c.target_type = 'app_item' THEN c.target_id::uuid END)
            WHERE c.state = 'open' AND ($2::boolean IS NULL OR (c.appeal_statement IS NOT NULL) = $2)
              AND ($3::text IS NULL OR coalesce(ai.app_id, 'vybe') = $3)
              AND ($4::timestamptz IS NULL OR (c.opened_at, c.id) > ($4::timestamptz, $5::uuid))
            ORDER BY c.opened_at, c.id LIMIT $1""", limit, appeals, app, opened, last)
    return await case_views(pool, [r["id"] for r in ids])


async def _locked_case(conn: asyncpg.Connection, case_id: str, version: int,
                       moderator: str) -> tuple[asyncpg.Record, str | None]:
    """The case row, locked after its target (the one lock order: target, then case), and the target's moderation
    state (content; None for a user, or content that is gone)."""
    try:
        cid = uuid.UUID(case_id)
    except ValueError as err:
        raise NotFound("no such case") from err
    target = await conn.fetchrow(_TARGET_OF, cid)
    if target is None:
        raise NotFound("no such case")
    state = await lock_target(conn, target["target_type"], target["target_id"])
    # The claim's lapse is judged by the database's clock, the one that set it (a gateway's may drift).
    row = await conn.fetchrow("SELECT *, claim_expires_at > now() AS claim_live FROM moderation_cases"
                              " WHERE id = $1 FOR UPDATE", cid)
    if row is None:
        raise NotFound("no such case")
    if row["version"] != version:
        raise Conflict(f"case changed (now version {row['version']}); reload it")
    claimed = row["claimed_by"]
    if claimed and claimed != moderator and row["claim_live"]:
        raise Conflict(f"case is claimed by {claimed} until {row['claim_expires_at'].isoformat()}")
    return row, (state if target["target_type"] != "user" else None)


class Claimed(msgspec.Struct, frozen=True):
    case: CaseView
    replayed: bool = False
    """The stored result of an earlier claim with the same request id: nothing was done now."""


async def claim(pool: asyncpg.Pool, case_id: str, version: int, moderator: str, lease_s: float,
                release: bool = False, announce: Announcement | None = None,
                request_id: str | None = None) -> Claimed:
    """Claim a case for ``lease_s`` seconds (or release it); a stale claim simply expires.

    With ``request_id`` (the moderator's command id) a retry returns the first result, ``replayed``
    (as every moderation command: :func:`resolve`, :func:`reopen`, :func:`appeal`)."""

    async def body(conn: asyncpg.Connection) -> Claimed:
        row, _ = await _locked_case(conn, case_id, version, moderator)
        if row["state"] != "open":
            raise Conflict("case is resolved")
        if not release and row["appeal_statement"] is not None and row["appeal_outcome"] is None \
                and row["appeal_of"] == moderator:
            # A claim would hold the appeal away from every moderator who may decide it, for the whole lease.
            raise Forbidden("you took the action under appeal: another moderator decides it")
        await conn.execute(
            """UPDATE moderation_cases SET claimed_by = $2, version = version + 1, updated_at = now(),
                      claim_expires_at = CASE WHEN $2::text IS NULL THEN NULL
                                              ELSE now() + make_interval(secs => $3) END
                WHERE id = $1""", row["id"], None if release else moderator, lease_s)
        await _audit(conn, moderator, "release" if release else "claim", row, None)
        return Claimed((await case_views(conn, [row["id"]]))[0])

    operation = f"{'release' if release else 'claim'}:{case_id}"
    return await _once(pool, moderator, request_id, operation, Claimed, body, announce)


_STATE_AFTER = {"remove": "removed", "hide": "hidden", "restore": "approved", "dismiss": "approved"}
_REPORT_STATUS = {"remove": "RESOLVED", "hide": "RESOLVED", "restore": "DISMISSED", "dismiss": "DISMISSED"}


class Resolved(msgspec.Struct, frozen=True):
    case: CaseView
    reporters: list[str]
    """Who reported it (people, not the model): each is told the outcome."""
    looproom_id: str | None
    """The vybe's looproom (for a vybe target), whose channel hears of its new visibility."""
    unshown: bool = False
    """The content had never been shown before this decision (a vybe held under premoderation: still waiting for
    its first score, or kept out of view since): letting it out announces its creation, not its return."""
    privacy_level: str | None = None
    """The vybe's privacy (for a vybe target): its take-down or return reaches only those who could see it."""
    was_hidden: bool = False
    """The content was out of view (``hidden`` or ``removed``) before this decision: only then does letting it be
    (restore, dismiss, reopen) put it back in view, which viewers hear of."""
    replayed: bool = False
    """The stored result of an earlier command with the same request id: nothing was done (or announced) now."""


async def resolve(pool: asyncpg.Pool, case_id: str, version: int, action: str, note: str | None,
                  moderator: str, announce: Announcement | None = None,
                  labels: Sequence[str] | None = None, message: str | None = None,
                  request_id: str | None = None, premoderation: bool = False) -> Resolved:
    """Apply a resolution; returns the case, the reporters to tell and the vybe's looproom.

    ``note`` is internal (the case and the audit log); ``message`` is for the author. On an appeal
    the moderator whose action is appealed may not decide, and the decision is the appeal's outcome.
    The decision is also a label for the model (``db.learning.record_decision``): ``labels`` are the
    abuse labels the moderator says apply (None: the ones the model flagged)."""
    if action not in _STATE_AFTER:
        raise WriteError(f"unknown action {action!r}", "invalid")

    async def body(conn: asyncpg.Connection) -> Resolved:
        row, before = await _locked_case(conn, case_id, version, moderator)
        if row["state"] != "open":  # a second decision would relabel it and tell the author twice
            raise Conflict("case is resolved; reopen it to decide again")
        kind = row["target_type"]
        if kind == "user" and action in ("hide", "remove"):
            raise Forbidden("users are not hidden from the feed here; dismiss, or act on their content")
        appeal = row["appeal_statement"] is not None and row["appeal_outcome"] is None
        if appeal and row["appeal_of"] == moderator:
            raise Forbidden("you took the action under appeal: another moderator decides it")
        await learning.record_decision(conn, row, action, labels, moderator)
        looproom = None
        unshown = kind == "shared_vybe" and (row["held"] or (premoderation and before == "pending"))
        if kind in _TABLE:
            await conn.execute(
                f"UPDATE {_TABLE[kind]} SET moderation_state = $2, moderated_at = now(), moderator_note = $3, "
                "updated_at = now() WHERE id = $1::uuid", row["target_id"], _STATE_AFTER[action], note)
        privacy = None
        if kind == "shared_vybe":
            looproom, privacy = await _vybe_place(conn, row["target_id"])
        reporters = await conn.fetch(
            """UPDATE reports SET status = $3, reviewed_by = $4, reviewed_at = now(), resolution = $5,
                      action_taken = $6, updated_at = now()
                WHERE reported_type = $1 AND reported_id = $2 AND status IN ('PENDING', 'REVIEWED')
            RETURNING reporter_id""", kind, row["target_id"], _REPORT_STATUS[action], moderator, note, action)
        outcome = ("denied" if action in ("hide", "remove") else "granted") if appeal else row["appeal_outcome"]
        await conn.execute(
            """UPDATE moderation_cases SET state = 'resolved', resolution = $2, resolved_by = $3, resolved_at = now(),
                      note = $4, message = $5, appeal_outcome = $6, claimed_by = NULL, claim_expires_at = NULL,
                      held = $7, version = version + 1, updated_at = now()
                WHERE id = $1""", row["id"], action, moderator, note, message, outcome,
            unshown and action in ("hide", "remove"))
        await _audit(conn, moderator, action, row, note)
        view = (await case_views(conn, [row["id"]]))[0]
        people = [r["reporter_id"] for r in reporters if r["reporter_id"] != SYSTEM_REPORTER]
        return Resolved(view, people, looproom, unshown, privacy, before in _OUT_OF_VIEW)

    return await _once(pool, moderator, request_id, f"resolve:{case_id}", Resolved, body, announce)


_OUT_OF_VIEW = ("hidden", "removed")


async def _vybe_place(conn: asyncpg.Connection, vybe_id: str) -> tuple[str | None, str | None]:
    """A vybe's looproom and privacy level (None, None: gone)."""
    row = await conn.fetchrow("SELECT looproom_id::text AS room, privacy_level::text AS privacy FROM shared_vybes "
                              "WHERE id = $1::uuid", vybe_id)
    return (row["room"], row["privacy"]) if row else (None, None)


async def reopen(pool: asyncpg.Pool, case_id: str, version: int, moderator: str,
                 announce: Announcement | None = None, request_id: str | None = None) -> Resolved:
    """Undo a resolution: the case is open again (unclaimed, a new version), its content back under review and
    the decision no longer a label. Content the decision let be (dismiss, restore) is ``flagged`` (in view, as
    before a decision); content it took down (hide, remove) stays out of view until a moderator decides again
    (before, an undo put a removed threat back in every feed until the next decision); content never shown (a
    ``held`` case's) likewise. An appeal decided by it is undecided again. The author is not told: the content
    is simply reviewed again."""

    async def body(conn: asyncpg.Connection) -> Resolved:
        row, _ = await _locked_case(conn, case_id, version, moderator)
        if row["state"] != "resolved":
            raise Conflict("case is open already")
        kind, looproom, privacy = row["target_type"], None, None
        if kind in _TABLE:
            # Never shown (a held case): out of view still, and back to waiting for its score if it never had one
            # (the sweeper retries it; its first score decides as for any held vybe). Taken down: out of view still.
            await conn.execute(
                f"""UPDATE {_TABLE[kind]} SET updated_at = now(), moderation_state = CASE
                        WHEN $2 AND NOT EXISTS (SELECT 1 FROM moderation_scores s
                                                 WHERE s.target_type = $3 AND s.target_id = $1::uuid) THEN 'pending'
                        WHEN $2 OR moderation_state IN ('hidden', 'removed') THEN moderation_state
                        ELSE 'flagged' END
                     WHERE id = $1::uuid""",
                row["target_id"], row["held"], kind)
        if kind == "shared_vybe":
            looproom, privacy = await _vybe_place(conn, row["target_id"])
        await conn.execute("DELETE FROM moderation_labels WHERE case_id = $1", row["id"])
        await conn.execute(
            """UPDATE reports SET status = 'PENDING', updated_at = now()
                WHERE reported_type = $1 AND reported_id = $2 AND status IN ('RESOLVED', 'DISMISSED')""",
            kind, row["target_id"])
        await conn.execute(
            """UPDATE moderation_cases SET state = 'open', resolution = NULL, resolved_by = NULL, resolved_at = NULL,
                      appeal_outcome = NULL, claimed_by = NULL, claim_expires_at = NULL, version = version + 1,
                      updated_at = now()
                WHERE id = $1""", row["id"])
        await _audit(conn, moderator, "reopen", row, f"was {row['resolution']}")
        return Resolved((await case_views(conn, [row["id"]]))[0], [], looproom, unshown=row["held"],
                        privacy_level=privacy, was_hidden=False)  # nothing comes back into view

    return await _once(pool, moderator, request_id, f"reopen:{case_id}", Resolved, body, announce)


async def _once(pool: asyncpg.Pool, actor: str, request_id: str | None, operation: str, result_type: type[_T],
                body: Callable[[asyncpg.Connection], Awaitable[_T]], announce: Announcement | None) -> _T:
    """A moderation command at most once per (actor, request id) in 24 h: a retry whose first answer was lost
    (the connection dropped, or COMMIT's answer never came) gets the first result, ``replayed``, and changes
    and announces nothing, where a second run would meet a newer case version and answer ``conflict``.
    ``operation`` names the command and its target: an id reused for another case is a ``conflict``."""
    return await idempotent(pool, user_id=actor, request_id=validate.request_id(request_id), operation=operation,
                            result_type=result_type, body=body, announce=announce)


async def recently_resolved(pool: asyncpg.Pool, limit: int = 50) -> list[CaseView]:
    """Resolved cases, most recent first (to review, and to reopen)."""
    ids = await pool.fetch(
        "SELECT id FROM moderation_cases WHERE state = 'resolved' ORDER BY resolved_at DESC NULLS LAST LIMIT $1",
        limit)
    return await case_views(pool, [r["id"] for r in ids])


class PastCase(msgspec.Struct, frozen=True):
    """One earlier case about the same author."""

    case_id: uuid.UUID
    target_type: str
    target_id: str
    excerpt: str | None
    state: str
    resolution: str | None
    reasons: list[str]
    opened_at: dt.datetime
    resolved_at: dt.datetime | None


class ReporterRecord(msgspec.Struct, frozen=True):
    """How often a reporter's past reports were upheld (hidden or removed) by moderators."""

    reporter_id: str
    reports: int
    """Their reports on decided cases, this one excluded."""
    upheld: int
    accuracy: float | None


class ParentVybe(msgspec.Struct, frozen=True):
    id: uuid.UUID
    text: str
    author_id: str
    moderation_state: str
    is_anonymous: bool = False
    """Members do not see who posted it: a moderator's message to the commenter must not name its author."""


class CaseContext(msgspec.Struct, frozen=True):
    """What a moderator needs around a case: the vybe a comment answers, the author's record, and how
    reliable each reporter has been."""

    case_id: uuid.UUID
    parent: ParentVybe | None
    author_history: list[PastCase]
    reporters: list[ReporterRecord]


async def case_context(pool: asyncpg.Pool, case_id: str, history: int = 20) -> CaseContext:
    try:
        cid = uuid.UUID(case_id)
    except ValueError as err:
        raise NotFound("no such case") from err
    views = await case_views(pool, [cid])
    if not views:
        raise NotFound("no such case")
    view = views[0]
    parent = None
    if view.vybe_id is not None:
        row = await pool.fetchrow(
            f"""SELECT v.id, v.content, v.user_id, v.moderation_state::text AS s, {hides_author_sql("v")} AS anon
                  FROM shared_vybes v WHERE v.id = $1""", view.vybe_id)
        if row is not None:
            parent = ParentVybe(row["id"], row["content"], row["user_id"], row["s"], bool(row["anon"]))
    past: list[PastCase] = []
    if view.author_id is not None:
        rows = await pool.fetch(
            """SELECT c.id, c.target_type, c.target_id, coalesce(v.content, cm.content, ai.content) AS text, c.state,
                      c.resolution,
                      c.reasons, c.opened_at, c.resolved_at
                 FROM moderation_cases c
                 LEFT JOIN shared_vybes v ON v.id = (CASE WHEN c.target_type = 'shared_vybe' THEN c.target_id::uuid END)
                 LEFT JOIN comments cm ON cm.id = (CASE WHEN c.target_type = 'comment' THEN c.target_id::uuid END)
                 LEFT JOIN app_items ai ON ai.id = (CASE WHEN c.target_type = 'app_item' THEN c.target_id::uuid END)
                WHERE c.id <> $1 AND coalesce(v.user_id, cm.user_id, ai.user_id, CASE WHEN c.target_type = 'user'
                                                                                     THEN c.target_id END) = $2
                ORDER BY c.opened_at DESC LIMIT $3""", cid, view.author_id, history)
        past = [PastCase(r["id"], r["target_type"], r["target_id"], excerpt(r["text"], 120), r["state"],
                         r["resolution"], list(r["reasons"]), r["opened_at"], r["resolved_at"]) for r in rows]
    people = [r.reporter_id for r in view.reporters if r.reporter_id != SYSTEM_REPORTER]
    records = await pool.fetch(
        """SELECT r.reporter_id, count(*) AS n, count(*) FILTER (WHERE c.resolution IN ('hide', 'remove')) AS upheld
             FROM reports r JOIN moderation_cases c ON c.target_type = r.reported_type AND c.target_id = r.reported_id
            WHERE r.reporter_id = ANY($1::text[]) AND c.state = 'resolved' AND c.id <> $2
            GROUP BY r.reporter_id""", people, cid)
    by_id = {r["reporter_id"]: (r["n"], r["upheld"]) for r in records}
    reporters = [ReporterRecord(p, by_id.get(p, (0, 0))[0], by_id.get(p, (0, 0))[1],
                                round(by_id[p][1] / by_id[p][0], 4) if by_id.get(p, (0, 0))[0] else None)
                 for p in people]
    return CaseContext(cid, parent, past, reporters)


class AppealView(msgspec.Struct, frozen=True):
    """What the author sees of their appeal."""

    target_type: str
    target_id: str
    state: str
    """``open`` until a moderator decides; the outcome comes as ``moderation.outcome`` with ``appeal``."""
    appealed_at: dt.datetime
    replayed: bool = False
    """True when this is the stored answer to an earlier appeal with the same id."""


class Appealed(msgspec.Struct, frozen=True):
    appeal: AppealView
    case: CaseView
    replayed: bool = False


_CONTENT_OF: dict[str, LiteralString] = {
    "shared_vybe": "SELECT user_id, moderation_state::text AS state FROM shared_vybes WHERE id = $1",
    "comment": "SELECT user_id, moderation_state::text AS state FROM comments WHERE id = $1",
}


async def appeal(pool: asyncpg.Pool, user_id: str, target_type: str, target_id: str, statement: str,
                 announce: Announcement | None = None, request_id: str | None = None) -> Appealed:
    """The author appeals the hiding or removal of their vybe or comment, once: the case reopens as an
    appeal (unclaimed, a new version) for a moderator other than the one who acted."""
    kind = target_type.lower()
    try:
        tid = uuid.UUID(target_id)
    except ValueError as err:
        raise NotFound("no such vybe or comment of yours") from err
    if kind not in _CONTENT_OF:
        raise WriteError("only a vybe or a comment can be appealed", "invalid_value")

    async def body(conn: asyncpg.Connection) -> Appealed:
        await lock_target(conn, kind, str(tid))
        content = await conn.fetchrow(_CONTENT_OF[kind], tid)
        if content is None or content["user_id"] != user_id:
            raise NotFound("no such vybe or comment of yours")
        if content["state"] not in ("hidden", "removed"):
            raise WriteError(f"only hidden or removed content can be appealed (this is {content['state']})",
                             "invalid_value")
        case = await conn.fetchrow(
            "SELECT * FROM moderation_cases WHERE target_type = $1 AND target_id = $2 FOR UPDATE", kind, str(tid))
        if case is None:  # hidden before cases existed: give the appeal one
            await open_case(conn, kind, str(tid), [], None)
            case = await conn.fetchrow(
                "SELECT * FROM moderation_cases WHERE target_type = $1 AND target_id = $2 FOR UPDATE", kind, str(tid))
        if case["appeal_statement"] is not None:
            raise Conflict("this has been appealed once already")
        appeal_of = case["resolved_by"] if case["state"] == "resolved" else None
        appealed_at = await conn.fetchval(
            """UPDATE moderation_cases SET state = 'open', appeal_statement = $2, appealed_at = now(), appeal_of = $3,
                      claimed_by = NULL, claim_expires_at = NULL, version = version + 1, updated_at = now()
                WHERE id = $1 RETURNING appealed_at""", case["id"], statement, appeal_of)
        await _audit(conn, user_id, "appeal", case, statement)
        view = (await case_views(conn, [case["id"]]))[0]
        return Appealed(AppealView(kind, str(tid), "open", appealed_at), view)

    return await _once(pool, user_id, request_id, f"appeal:{kind}:{tid}", Appealed, body, announce)


class Moderated(msgspec.Struct, frozen=True):
    """One of your vybes or comments that moderation took out of view, and what you may do about it."""

    target_type: str
    """``shared_vybe`` or ``comment``."""
    target_id: str
    vybe_id: str | None
    """A comment's vybe (null for a vybe)."""
    state: str
    """``hidden`` or ``removed``."""
    excerpt: str | None
    """The start of its text, to name it."""
    by: str
    """``moderator`` (a moderator's hide or remove stands), or ``model`` (hidden by the model's score, or waiting
    for a moderator to decide again)."""
    message: str | None
    """What the deciding moderator chose to tell you (the internal note is never shown); null under ``model``."""
    appeal: str | None
    """Null: not appealed; ``open``: waiting for a moderator; ``denied``; ``granted`` (the content came back, and
    was taken down again since: you may not appeal twice)."""
    appealable: bool
    """You may still ``appeal`` it (once per item)."""
    decided_at: dt.datetime


_MODERATED: LiteralString = """
SELECT t.target_type, t.id, t.vybe_id, t.state, t.content,
       c.state = 'resolved' AND c.resolution IN ('hide', 'remove') AS decided, c.message, c.appeal_statement,
       c.appeal_outcome, coalesce(CASE WHEN c.state = 'resolved' THEN c.resolved_at END, t.moderated_at, t.updated_at)
           AS decided_at
  FROM (SELECT 'shared_vybe' AS target_type, id, NULL::uuid AS vybe_id, moderation_state::text AS state, content,
               moderated_at, updated_at
          FROM shared_vybes WHERE user_id = $1 AND moderation_state IN ('hidden', 'removed')
        UNION ALL
        SELECT 'comment', id, shared_vybe_id, moderation_state::text, content, moderated_at, updated_at
          FROM comments WHERE user_id = $1 AND moderation_state IN ('hidden', 'removed')) t
  LEFT JOIN moderation_cases c ON c.target_type = t.target_type AND c.target_id = t.id::text
 ORDER BY decided_at DESC, t.id
 LIMIT $2
"""


async def moderated_of(pool: asyncpg.Pool, user_id: str, limit: int = 100) -> list[Moderated]:
    """``user_id``'s own vybes and comments that are hidden or removed, newest decision first: what a client that
    was away when ``moderation.outcome`` came (or speaks REST only) shows and offers to appeal."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(_MODERATED, user_id, limit)
    return [Moderated(
        target_type=r["target_type"], target_id=str(r["id"]),
        vybe_id=None if r["vybe_id"] is None else str(r["vybe_id"]), state=r["state"], excerpt=excerpt(r["content"]),
        by="moderator" if r["decided"] else "model", message=r["message"] if r["decided"] else None,
        appeal=None if r["appeal_statement"] is None else (r["appeal_outcome"] or "open"),
        appealable=r["appeal_statement"] is None, decided_at=r["decided_at"]) for r in rows]


async def _audit(conn: asyncpg.Connection, actor: str, action: str, case: asyncpg.Record, note: str | None) -> None:
    await conn.execute(
        """INSERT INTO moderation_audit (actor_id, action, case_id, target_type, target_id, note, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        actor, action, case["id"], case["target_type"], case["target_id"], note, {"version_seen": case["version"]})


async def unscored(pool: asyncpg.Pool, older_than_s: float, limit: int = 500) -> list[tuple[str, uuid.UUID]]:
    """Items still pending after ``older_than_s`` with no score (the sweeper re-enqueues them), except those whose
    job was dead-lettered and whose retry is not due (:func:`record_failure`)."""
    rows = await pool.fetch(
        """SELECT 'vybe' AS kind, id FROM shared_vybes v
            WHERE moderation_state = 'pending' AND created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM moderation_scores s
                               WHERE s.target_type = 'shared_vybe' AND s.target_id = v.id)
              AND NOT EXISTS (SELECT 1 FROM moderation_failures f
                               WHERE f.kind = 'vybe' AND f.item_id = v.id AND f.retry_after > now())
           UNION ALL
           SELECT 'comment', id FROM comments c
            WHERE moderation_state = 'pending' AND created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM moderation_scores s WHERE s.target_type = 'comment' AND s.target_id = c.id)
              AND NOT EXISTS (SELECT 1 FROM moderation_failures f
                               WHERE f.kind = 'comment' AND f.item_id = c.id AND f.retry_after > now())
           UNION ALL
           SELECT 'app_item', id FROM app_items a
            WHERE moderation_state = 'pending' AND created_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM moderation_scores s
                               WHERE s.target_type = 'app_item' AND s.target_id = a.id)
              AND NOT EXISTS (SELECT 1 FROM moderation_failures f
                               WHERE f.kind = 'app_item' AND f.item_id = a.id AND f.retry_after > now())
           LIMIT $2""", older_than_s, limit)
    return [(r["kind"], r["id"]) for r in rows]


UNSCORED_CASE_ROUNDS = 2
"""Rounds of failed attempts (at least :data:`workers.consumer.RETRY_FIRST_S` apart) after which an item the model
cannot score goes to moderators, if the model has scored other items since this one first failed. One round may be
an outage; two, ten minutes apart, while other posts are scored, are this item."""
_TARGET_OF_JOB = {"vybe": "shared_vybe", "comment": "comment", "app_item": "app_item"}


async def record_failure(pool: asyncpg.Pool, kind: str, item_id: uuid.UUID, error: str, first_s: float,
                         longest_s: float, announce: Announcement | None = None) -> uuid.UUID | None:
    """A job was dead-lettered: the sweeper leaves its item alone for ``first_s``, twice as long after each further
    round, never longer than ``longest_s``. A round is counted once: the sweeper may have enqueued the item more
    than once before the first of its jobs ran out of attempts, and those later dead letters only note the error.

    After :data:`UNSCORED_CASE_ROUNDS` rounds, an item that still has no score and is still ``pending`` gets a case
    with the reason :data:`UNSCORED`, once, if the model has scored anything since the item first failed: otherwise
    content the model cannot score (a poison text, a model that fails on some texts) would stay unmoderated, and
    under premoderation held back, with nobody told. A model that scores nothing (an outage) opens no cases: its
    items are scored when it is back, and the backlog gauges show the outage. The content state is left as it is
    (a moderator's decision moves it); the sweeper keeps retrying it meanwhile. Returns that case, to announce."""
    target = _TARGET_OF_JOB.get(kind)

    async def body(conn: asyncpg.Connection) -> uuid.UUID | None:
        if target is not None:  # the target before anything of its case: the one lock order
            await lock_target(conn, target, str(item_id))
        failure = await conn.fetchrow(
            """INSERT INTO moderation_failures AS f (kind, item_id, last_error, retry_after)
               VALUES ($1, $2, $3, now() + make_interval(secs => $4))
               ON CONFLICT (kind, item_id) DO UPDATE SET
                 last_error = EXCLUDED.last_error,
                 failures = CASE WHEN f.retry_after <= now() THEN f.failures + 1 ELSE f.failures END,
                 retry_after = CASE WHEN f.retry_after <= now()
                                    THEN now() + make_interval(secs => least($5, $4 * 2 ^ least(f.failures, 20)))
                                    ELSE f.retry_after END
               RETURNING failures, first_failed_at""",
            kind, item_id, error[:500], first_s, longest_s)
        if target is None or failure["failures"] < UNSCORED_CASE_ROUNDS:
            return None
        eligible = await conn.fetchval(
            f"""SELECT NOT EXISTS (SELECT 1 FROM moderation_scores s WHERE s.target_type = $1 AND s.target_id = $2)
                   AND NOT EXISTS (SELECT 1 FROM moderation_cases c WHERE c.target_type = $1
                                      AND c.target_id = $2::text AND c.state = 'open' AND $3 = ANY(c.reasons))
                   -- the newest score (by the primary key, one index probe) came after this item first failed
                   AND coalesce((SELECT created_at FROM moderation_scores ORDER BY id DESC LIMIT 1) > $4, false)
                  FROM {_TABLE[target]} WHERE id = $2 AND moderation_state = 'pending'""",
            target, item_id, UNSCORED, failure["first_failed_at"])
        if not eligible:
            return None
        return await open_case(conn, target, str(item_id), [UNSCORED], None)

    case: uuid.UUID | None = await in_transaction(pool, body, announce)
    return case


FAILURES_KEPT_S = 7 * 86_400.0
"""A failure record whose retry has been due this long is deleted by the sweeper (:func:`prune_failures`)."""


async def prune_failures(conn: asyncpg.Connection | asyncpg.Pool, kept_s: float = FAILURES_KEPT_S) -> int:
    """Delete failure records whose retry has been due for ``kept_s``: their items are no longer retried (deleted,
    decided by a moderator, or out of a rescoring pass's reach), since the sweeper retries a pending item within a
    sweep of its retry coming due and each failure moves ``retry_after`` on. Returns how many went."""
    deleted: str = await conn.execute(
        "DELETE FROM moderation_failures WHERE retry_after < now() - make_interval(secs => $1)", kept_s)
    return int(deleted.split()[-1])


async def forget_failures(conn: asyncpg.Connection, kinds: Sequence[str], item_ids: Sequence[uuid.UUID]) -> None:
    """Scored at last (``kinds`` are job kinds): the items' failure records go (the table holds failing items
    only). One statement a batch, by primary key; usually it finds nothing."""
    await conn.execute(
        """DELETE FROM moderation_failures f USING unnest($1::text[], $2::uuid[]) AS done (kind, item_id)
            WHERE f.kind = done.kind AND f.item_id = done.item_id""", list(kinds), list(item_ids))


def as_dict(value: Any) -> Any:
    return msgspec.to_builtins(value)

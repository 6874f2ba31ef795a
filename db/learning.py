"""What the model learns from: moderators' decisions as labels, the models trained from them, and
the care route's cases.

- **Decisions.** Every resolution writes one ``moderation_labels`` row in the resolution's
  transaction: the text as decided, whether it is harmful (hide/remove) or fine (dismiss/restore),
  the labels that apply, and what the model had said (except a decision on content no model could
  score). :func:`label_stats` turns them into
  per-label precision and recall; ``moderation.retrain`` into training rows.
- **Models.** ``moderation_models`` holds every trained bundle with its report; at most one is
  ``active`` (none: the heads shipped in the package). Workers poll :func:`active_version` and load
  a new one without a restart. Promotion remembers the version it replaced, so rollback is exact.
- **Care.** A self-harm disclosure opens a ``care_cases`` row, apart from the abuse queue.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from common.labels import LABELS, UNSCORED
from common.visibility import hides_author_sql
from db.writes import validate
from db.writes._tx import idempotent, in_transaction
from db.writes.errors import Conflict, NotFound
from db.writes.feed import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import LiteralString

    from db.outbox import Announcement

CARE_CLAIMED = "VY409"
"""SQLSTATE of the database's refusal to close a care case under another moderator's live claim (migration 0011)."""
HARMFUL = frozenset({"hide", "remove"})
# When a member report found what the model missed and the moderator named no label, the report's
# type says which label applies.
_LABEL_OF_REPORT = {"SAFETY_CONCERN": "threat", "HARASSMENT": "insult", "SPAM": None,
                    "INAPPROPRIATE_CONTENT": None, "OTHER": None}


def model_labels(reasons: Sequence[str]) -> list[str]:
    """The labels a model flagged, from a case's reasons (``label>=threshold (score)``; member
    reports read ``reports>=n (m)`` and are not the model's)."""
    out = []
    for r in reasons:
        label = r.split(">=", 1)[0]
        if label in LABELS and label not in out:
            out.append(label)
    return out


async def record_decision(conn: asyncpg.Connection, case: asyncpg.Record, action: str, labels: Sequence[str] | None,
                          moderator: str) -> None:
    """In the resolution's transaction: the decision on ``case`` (its row, before the update) as a label.

    ``labels`` are the moderator's (None: the model's flagged labels, else the member reports' types;
    a harmful text always has ``toxicity``, which means "harmful" in this label set). User cases
    carry no text and teach nothing."""
    kind = case["target_type"]
    table = {"shared_vybe": "shared_vybes", "comment": "comments", "app_item": "app_items"}.get(kind)
    if table is None:
        return
    text = await conn.fetchval(f"SELECT content FROM {table} WHERE id = $1::uuid", case["target_id"])
    if text is None:
        return
    version = await conn.fetchval(
        """SELECT model_version FROM moderation_scores WHERE target_type = $1 AND target_id = $2::uuid
            ORDER BY created_at DESC LIMIT 1""", kind, case["target_id"])
    if version is None and UNSCORED in case["reasons"]:
        # Content no model could score: the decision says nothing of the model's flags (it would count as a
        # miss), and retraining, which scores its held-out decisions with the model, would fail on the text too.
        await conn.execute("DELETE FROM moderation_labels WHERE case_id = $1", case["id"])
        return
    flagged = model_labels(case["reasons"])
    harmful = action in HARMFUL
    chosen: list[str] = []
    if harmful:
        if labels is not None:  # the moderator's word, even an empty list ("harmful, no finer label")
            chosen = list(labels)
        else:
            chosen = list(flagged) or await _report_labels(conn, kind, case["target_id"])
        if "toxicity" not in chosen:
            chosen.insert(0, "toxicity")
    await conn.execute(
        """INSERT INTO moderation_labels (case_id, target_type, target_id, text, harmful, labels, model_labels,
                                          model_version, decided_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (case_id) DO UPDATE
              SET text = EXCLUDED.text, harmful = EXCLUDED.harmful, labels = EXCLUDED.labels,
                  model_labels = EXCLUDED.model_labels, model_version = EXCLUDED.model_version,
                  decided_by = EXCLUDED.decided_by, decided_at = now()""",
        case["id"], kind, case["target_id"], text, harmful, chosen, flagged, version, moderator)


async def _report_labels(conn: asyncpg.Connection, kind: str, target_id: str) -> list[str]:
    types = await conn.fetch(
        "SELECT DISTINCT type::text AS t FROM reports WHERE reported_type = $1 AND reported_id = $2", kind, target_id)
    return sorted({lab for r in types if (lab := _LABEL_OF_REPORT.get(r["t"]))})


class LabelRow(msgspec.Struct, frozen=True):
    case_id: uuid.UUID
    text: str
    harmful: bool
    labels: list[str]
    model_labels: list[str]
    decided_at: dt.datetime
    care: bool = False
    """Content found fine that also has a care case: a self-harm disclosure the abuse flags got wrong."""


async def decisions(conn: asyncpg.Connection | asyncpg.Pool, since: dt.datetime | None = None) -> list[LabelRow]:
    """Every decision (since ``since``), oldest first."""
    rows = await conn.fetch(
        """SELECT l.case_id, l.text, l.harmful, l.labels, l.model_labels, l.decided_at,
                  NOT l.harmful AND EXISTS (SELECT 1 FROM care_cases k WHERE k.target_type = l.target_type
                                                AND k.target_id::text = l.target_id) AS care
             FROM moderation_labels l
            WHERE $1::timestamptz IS NULL OR l.decided_at >= $1 ORDER BY l.decided_at, l.case_id""", since)
    return [LabelRow(r["case_id"], r["text"], r["harmful"], list(r["labels"]), list(r["model_labels"]),
                     r["decided_at"], r["care"]) for r in rows]


class LabelStats(msgspec.Struct, frozen=True):
    """How right the model's flags were, by moderators' decisions (one label, or ``any``)."""

    label: str
    flagged: int
    """Decided cases where the model flagged this label."""
    confirmed: int
    """... of which moderators confirmed the label (precision = confirmed / flagged)."""
    harmful: int
    """Decided cases where moderators found this label (flagged or missed by the model)."""
    caught: int
    """... of which the model had flagged it (recall = caught / harmful)."""
    precision: float | None
    recall: float | None


class Stats(msgspec.Struct, frozen=True):
    window_s: float
    decisions: int
    labels: list[LabelStats]
    """``any`` first (a model flag of any label, against harmful content), then each label."""


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


async def label_stats(conn: asyncpg.Connection | asyncpg.Pool, window_s: float) -> Stats:
    """Per-label precision and recall of the model's flags over the last ``window_s`` seconds.

    Recall counts only what reached a moderator (flagged by the model or reported by members):
    harm nobody reported is invisible here."""
    rows = await conn.fetch(
        """SELECT harmful, labels, model_labels FROM moderation_labels
            WHERE decided_at >= now() - make_interval(secs => $1)""", window_s)
    out = [_stat("any", [(bool(r["model_labels"]), r["harmful"]) for r in rows])]
    for lab in LABELS:
        out.append(_stat(lab, [(lab in r["model_labels"], r["harmful"] and lab in r["labels"]) for r in rows]))
    return Stats(window_s, len(rows), out)


def _stat(label: str, pairs: list[tuple[bool, bool]]) -> LabelStats:
    flagged = sum(1 for f, _ in pairs if f)
    confirmed = sum(1 for f, h in pairs if f and h)
    harmful = sum(1 for _, h in pairs if h)
    return LabelStats(label, flagged, confirmed, harmful, confirmed, _ratio(confirmed, flagged),
                      _ratio(confirmed, harmful))


# --- models -------------------------------------------------------------------------------------

class ModelRow(msgspec.Struct, frozen=True):
    version: str
    kind: str
    state: str
    previous: str | None
    created_at: dt.datetime
    promoted_at: dt.datetime | None
    report: dict[str, Any]


_MODEL_COLUMNS: LiteralString = "version, kind, state, previous, created_at, promoted_at, report"


def _model(r: asyncpg.Record) -> ModelRow:
    return ModelRow(r["version"], r["kind"], r["state"], r["previous"], r["created_at"], r["promoted_at"],
                    r["report"])


async def active_version(conn: asyncpg.Connection | asyncpg.Pool) -> str | None:
    """The active model's version (None: the shipped heads); one indexed lookup, polled by workers."""
    version: str | None = await conn.fetchval("SELECT version FROM moderation_models WHERE state = 'active'")
    return version


async def load_bundle(conn: asyncpg.Connection | asyncpg.Pool, version: str) -> tuple[str, dict[str, Any]]:
    """A stored model's scorer kind and bundle."""
    row = await conn.fetchrow("SELECT kind, bundle FROM moderation_models WHERE version = $1", version)
    if row is None:
        raise NotFound(f"no model {version!r}")
    return row["kind"], row["bundle"]


async def save_model(pool: asyncpg.Pool, version: str, kind: str, bundle: dict[str, Any],
                     report: dict[str, Any], *, promote: bool) -> ModelRow:
    """Store a trained model; with ``promote``, make it the active one in the same transaction."""

    async def body(conn: asyncpg.Connection) -> ModelRow:
        await conn.execute(
            "INSERT INTO moderation_models (version, kind, bundle, report, state) VALUES ($1, $2, $3, $4, $5)",
            version, kind, bundle, report, "candidate" if promote else "rejected")
        if promote:
            await _activate(conn, version)
        return await _model_row(conn, version)

    return await in_transaction(pool, body)


async def _activate(conn: asyncpg.Connection, version: str) -> None:
    await conn.execute("LOCK TABLE moderation_models IN SHARE ROW EXCLUSIVE MODE")  # one promotion at a time
    current = await conn.fetchval("SELECT version FROM moderation_models WHERE state = 'active'")
    await conn.execute("UPDATE moderation_models SET state = 'retired' WHERE state = 'active'")
    await conn.execute(
        "UPDATE moderation_models SET state = 'active', previous = $2, promoted_at = now() WHERE version = $1",
        version, current)


async def _model_row(conn: asyncpg.Connection, version: str) -> ModelRow:
    row = await conn.fetchrow(f"SELECT {_MODEL_COLUMNS} FROM moderation_models WHERE version = $1", version)
    if row is None:
        raise NotFound(f"no model {version!r}")
    return _model(row)


async def promote(pool: asyncpg.Pool, version: str) -> ModelRow:
    """Make a stored model active (an operator's override of retrain's judgement)."""

    async def body(conn: asyncpg.Connection) -> ModelRow:
        row = await _model_row(conn, version)
        if row.state == "active":
            raise Conflict(f"model {version} is already active")
        await _activate(conn, version)
        return await _model_row(conn, version)

    return await in_transaction(pool, body)


async def rollback(pool: asyncpg.Pool) -> tuple[str, str | None]:
    """Return to the model the active one replaced (None: the shipped heads); (from, to)."""

    async def body(conn: asyncpg.Connection) -> tuple[str, str | None]:
        await conn.execute("LOCK TABLE moderation_models IN SHARE ROW EXCLUSIVE MODE")
        row = await conn.fetchrow("SELECT version, previous FROM moderation_models WHERE state = 'active'")
        if row is None:
            raise Conflict("no model is active: the shipped heads are in use, there is nothing to roll back")
        await conn.execute("UPDATE moderation_models SET state = 'rolled_back' WHERE version = $1", row["version"])
        if row["previous"] is not None:
            # Back to what it replaced, keeping that model's own `previous` (a second rollback goes further).
            await conn.execute("UPDATE moderation_models SET state = 'active', promoted_at = now() WHERE version = $1",
                               row["previous"])
        return row["version"], row["previous"]

    return await in_transaction(pool, body)


async def list_models(conn: asyncpg.Connection | asyncpg.Pool) -> list[ModelRow]:
    rows = await conn.fetch(f"SELECT {_MODEL_COLUMNS} FROM moderation_models ORDER BY created_at DESC")
    return [_model(r) for r in rows]


# --- rescoring after a promotion ----------------------------------------------------------------

async def rescore_candidates(conn: asyncpg.Connection | asyncpg.Pool, model: tuple[str, str], window_s: float,
                             limit: int) -> list[tuple[str, uuid.UUID]]:
    """Items the model ``(name, version)`` has not scored yet among those worth rescoring: every open
    case's content, and whatever was scored within ``window_s`` and is still visible or flagged; not those whose
    job was dead-lettered until their retry is due (``moderation.record_failure``; a pass that finds nothing else
    ends the rescoring, and such an item keeps the previous model's score)."""
    rows = await conn.fetch(
        """WITH wanted AS (
               SELECT c.target_type, c.target_id::uuid AS target_id FROM moderation_cases c
                WHERE c.state = 'open' AND c.target_type IN ('shared_vybe', 'comment')
               UNION
               SELECT s.target_type, s.target_id FROM moderation_scores s
                WHERE s.created_at >= now() - make_interval(secs => $3))
           SELECT w.target_type, w.target_id FROM wanted w
            WHERE NOT EXISTS (SELECT 1 FROM moderation_scores s
                               WHERE s.target_type = w.target_type AND s.target_id = w.target_id
                                 AND s.model_name = $1 AND s.model_version = $2)
              AND NOT EXISTS (SELECT 1 FROM moderation_cases c  -- a moderator's decision stands
                               WHERE c.target_type = w.target_type AND c.target_id = w.target_id::text
                                 AND c.state = 'resolved')
              AND NOT EXISTS (SELECT 1 FROM moderation_failures f  -- dead-lettered, its retry not due
                               WHERE f.kind = CASE w.target_type WHEN 'shared_vybe' THEN 'vybe' ELSE 'comment' END
                                 AND f.item_id = w.target_id AND f.retry_after > now())
              AND EXISTS (SELECT 1 FROM shared_vybes v WHERE w.target_type = 'shared_vybe' AND v.id = w.target_id
                             AND v.moderation_state IN ('pending', 'approved', 'flagged')
                          UNION ALL
                          SELECT 1 FROM comments c WHERE w.target_type = 'comment' AND c.id = w.target_id
                             AND c.moderation_state IN ('pending', 'approved', 'flagged'))
            LIMIT $4""", model[0], model[1], window_s, limit)
    return [("vybe" if r["target_type"] == "shared_vybe" else "comment", r["target_id"]) for r in rows]


async def mark_cleared(conn: asyncpg.Connection, kind: str, target_id: uuid.UUID, version: str) -> uuid.UUID | None:
    """A newer model scores an open case's content below every threshold: say so on the case (a new
    version, so consoles reload it). The case stays open: only a moderator dismisses. The same for a case
    opened because no model could score its content (``UNSCORED``; its view shows the new scores)."""
    case_id: uuid.UUID | None = await conn.fetchval(
        """UPDATE moderation_cases SET model_cleared_by = $3, version = version + 1, updated_at = now()
            WHERE target_type = $1 AND target_id = $2 AND state = 'open' AND (model_flagged OR $4 = ANY(reasons))
              AND model_cleared_by IS DISTINCT FROM $3
        RETURNING id""", kind, str(target_id), version, UNSCORED)
    return case_id


async def mark_scored(conn: asyncpg.Connection, kind: str, target_id: uuid.UUID) -> uuid.UUID | None:
    """A score that opens or changes no case (shadow mode records scores only) for content whose open case says no
    model could score it (``UNSCORED``): that case's view now shows this score, so it gets a new version (consoles
    reload it), and an older model's "no longer flags this" (``model_cleared_by``) goes, as this score is over a
    threshold. Returns the case, if any."""
    case_id: uuid.UUID | None = await conn.fetchval(
        """UPDATE moderation_cases SET version = version + 1, updated_at = now(), model_cleared_by = NULL
            WHERE target_type = $1 AND target_id = $2 AND state = 'open' AND $3 = ANY(reasons) AND scores IS NULL
        RETURNING id""", kind, str(target_id), UNSCORED)
    return case_id


# --- care ---------------------------------------------------------------------------------------

class CareCase(msgspec.Struct, frozen=True):
    """A self-harm disclosure waiting for someone who can reach out."""

    care_id: uuid.UUID
    version: int
    state: str
    target_type: str
    target_id: str
    author_id: str
    text: str | None
    score: float
    opened_at: dt.datetime
    vybe_id: uuid.UUID | None = None
    closed_by: str | None = None
    note: str | None = None
    is_anonymous: bool = False
    """Posted anonymously: members do not know who wrote it. Reach out privately, never in a way that shows others
    who the author is."""
    claimed_by: str | None = None
    """The moderator reaching out (``POST /api/mod/care/{care_id}/claim``), until ``claim_expires_at``: others
    leave the member to them, and may not close the case meanwhile."""
    claim_expires_at: dt.datetime | None = None
    cursor: str = ""
    """This case's place in the care queue: ``GET /api/mod/care?after=<cursor>`` of a page's last case gives the
    next page."""


class CareAck(CareCase, frozen=True):
    """The answer to closing a care case: the case after it."""

    replayed: bool = False
    """True when this is the stored answer to an earlier close with the same id (applied once, 24 h)."""


class Closed(msgspec.Struct, frozen=True):
    care: CareCase
    replayed: bool = False


_CARE: LiteralString = f"""
SELECT k.*, coalesce(v.content, cm.content, ai.content) AS text, cm.shared_vybe_id AS vybe_id,
       coalesce({hides_author_sql("v")}, cm.is_anonymous, false) AS is_anonymous
  FROM care_cases k
  LEFT JOIN shared_vybes v ON k.target_type = 'shared_vybe' AND v.id = k.target_id
  LEFT JOIN comments cm ON k.target_type = 'comment' AND cm.id = k.target_id
  LEFT JOIN app_items ai ON k.target_type = 'app_item' AND ai.id = k.target_id
"""


def _care(r: asyncpg.Record) -> CareCase:
    return CareCase(r["id"], r["version"], r["state"], r["target_type"], str(r["target_id"]), r["author_id"],
                    r["text"], round(float(r["score"]), 4), r["opened_at"], r["vybe_id"], r["closed_by"], r["note"],
                    r["is_anonymous"], r["claimed_by"], r["claim_expires_at"], encode_cursor(r["opened_at"], r["id"]))


async def open_care(conn: asyncpg.Connection, kind: str, target_id: uuid.UUID, author_id: str, score: float,
                    model_version: str) -> CareCase | None:
    """Open the care case of a disclosure (None: one is already there; the author was told once)."""
    care_id = await conn.fetchval(
        """INSERT INTO care_cases (target_type, target_id, author_id, score, model_version)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT ON CONSTRAINT care_cases_one_per_target DO NOTHING
           RETURNING id""", kind, target_id, author_id, score, model_version)
    if care_id is None:
        return None
    return _care(await conn.fetchrow(_CARE + " WHERE k.id = $1", care_id))


async def care_queue(conn: asyncpg.Connection | asyncpg.Pool, limit: int = 100,
                     after: str | None = None) -> list[CareCase]:
    """Open care cases, oldest first; ``after``: the ``cursor`` of the last case of the page before (keyset
    paging, as the moderator queue's); one that no page gave is :class:`Invalid` (``invalid_cursor``)."""
    opened, last = decode_cursor(after)
    rows = await conn.fetch(
        _CARE + """ WHERE k.state = 'open'
                      AND ($2::timestamptz IS NULL OR (k.opened_at, k.id) > ($2::timestamptz, $3::uuid))
                    ORDER BY k.opened_at, k.id LIMIT $1""", limit, opened, last)
    return [_care(r) for r in rows]


async def close_care(pool: asyncpg.Pool, care_id: str, version: int, moderator: str, note: str | None,
                     announce: Announcement | None = None, request_id: str | None = None) -> Closed:
    """Close a care case (someone reached out, or nothing more to do); audited like a resolution. With
    ``request_id`` a retry returns the first result, ``replayed``, as the moderation commands do."""
    cid = _care_uuid(care_id)

    async def body(conn: asyncpg.Connection) -> Closed:
        row = await _locked_care(conn, cid, version, moderator)
        try:
            await conn.execute(
                """UPDATE care_cases SET state = 'closed', closed_by = $2, closed_at = now(), note = $3,
                          claimed_by = NULL, claim_expires_at = NULL, version = version + 1 WHERE id = $1""",
                cid, moderator, note)
        except asyncpg.PostgresError as err:
            # The database's own guard (migration 0011); the check above holds the row, so only a claim that
            # _locked_care let through by mistake gets here: a conflict, never a close over it.
            if err.sqlstate == CARE_CLAIMED:
                raise Conflict(f"{row['claimed_by']} is reaching out") from err
            raise
        return await _audit_care(conn, moderator, "care.close", row, note, version)

    return await idempotent(pool, user_id=moderator, request_id=validate.request_id(request_id),
                            operation=f"care.close:{cid}", result_type=Closed, body=body, announce=announce)


def _care_uuid(care_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(care_id)
    except ValueError as err:
        raise NotFound("no such care case") from err


async def _audit_care(conn: asyncpg.Connection, moderator: str, action: str, row: asyncpg.Record,
                      note: str | None, version: int) -> Closed:
    """The care case's audit row, then the case as it is now."""
    await conn.execute(
        """INSERT INTO moderation_audit (actor_id, action, target_type, target_id, note, detail)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        moderator, action, row["target_type"], str(row["target_id"]), note,
        {"care_id": str(row["id"]), "version_seen": version})
    return Closed(_care(await conn.fetchrow(_CARE + " WHERE k.id = $1", row["id"])))


async def _locked_care(conn: asyncpg.Connection, cid: uuid.UUID, version: int, moderator: str) -> asyncpg.Record:
    """The open care case, locked, as ``moderator`` last saw it and not held by another moderator's claim."""
    # The claim's lapse is judged by the database's clock, the one that set it (a gateway's may drift).
    row = await conn.fetchrow("SELECT *, claim_expires_at > now() AS claim_live FROM care_cases"
                              " WHERE id = $1 FOR UPDATE", cid)
    if row is None:
        raise NotFound("no such care case")
    if row["version"] != version:
        raise Conflict(f"care case changed (now version {row['version']}); reload it")
    if row["state"] != "open":
        raise Conflict("care case is closed")
    held = row["claimed_by"]
    if held and held != moderator and row["claim_live"]:
        raise Conflict(f"{held} is reaching out (claimed until {row['claim_expires_at'].isoformat()})")
    return row


async def claim_care(pool: asyncpg.Pool, care_id: str, version: int, moderator: str, lease_s: float,
                     release: bool = False, announce: Announcement | None = None,
                     request_id: str | None = None) -> Closed:
    """Say "I am reaching out" on a care case for ``lease_s`` seconds (or let it go), so that no second moderator
    contacts the member meanwhile; a stale claim simply lapses. Audited, and idempotent by ``request_id``, as
    :func:`close_care`."""
    cid = _care_uuid(care_id)

    async def body(conn: asyncpg.Connection) -> Closed:
        row = await _locked_care(conn, cid, version, moderator)
        if release and not (row["claimed_by"] and row["claim_live"]):
            # Nobody holds it (a lapsed claim holds nothing): nothing changes, and nobody's version goes stale.
            return Closed(_care(await conn.fetchrow(_CARE + " WHERE k.id = $1", cid)))
        await conn.execute(
            """UPDATE care_cases SET claimed_by = $2, version = version + 1,
                      claim_expires_at = CASE WHEN $2::text IS NULL THEN NULL
                                              ELSE now() + make_interval(secs => $3) END
                WHERE id = $1""", cid, None if release else moderator, lease_s)
        return await _audit_care(conn, moderator, "care.release" if release else "care.claim", row, None, version)

    return await idempotent(pool, user_id=moderator, request_id=validate.request_id(request_id),
                            operation=f"care.{'release' if release else 'claim'}:{cid}", result_type=Closed,
                            body=body, announce=announce)

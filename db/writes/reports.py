"""User reports: one per reporter and target; report_count (distinct reporters) moves by trigger."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from db.writes import validate
from db.writes._tx import fk_missing, idempotent
from db.writes.errors import NotFound
from db.writes.locks import lock_target
from db.writes.types import REPORT_TARGETS, REPORT_TYPES, ReportResult

if TYPE_CHECKING:
    import uuid
    from typing import LiteralString

    from db.outbox import Announcement

_COUNT: dict[str, LiteralString] = {
    "shared_vybe": "SELECT report_count FROM shared_vybes WHERE id = $1::text::uuid",
    "comment": "SELECT report_count FROM comments WHERE id = $1::text::uuid",
    "user": "SELECT report_count FROM users WHERE id = $1",
}
_INSERT: LiteralString = """
INSERT INTO reports (reporter_id, reported_type, reported_id, type, description)
VALUES ($1, $2, $3, $4::text::report_type, $5)
ON CONFLICT ON CONSTRAINT reports_one_per_reporter DO NOTHING
RETURNING id, type::text AS type, status::text AS status, created_at
"""
_EXISTING: LiteralString = """
SELECT id, type::text AS type, status::text AS status, created_at FROM reports
 WHERE reporter_id = $1 AND reported_type = $2 AND reported_id = $3
"""


async def report(
    pool: asyncpg.Pool,
    reporter_id: str,
    *,
    target_type: str,
    target_id: uuid.UUID | str,
    report_type: str,
    description: str | None = None,
    request_id: str | None = None,
    announce: Announcement | None = None,
) -> ReportResult:
    """File a report; a repeat by the same reporter returns the first one (``created=False``).

    Hidden or removed content can still be reported. Flagging after N distinct
    reporters is the moderation policy's call, made from ``report_count``.
    """
    reporter = validate.user_id(reporter_id, "reporter_id")
    ttype = validate.choice(target_type, REPORT_TARGETS, "target_type")
    tid = validate.user_id(target_id, "target_id") if ttype == "user" else str(validate.object_id(target_id, ttype))
    rtype = validate.choice(report_type, REPORT_TYPES, "report_type")
    text = None if description is None else validate.text(
        description, limit=validate.MAX_DESCRIPTION_CHARS, field="description", required=False)

    async def body(conn: asyncpg.Connection) -> ReportResult:
        if await lock_target(conn, ttype, tid) is None:  # first: the one lock order (db.writes.locks)
            raise NotFound(f"{ttype} {tid} does not exist")
        try:
            row = await conn.fetchrow(_INSERT, reporter, ttype, tid, rtype, text)
        except asyncpg.ForeignKeyViolationError as err:
            raise fk_missing(err) from err
        created = row is not None
        if row is None:  # the same reporter again (perhaps concurrently: we waited for it to commit)
            row = await conn.fetchrow(_EXISTING, reporter, ttype, tid)
        count = await conn.fetchval(_COUNT[ttype], tid)
        return ReportResult(report_id=row["id"], created=created, target_type=ttype, target_id=tid,
                            report_type=row["type"], status=row["status"], report_count=count,
                            created_at=row["created_at"])

    return await idempotent(pool, user_id=reporter, request_id=validate.request_id(request_id),
                            operation="report", result_type=ReportResult, body=body, announce=announce)

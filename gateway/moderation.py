"""The moderation desk on the gateway: user reports, claims and resolutions.

Every action is stored and audited by ``db.moderation`` in one transaction, whose
events are written to the outbox in that same transaction: the case on
``mod:flagged`` (so other moderators see it at once, as a snapshot consistent with
the stored case), feed events (vybe.hidden / vybe.removed / vybe.restored), and
notices to the author and to every reporter on their ``user:{id}`` channels.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from common import events
from db import apps, writes
from db import moderation as mdb
from db.outbox import Announcement
from gateway import protocol as p

if TYPE_CHECKING:
    import asyncpg

    from common.bus import Event, Meta
    from db.writes import ReportResult
    from gateway.context import Gateway

_VISIBILITY = {"remove": "removed", "hide": "hidden", "restore": "restored", "dismiss": "restored"}


class Desk:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def report_events(self, conn: asyncpg.Connection, result: ReportResult) -> list[Event]:
        """In the report's transaction: count distinct reporters, flag at the threshold, and
        announce the case (every change to an open case is announced with its new version)."""
        if not result.created:
            return []
        case_id = await mdb.on_user_report(conn, result.target_type, result.target_id,
                                           self.gw.settings.report_flag_threshold)
        if case_id is None:
            return []
        return [events.case_changed("report.flagged", view) for view in await mdb.case_views(conn, [case_id])]

    async def act(self, actor: Any, cmd: p.Claim | p.Resolve | p.Reopen) -> mdb.CaseAck:
        """A moderator's command; a retry with the same id answers the first result (``replayed``)."""
        gw, rid = self.gw, cmd.id or None
        if isinstance(cmd, p.Reopen):
            reopened = Announcement(lambda conn, r: _with_app_item(conn, r, "reopen", reopen_events(r)))
            result = await mdb.reopen(gw.pool, cmd.case_id, cmd.version, actor.user_id, announce=reopened,
                                      request_id=rid)
            gw.announce(reopened)
            return mdb.CaseAck.of(result.case, result.replayed)
        if isinstance(cmd, p.Claim):
            name = "case.released" if cmd.release else "case.claimed"
            claimed = Announcement.of(lambda r: [events.case_changed(name, r.case)])
            done = await mdb.claim(gw.pool, cmd.case_id, cmd.version, actor.user_id, gw.settings.claim_lease_s,
                                   release=cmd.release, announce=claimed, request_id=rid)
            gw.announce(claimed)
            return mdb.CaseAck.of(done.case, done.replayed)
        resolved = Announcement(lambda conn, r: self._resolution_events(conn, r, cmd.action))
        result = await mdb.resolve(gw.pool, cmd.case_id, cmd.version, cmd.action, cmd.note, actor.user_id,
                                   announce=resolved, labels=cmd.labels, message=cmd.message, request_id=rid,
                                   premoderation=gw.settings.premoderation)
        gw.announce(resolved)
        return mdb.CaseAck.of(result.case, result.replayed)

    async def _resolution_events(self, conn: asyncpg.Connection, result: mdb.Resolved, action: str) -> list[Event]:
        view = result.case
        # Never shown (held under premoderation: not scored yet, or hidden at its first score): a moderator who lets
        # it out announces it as the worker would have; one who hides or removes it, nothing to viewers.
        held = result.unshown
        out = await _with_app_item(conn, result, action, resolution_events(result, action, held))
        if held and action in ("restore", "dismiss"):
            with contextlib.suppress(writes.NotFound):  # deleted by its author since
                out += events.vybe_created(await writes.get_vybe(conn, uuid.UUID(view.target_id)))
        return out

    async def appeal(self, actor: Any, cmd: p.AppealCmd) -> mdb.AppealView:
        """The author's appeal: the case reopens (``case.appealed`` to moderators)."""
        appealed = Announcement.of(lambda r: [events.case_changed("case.appealed", r.case)])
        done = await mdb.appeal(self.gw.pool, actor.user_id, cmd.target_type, cmd.target_id, cmd.statement,
                                announce=appealed, request_id=cmd.id or None)
        self.gw.announce(appealed)
        return msgspec.structs.replace(done.appeal, replayed=done.replayed)


async def _with_app_item(conn: asyncpg.Connection, result: mdb.Resolved, action: str,
                         out: list[Event]) -> list[Event]:
    """For an app item, in the decision's transaction: its publication released, taken back or returned,
    and the app's webhook told (``db.apps.decided_events``); a reopened one is back in view."""
    view = result.case
    if view.target_type != "app_item":
        return out
    return out + await apps.decided_events(conn, uuid.UUID(view.target_id), action)


def _vybe_meta(result: mdb.Resolved) -> Meta | None:
    """A vybe's fan-out rules (a private one reaches its author only); None for a comment (its vybe's channel is
    subscribed to only by those who may see that vybe)."""
    view = result.case
    if view.target_type != "shared_vybe" or result.privacy_level is None or view.author_id is None:
        return None
    return events.vybe_meta(view.author_id, result.privacy_level, view.is_anonymous)


def reopen_events(reopened: mdb.Resolved) -> list[Event]:
    """The case to moderators. Viewers hear nothing: a reopen changes no content's view (``mdb.reopen``)."""
    return [events.case_changed("case.reopened", reopened.case)]


def resolution_events(resolved: mdb.Resolved, action: str, held: bool = False) -> list[Event]:
    """The case to moderators, the new visibility to viewers, the outcome to author and reporters. ``held``: the
    content was never shown (held for its score under premoderation), so viewers hear nothing of its visibility."""
    view = resolved.case
    target = str(view.target_id)
    out = [events.case_changed("report.resolved", view)]
    back = _VISIBILITY[action] == "restored"
    if view.target_type in ("shared_vybe", "comment") and not held and resolved.was_hidden == back:
        # Only a change of view is announced: letting content be that was in view changes nothing viewers see
        # (no `restored`: for a private vybe, every feed subscriber would have heard of its id), nor does taking
        # down again what a reopen left out of view.
        vybe_id = None if view.vybe_id is None else str(view.vybe_id)
        out += events.visibility(view.target_type, target, vybe_id, resolved.looproom_id, _VISIBILITY[action],
                                 _vybe_meta(resolved))
    if view.author_id and view.target_type != "user" and (view.target_type != "app_item" or view.channel):
        # An app's own users (an item its backend sent) are not ours to notify: its webhook hears it.
        out.append(events.outcome(view.author_id, {
            "target_type": view.target_type, "target_id": target, "action": action, "by": "moderator",
            "message": view.message, "excerpt": events.excerpt(view.text),
            "appeal": view.appeal_outcome if view.appeal_statement is not None else None,
            "appealable": action in ("hide", "remove") and view.appeal_statement is None
                          and view.target_type != "app_item"}))
    for reporter in resolved.reporters:
        out.append(events.outcome(reporter, {"target_type": view.target_type, "target_id": target, "outcome": action},
                                  "report.resolved"))
    return out

"""The moderation desk on the gateway: user reports, claims and resolutions.

Every action is stored and audited by ``db.moderation`` in one transaction, then
broadcast on ``mod:flagged`` so other moderators see it at once, turned into
feed events (vybe.hidden / vybe.removed / vybe.restored), and told to the
author and to every reporter on their ``user:{id}`` channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from db import moderation as mdb
from gateway import protocol as p
from moderation.bus import Meta
from moderation.events import publish_case, publish_visibility

if TYPE_CHECKING:
    from db.writes import ReportResult
    from gateway.context import Gateway

_VISIBILITY = {"remove": "removed", "hide": "hidden", "restore": "restored", "dismiss": "restored"}


class Desk:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def on_report(self, result: ReportResult) -> None:
        """A user report: count distinct reporters; flag and broadcast at the threshold."""
        if not result.created:
            return
        gw = self.gw
        case_id = await mdb.on_user_report(gw.pool, result.target_type, result.target_id,
                                           gw.settings.report_flag_threshold)
        if case_id is not None:
            for view in await mdb.case_views(gw.pool, [case_id]):
                await publish_case(gw.publisher, "report.flagged", view)

    async def act(self, actor: Any, cmd: p.Claim | p.Resolve) -> mdb.CaseView:
        gw = self.gw
        if isinstance(cmd, p.Claim):
            view = await mdb.claim(gw.pool, cmd.case_id, cmd.version, actor.user_id, gw.settings.claim_lease_s,
                                   release=cmd.release)
            await publish_case(gw.publisher, "case.released" if cmd.release else "case.claimed", view)
            return view
        view, reporters = await mdb.resolve(gw.pool, cmd.case_id, cmd.version, cmd.action, cmd.note, actor.user_id)
        await publish_case(gw.publisher, "report.resolved", view)
        await self._announce(view, cmd.action, reporters)
        return view

    async def _announce(self, view: mdb.CaseView, action: str, reporters: list[str]) -> None:
        pub = self.gw.publisher
        target = str(view.target_id)
        if view.target_type in ("shared_vybe", "comment"):
            looproom = await self.gw.pool.fetchval(
                "SELECT looproom_id::text FROM shared_vybes WHERE id::text = $1", target)
            await publish_visibility(pub, view.target_type, target, _str(view.vybe_id), looproom,
                                     _VISIBILITY[action])
        outcome = {"target_type": view.target_type, "target_id": target, "action": action, "note": view.note}
        if view.author_id and view.target_type != "user":
            await pub.publish(f"user:{view.author_id}", "moderation.outcome", outcome, Meta(o=view.author_id))
        for reporter in reporters:
            await pub.publish(f"user:{reporter}", "report.resolved",
                              {"target_type": view.target_type, "target_id": target, "outcome": action},
                              Meta(o=reporter))


def _str(value: object) -> str | None:
    return None if value is None else str(value)

"""Command handlers: validate, call the write path, publish events after COMMIT.

Each handler returns a :class:`Result` (the ack payload, plus frames to queue
right after it) or raises :class:`CommandError`. Events are published only after
the write path returned, which is after COMMIT: an event never announces a write
that could still roll back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from db import writes
from gateway import protocol as p
from gateway.protocol import ErrorCode
from moderation.bus import Meta
from moderation.events import LIVE_PRIVACY, content_view, publish_vybe_created

if TYPE_CHECKING:
    from gateway.connection import Connection
    from gateway.context import Gateway

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CHANNEL = re.compile(rf"^(feed|mod:flagged|vybe:{_UUID}|looproom:{_UUID}|user:[^\s]{{1,128}})$")


class Caller(Protocol):
    """Who runs a write: a socket (``Connection``) or a REST request (``rest.Actor``)."""

    gw: Gateway
    user_id: str
    is_moderator: bool
    blocked: frozenset[str]


class CommandError(Exception):
    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after


# Who to notify is ours to know: an anonymous author's id must not reach the actor.
_PRIVATE_FIELDS = ("vybe_author_id", "target_author_id")


def ack_view(result: Any) -> dict[str, Any]:
    """A write's result as the actor may see it."""
    data: dict[str, Any] = msgspec.to_builtins(result)
    for name in _PRIVATE_FIELDS:
        data.pop(name, None)
    return data


class Result(msgspec.Struct):
    ack: Any = None
    after: list[bytes] = msgspec.field(default_factory=list)
    finish: Callable[[], None] | None = None


async def handle(conn: Caller, cmd: Any) -> Result:
    """Run one authenticated command (channel commands come from sockets only)."""
    try:
        match cmd:
            case p.Subscribe():
                return await _subscribe(cast("Connection", conn), cmd)
            case p.Unsubscribe():
                return await _unsubscribe(cast("Connection", conn), cmd)
            case p.PostVybe():
                return await _post_vybe(conn, cmd)
            case p.CommentCmd():
                return await _comment(conn, cmd)
            case p.React() | p.Unreact():
                return await _react(conn, cmd)
            case p.Share():
                return await _share(conn, cmd)
            case p.ReportCmd():
                return await _report(conn, cmd)
            case p.Block() | p.Unblock():
                return await _block(conn, cmd)
            case p.Claim() | p.Resolve():
                return await _moderate(conn, cmd)
    except writes.WriteError as err:
        raise CommandError(err.code, err.message) from err
    raise CommandError(ErrorCode.UNKNOWN_TYPE, f"{type(cmd).__name__} is not handled")


# -- channels -----------------------------------------------------------------

async def _subscribe(conn: Connection, cmd: p.Subscribe) -> Result:
    channel = cmd.channel
    if not _CHANNEL.match(channel):
        raise CommandError(ErrorCode.UNKNOWN_CHANNEL,
                           "channels: feed, vybe:{id}, looproom:{id}, user:{your id}, mod:flagged")
    await _authorize(conn, channel)
    # The personal user:{id} channel is not counted against the limit.
    if channel not in conn.channels and len(conn.channels) - 1 >= conn.gw.settings.max_subscriptions:
        raise CommandError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                           f"at most {conn.gw.settings.max_subscriptions} subscriptions per connection")
    conn.channels.add(channel)
    resume = await conn.gw.hub.subscribe(conn, channel, cmd.since)
    if channel.startswith("looproom:"):
        conn.gw.presence.touch()
    ack = {"channel": channel, "recovered": resume.recovered, "missed": len(resume.missed)}
    if resume.recovered is None:
        return Result(ack)
    return Result(ack, resume.missed, lambda: conn.gw.hub.finish_resume(conn, channel, resume.after))


async def _authorize(conn: Connection, channel: str) -> None:
    if channel == "mod:flagged" and not conn.is_moderator:
        raise CommandError(ErrorCode.FORBIDDEN, "mod:flagged is for MODERATOR and ADMIN roles")
    if channel.startswith("user:") and channel != f"user:{conn.user_id}":
        raise CommandError(ErrorCode.FORBIDDEN, "you may subscribe only to your own user channel")
    if channel.startswith("vybe:"):
        try:
            vybe = await writes.get_vybe(conn.gw.pool, channel[5:])
        except writes.NotFound as err:
            raise CommandError("not_found", "no such vybe") from err
        if not _may_see(conn, vybe):
            raise CommandError("not_found", "no such vybe")


def _may_see(conn: Connection, vybe: Any) -> bool:
    if conn.is_moderator or vybe.user_id == conn.user_id:
        return True
    if vybe.moderation_state in ("hidden", "removed") or vybe.user_id in conn.blocked:
        return False
    return vybe.privacy_level in LIVE_PRIVACY


async def _unsubscribe(conn: Connection, cmd: p.Unsubscribe) -> Result:
    if cmd.channel not in conn.channels or cmd.channel == f"user:{conn.user_id}":
        raise CommandError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {cmd.channel}")
    conn.channels.discard(cmd.channel)
    await conn.gw.hub.unsubscribe(conn, cmd.channel)
    if cmd.channel.startswith("looproom:"):
        conn.gw.presence.touch()
    return Result({"channel": cmd.channel})


# -- writes -------------------------------------------------------------------

async def _post_vybe(conn: Caller, cmd: p.PostVybe) -> Result:
    gw = conn.gw
    vybe = await writes.post_vybe(
        gw.pool, conn.user_id, content=cmd.content, type=cmd.vybe_type, privacy_level=cmd.privacy_level,
        is_anonymous=cmd.is_anonymous, looproom_id=cmd.looproom_id, loopchain_id=cmd.loopchain_id,
        request_id=cmd.id or None, max_chars=gw.settings.max_vybe_chars,
    )
    if not vybe.replayed:  # a retry of a committed write: announced (or swept) the first time
        await gw.enqueue_moderation("vybe", str(vybe.id))
        if not gw.settings.premoderation:
            await publish_vybe_created(gw.publisher, vybe)
    return Result(ack_view(vybe))


async def _comment(conn: Caller, cmd: p.CommentCmd) -> Result:
    gw = conn.gw
    comment = await writes.comment(
        gw.pool, conn.user_id, vybe_id=cmd.vybe_id, content=cmd.content, parent_id=cmd.parent_id,
        is_anonymous=cmd.is_anonymous, request_id=cmd.id or None, max_chars=gw.settings.max_comment_chars,
    )
    if not comment.replayed:
        await gw.enqueue_moderation("comment", str(comment.id))
        view = content_view(comment)
        await gw.publisher.publish(f"vybe:{cmd.vybe_id}", "comment.created", view, Meta(a=conn.user_id))
        author = comment.vybe_author_id
        if author and author != conn.user_id:
            await gw.publisher.publish(f"user:{author}", "comment.created", view, Meta(a=conn.user_id, o=author))
    return Result(ack_view(comment))


def _reaction_channel(result: Any) -> str | None:
    if result.target_type == "SHARED_VYBE":
        return f"vybe:{result.target_id}"
    if result.target_type == "LOOPROOM":
        return f"looproom:{result.target_id}"
    vybe_id = getattr(result, "vybe_id", None)
    return f"vybe:{vybe_id}" if vybe_id else None


async def _react(conn: Caller, cmd: p.React | p.Unreact) -> Result:
    gw = conn.gw
    op = gw.reactions.react if isinstance(cmd, p.React) else gw.reactions.unreact
    # Reactions are idempotent by key (user, target, type): a retry is a no-op, no request id needed.
    result = await op(conn.user_id, target_type=cmd.target_type, target_id=cmd.target_id, reaction_type=cmd.reaction)
    if result.applied:
        event = "reaction.added" if isinstance(cmd, p.React) else "reaction.removed"
        data = {"target_type": result.target_type, "target_id": str(result.target_id), "reaction": cmd.reaction,
                "user_id": conn.user_id, "reaction_count": result.reaction_count}
        channel = _reaction_channel(result)
        if channel:
            await gw.publisher.publish(channel, event, data, Meta(a=conn.user_id))
        author = result.target_author_id
        if event == "reaction.added" and author and author != conn.user_id:
            await gw.publisher.publish(f"user:{author}", event, data, Meta(a=conn.user_id, o=author))
    return Result(ack_view(result))


async def _share(conn: Caller, cmd: p.Share) -> Result:
    gw = conn.gw
    result = await writes.share(gw.pool, conn.user_id, cmd.vybe_id, request_id=cmd.id or None)
    if not result.replayed:
        await gw.publisher.publish(
            f"vybe:{cmd.vybe_id}", "vybe.shared",
            {"vybe_id": cmd.vybe_id, "share_count": result.share_count, "user_id": conn.user_id},
            Meta(a=conn.user_id))
    return Result(ack_view(result))


async def _report(conn: Caller, cmd: p.ReportCmd) -> Result:
    gw = conn.gw
    result = await writes.report(
        gw.pool, conn.user_id, target_type=cmd.target_type, target_id=cmd.target_id,
        report_type=cmd.report_type, description=cmd.description, request_id=cmd.id or None,
    )
    if not result.replayed:
        await gw.desk.on_report(result)
    return Result(ack_view(result))


async def _block(conn: Caller, cmd: p.Block | p.Unblock) -> Result:
    gw = conn.gw
    if cmd.user_id == conn.user_id:
        raise CommandError(ErrorCode.INVALID, "you cannot block yourself")
    op = writes.block if isinstance(cmd, p.Block) else writes.unblock
    blocked = await op(gw.pool, conn.user_id, cmd.user_id)
    conn.blocked = frozenset(blocked)
    # Other sockets of this user, on any node, pick the new list up from this event.
    await gw.publisher.publish(f"user:{conn.user_id}", "blocks.changed", {"blocked": blocked},
                               Meta(o=conn.user_id, b=list(blocked)))
    return Result({"blocked": blocked})


async def _moderate(conn: Caller, cmd: p.Claim | p.Resolve) -> Result:
    if not conn.is_moderator:
        raise CommandError(ErrorCode.FORBIDDEN, f"{type(cmd).__name__.lower()} is for MODERATOR and ADMIN roles")
    return Result(await conn.gw.desk.act(conn, cmd))

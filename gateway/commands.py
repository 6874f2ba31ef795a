"""Command handlers: validate, call the write path, publish events after COMMIT.

Each handler returns a :class:`Result` (the ack payload, plus frames to queue
right after it) or raises :class:`CommandError`. Events are published only after
the write path returned, which is after COMMIT: an event never announces a write
that could still roll back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from common import events
from common.bus import job
from common.errors import ErrorCode
from common.redisconn import REDIS_DOWN
from common.visibility import Viewer, may_follow
from db import apps, writes
from db.outbox import Announcement
from db.pool import UNREACHABLE
from db.writes._tx import idempotent
from gateway import protocol as p
from gateway.hub import Unavailable

if TYPE_CHECKING:
    import asyncpg

    from common.namespaces import Namespace
    from gateway.connection import Connection
    from gateway.context import Gateway



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
            case p.AppealCmd():
                return Result(await conn.gw.desk.appeal(conn, cmd))
            case p.Claim() | p.Resolve() | p.Reopen():
                return await _moderate(conn, cmd)
            case p.Publish():
                return await _publish(cast("Connection", conn), cmd)
    except writes.WriteError as err:
        raise CommandError(err.code, err.message, err.retry_after) from err
    except REDIS_DOWN as err:  # e.g. a resume's history read while Redis restarts
        raise unavailable("Redis") from err
    except UNREACHABLE as err:
        raise unavailable("PostgreSQL") from err
    except Unavailable as err:
        raise CommandError(ErrorCode.UNAVAILABLE, str(err), err.retry_after) from err
    raise CommandError(ErrorCode.UNKNOWN_TYPE, f"{type(cmd).__name__} is not handled")


def unavailable(what: str, retry_after: float = 1.0) -> CommandError:
    """The typed answer while a backend is down: nothing was stored; retry after ``retry_after`` s."""
    return CommandError(ErrorCode.UNAVAILABLE, f"{what} is unreachable; nothing was stored, retry", retry_after)


# -- channels -----------------------------------------------------------------

async def _subscribe(conn: Connection, cmd: p.Subscribe) -> Result:
    channel = cmd.channel
    ns = _namespace(conn, channel)
    await _authorize(conn, ns, channel)
    # The personal user:{id} channel is not counted against the limit.
    if channel not in conn.channels and len(conn.channels) - 1 >= conn.gw.settings.max_subscriptions:
        raise CommandError(ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                           f"at most {conn.gw.settings.max_subscriptions} subscriptions per connection")
    held = channel in conn.channels
    conn.channels.add(channel)
    try:
        resume = await conn.gw.hub.subscribe(conn, channel, cmd.since, position=True)
    except BaseException:
        if not held:
            conn.channels.discard(channel)
        raise
    if ns.presence:
        conn.gw.presence.touch()
    ack = p.Subscribed(channel=channel, recovered=resume.recovered, missed=len(resume.missed), offset=resume.position)
    if resume.recovered is None:
        return Result(ack)
    return Result(ack, resume.missed, lambda: conn.gw.hub.finish_resume(conn, channel, resume.after))


def _namespace(conn: Connection, channel: str) -> Namespace:
    ns = conn.gw.namespaces.of(channel)
    if ns is None:
        raise CommandError(ErrorCode.UNKNOWN_CHANNEL, f"not a channel here; channels: {conn.gw.namespaces.describe()}")
    return ns


async def _authorize(conn: Connection, ns: Namespace, channel: str) -> None:
    """The namespace's subscribe rule (``common.namespaces.SUBSCRIBE_RULES``)."""
    rule, rest = ns.subscribe, channel.partition(":")[2]
    if rule == "moderators" and not conn.is_moderator:
        raise CommandError(ErrorCode.FORBIDDEN, f"{channel} is for MODERATOR and ADMIN roles")
    if rule == "owner" and rest != conn.user_id:  # exactly: user ids may hold ':' themselves
        raise CommandError(ErrorCode.FORBIDDEN, f"{ns.name}: channels are their owner's only ({ns.name}:<your id>)")
    if rule == "claims" and (conn.identity is None or not conn.identity.lists(channel)):
        raise CommandError(ErrorCode.FORBIDDEN, f"your token's `channels` claim does not list {channel}")
    if rule == "visible":
        try:
            vybe = await writes.get_vybe(conn.gw.pool, channel[5:])
        except writes.NotFound as err:
            raise CommandError("not_found", "no such vybe") from err
        if not _may_see(conn, vybe):
            raise CommandError("not_found", "no such vybe")


def _may_see(conn: Connection, vybe: Any) -> bool:
    # As the REST read of the vybe decides: a vybe held under premoderation is not found by others yet.
    return may_follow(Viewer(conn.user_id, conn.is_moderator, conn.blocked), author_id=vybe.user_id,
                      privacy_level=vybe.privacy_level, moderation_state=vybe.moderation_state,
                      premoderation=conn.gw.settings.premoderation, is_anonymous=vybe.is_anonymous)


async def _unsubscribe(conn: Connection, cmd: p.Unsubscribe) -> Result:
    if cmd.channel == f"user:{conn.user_id}":
        raise CommandError(ErrorCode.FORBIDDEN, "your own user channel is held for as long as you are authenticated")
    if cmd.channel not in conn.channels:
        raise CommandError(ErrorCode.NOT_SUBSCRIBED, f"not subscribed to {cmd.channel}")
    conn.channels.discard(cmd.channel)
    await conn.gw.hub.unsubscribe(conn, cmd.channel)
    if conn.gw.namespaces.presence_channel(cmd.channel):
        conn.gw.presence.touch()
    return Result(p.Unsubscribed(channel=cmd.channel))


async def _publish(conn: Connection, cmd: p.Publish) -> Result:
    """A client publication: stored with its events (and, on a moderated namespace, as an app item
    with its scoring job) in one transaction, then delivered, or held until scored."""
    ns = _namespace(conn, cmd.channel)
    if not ns.publish:
        raise CommandError(ErrorCode.FORBIDDEN, f"clients may not publish on {ns.name} channels")
    await _authorize(conn, ns, cmd.channel)
    if len(msgspec.json.encode(cmd.data)) > ns.max_bytes:
        raise CommandError(ErrorCode.CONTENT_TOO_LONG, f"publication data over {ns.max_bytes} bytes of JSON")
    text = cmd.data.get(ns.text_field) if isinstance(cmd.data, dict) else None
    if isinstance(text, str) and len(text) > ns.max_chars:
        raise CommandError(ErrorCode.CONTENT_TOO_LONG, f"`{ns.text_field}` over {ns.max_chars} characters")
    if isinstance(text, str) and "\x00" in text:
        raise CommandError(ErrorCode.INVALID_CONTENT, f"`{ns.text_field}` holds NUL")
    # Counted once valid (the connection's command limit bounds a flood of refused ones).
    wait = conn.publish_bucket(ns.name, ns.rate_per_s, ns.rate_burst).take()
    if wait:
        raise CommandError(ErrorCode.RATE_LIMITED, f"at most {ns.rate_per_s:g} publications/s on {ns.name}",
                           round(wait, 3))
    moderated = ns.moderation != "off" and isinstance(text, str) and bool(text.strip())
    if ns.moderation == "before" and not moderated:  # nothing unscored goes out here
        raise CommandError(ErrorCode.INVALID_CONTENT,
                           f"{ns.name} publications are scored before delivery: `data.{ns.text_field}` must be text")
    held = moderated and ns.moderation == "before"
    pid = uuid.uuid4()
    result = p.Publication(channel=cmd.channel, id=str(pid), state="held" if held else "accepted")
    publication = events.publication(cmd.channel, pid, conn.user_id, cmd.data)

    async def body(db: asyncpg.Connection) -> p.Publication:
        if moderated:
            await apps.submit_item(db, ns.app or apps.OWN_APP, content_type=ns.name, content_id=str(pid),
                                   user_id=conn.user_id, text=cast("str", text), channel=cmd.channel,
                                   payload=cmd.data, held=held, item_id=pid)
        return result

    announce = Announcement.of(lambda r: [] if r.replayed else [
        *([] if held else [publication]), *([job("app_item", pid)] if moderated else [])])
    stored = await idempotent(conn.gw.pool, user_id=conn.user_id, request_id=cmd.id or None,
                                     operation="publish", result_type=p.Publication, body=body, announce=announce)
    conn.gw.announce(announce)
    return Result(stored)


# -- writes -------------------------------------------------------------------
# Each write stores its events in the outbox in its own transaction; after COMMIT
# they are handed to the relay's fast path (``gw.announce``), which publishes them
# within a loop turn, or the relay's loop does later. The ack never waits on Redis.

async def _post_vybe(conn: Caller, cmd: p.PostVybe) -> Result:
    gw = conn.gw
    premoderation = gw.settings.premoderation
    announce = Announcement.of(lambda v: [job("vybe", v.id), *([] if premoderation else events.vybe_created(v))])
    vybe = await writes.post_vybe(
        gw.pool, conn.user_id, content=cmd.content, type=cmd.vybe_type, privacy_level=cmd.privacy_level,
        is_anonymous=cmd.is_anonymous, looproom_id=cmd.looproom_id, loopchain_id=cmd.loopchain_id,
        request_id=cmd.id or None, max_chars=gw.settings.max_vybe_chars, announce=announce,
    )
    gw.announce(announce)
    return Result(writes.public(vybe))


async def _comment(conn: Caller, cmd: p.CommentCmd) -> Result:
    gw = conn.gw
    announce = Announcement.of(lambda c: [job("comment", c.id), *events.comment_created(c)])
    comment = await writes.comment(
        gw.pool, conn.user_id, vybe_id=cmd.vybe_id, content=cmd.content, parent_id=cmd.parent_id,
        is_anonymous=cmd.is_anonymous, request_id=cmd.id or None, max_chars=gw.settings.max_comment_chars,
        announce=announce,
    )
    gw.announce(announce)
    return Result(writes.public(comment))


async def _react(conn: Caller, cmd: p.React | p.Unreact) -> Result:
    # Reactions are idempotent by key (user, target, type): a retry is a no-op, no request id
    # needed. The group-committing writer stores their events in each batch's transaction.
    op = conn.gw.reactions.react if isinstance(cmd, p.React) else conn.gw.reactions.unreact
    result = await op(conn.user_id, target_type=cmd.target_type, target_id=cmd.target_id, reaction_type=cmd.reaction)
    return Result(writes.public(result))


async def _share(conn: Caller, cmd: p.Share) -> Result:
    gw = conn.gw
    announce = Announcement.of(lambda r: events.vybe_shared(r, conn.user_id))
    result = await writes.share(gw.pool, conn.user_id, cmd.vybe_id, request_id=cmd.id or None, announce=announce)
    gw.announce(announce)
    return Result(writes.public(result))


async def _report(conn: Caller, cmd: p.ReportCmd) -> Result:
    gw = conn.gw
    announce = Announcement(gw.desk.report_events)
    result = await writes.report(
        gw.pool, conn.user_id, target_type=cmd.target_type.lower(), target_id=cmd.target_id,
        report_type=cmd.report_type, description=cmd.description, request_id=cmd.id or None, announce=announce,
    )
    gw.announce(announce)
    return Result(writes.public(result))


async def _block(conn: Caller, cmd: p.Block | p.Unblock) -> Result:
    gw = conn.gw
    if cmd.user_id == conn.user_id:
        raise CommandError(ErrorCode.INVALID_VALUE, "you cannot block yourself")
    op = writes.block if isinstance(cmd, p.Block) else writes.unblock
    # Other sockets of this user, on any node, pick the new list up from this event.
    announce = Announcement.of(lambda blocked: events.blocks_changed(conn.user_id, blocked))
    blocked = await op(gw.pool, conn.user_id, cmd.user_id, announce)
    gw.announce(announce)
    conn.blocked = frozenset(blocked)
    return Result(writes.BlockList(blocked=blocked))


async def _moderate(conn: Caller, cmd: p.Claim | p.Resolve | p.Reopen) -> Result:
    if not conn.is_moderator:
        raise CommandError(ErrorCode.FORBIDDEN, f"{type(cmd).__name__.lower()} is for MODERATOR and ADMIN roles")
    return Result(await conn.gw.desk.act(conn, cmd))

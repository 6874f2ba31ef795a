"""The server API: what a trusted backend (a sister app's server) asks of the gateway.

Authenticated with an API key of its app (``Authorization: Bearer vk_<id>.<secret>``; keys are made,
listed and revoked with ``vybe apps``; several live at once, so a key rotates without downtime).
Reference: ``docs/server-api.md``.

- publish an event to one or many channels, once per idempotency key (stored in the outbox with the
  key, in one transaction: an acknowledged publish is never lost, and a retry publishes nothing);
- read a channel's live viewer count and its history;
- disconnect a user, or revoke their subscriptions, on every node;
- moderate a text: scored by the workers like a vybe, cased in the same console, the outcome
  answered at once (``wait``), delivered to the app's webhook, or read back by id.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, SkipValidation

from common.bus import Meta, event, job, parse_offset, split_message
from common.errors import ErrorCode
from common.redisconn import REDIS_DOWN
from db import apps
from db.outbox import Announcement
from db.writes._tx import in_transaction
from db.writes.errors import WriteError
from gateway.protocol import EVENT_NAMES, TEXT_PATTERN, invalid_code
from gateway.rest import ApiError, responses

if TYPE_CHECKING:
    from gateway.context import Gateway

EventName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
ChannelList = Annotated[list[str], msgspec.Meta(min_length=1, max_length=100)]
"""Channel names are checked against the app's namespaces (anything else: ``forbidden``)."""
Key = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]


class PublishRequest(msgspec.Struct, kw_only=True):
    channels: ChannelList
    """Up to 100 channels of any namespace (``user:<id>`` reaches one user's sockets)."""
    event: EventName
    """The event name subscribers see (``match.created``, ...): lower case, dots, 1-64 characters."""
    data: Any = None
    """Any JSON value: the event's ``data``, up to 64 KiB."""
    idempotency_key: Key | None = None
    """A retry with the same key (within 24 h) publishes nothing and answers ``replayed: true``."""


class PublishResult(msgspec.Struct, kw_only=True):
    id: str
    """This publish's id, for your logs (the events carry ``data`` exactly as given)."""
    channels: list[str]
    replayed: bool = False


class Presence(msgspec.Struct, kw_only=True):
    channel: str
    viewers: int
    """Distinct users subscribed, summed over every live gateway node."""


class HistoryEvent(msgspec.Struct, kw_only=True):
    channel: str
    offset: str
    event: str
    ts: float
    data: Any


class History(msgspec.Struct, kw_only=True):
    channel: str
    events: list[HistoryEvent]
    """Oldest first. Without ``since``: the newest ``limit`` events. With it: the first ``limit`` after it (a page)."""
    recovered: bool | None = None
    """With ``since``: false when history no longer reaches back to it (events may be missing: the page starts at
    the oldest event kept)."""
    more: bool
    """With ``since``: more events follow this page; ask again with ``since`` = the last event's offset. Without
    it, always false (older events are not paged backwards)."""


class Unsubscribe(msgspec.Struct, kw_only=True):
    channels: ChannelList


class Done(msgspec.Struct, kw_only=True):
    user_id: str
    action: str


class ModerateRequest(msgspec.Struct, kw_only=True):
    content_type: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]
    """Your kind of content (``message``, ``post``, ``bio``...): shown to moderators, filterable."""
    content_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
    """Your id of it. The same (content_type, content_id) again is the same item (a retry): send an
    edited text under a new id."""
    author_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]
    """Your user id of its author (moderators see an author's history by it)."""
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=20000, pattern=TEXT_PATTERN)]
    wait: bool = False
    """Answer with the scores and the policy's decision (200), waiting up to ``VYBE_MODERATE_WAIT_S``;
    false, or when that passes: answer at once with ``state: pending`` (202), and the outcome goes to your
    webhook (``moderation.scored``, later ``moderation.decided``) or is read back by id."""


_MAX_DATA = 65_536


async def _app(request: Request[Any, Any, Any]) -> tuple[Gateway, str]:
    gw: Gateway = request.app.state.gateway
    kind, _, key = request.headers.get("authorization", "").partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        raise ApiError(ErrorCode.AUTH_REQUIRED, "send Authorization: Bearer <API key> (vybe apps key APP)")
    app_id = await apps.authenticate(gw.pool, key.strip())
    if app_id is None:
        raise ApiError(ErrorCode.AUTH_FAILED, "unknown or revoked API key")
    return gw, app_id


_T = TypeVar("_T")


def _body(kind: type[_T], raw: object) -> _T:
    """The body, decoded as strictly as the socket decodes frames, after the key was checked (a request
    without a key is ``auth_required`` whatever its body)."""
    if isinstance(raw, kind):
        return raw
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as err:
        raise ApiError(invalid_code(str(err)), str(err)) from err


def _channel(gw: Gateway, channel: str, app_id: str, *, to_user: bool = False) -> str:
    """A channel of one of the app's namespaces (``app = "<its id>"`` in VYBE_NAMESPACES), or, to
    publish a notification, a user's personal ``user:<id>``. Nothing else: an app never reads or
    writes another app's channels, nor the gateway's own (feed, vybes, looprooms, moderators)."""
    ns = gw.namespaces.of(channel)
    if ns is None or (ns.app != app_id and not (to_user and ns.name == "user")):
        mine = [n.name for n in gw.namespaces if n.app == app_id]
        raise ApiError(ErrorCode.FORBIDDEN, f"{channel} is not one of app {app_id}'s channels "
                                            f"(its namespaces: {', '.join(mine) or 'none'}; and user:<id> to publish)")
    return channel


def _event_name(name: str, channels: list[str]) -> str:
    """An app's event may not pass for the platform's: on users' personal channels none of the
    platform's names (``docs/protocol.md``, "Event data": outcomes, care notices, notifications...),
    and nowhere a presence count or a digest (clients act on those)."""
    if name.endswith((".presence", ".digest")) or (
            name in EVENT_NAMES and any(c.startswith("user:") for c in channels)):
        raise ApiError(ErrorCode.FORBIDDEN, f"event {name!r} is reserved for the platform's own events")
    return name


def _redis_down(err: Exception) -> ApiError:
    return ApiError(ErrorCode.UNAVAILABLE, f"Redis is unreachable ({type(err).__name__}); retry", 1.0)


class ServerController(Controller):
    """For trusted backends, with an app's API key."""

    path = "/api/server"
    tags = ("server",)
    security = ({"ApiKey": []},)

    @post("/publish", status_code=200, operation_id="serverPublish",
          responses=responses(ErrorCode.INVALID_VALUE, ErrorCode.CONTENT_TOO_LONG, ErrorCode.CONFLICT,
                              ErrorCode.FORBIDDEN))
    async def publish(self, request: Request[Any, Any, Any],
                      data: JSONBody[SkipValidation[PublishRequest]]) -> PublishResult:
        """Publish ``event`` with ``data`` on each channel, in the order given; stored before the answer, so
        an answered publish is delivered even if Redis is down at the time (it goes out when it is back)."""
        gw, app_id = await _app(request)
        data = _body(PublishRequest, data)
        channels = list(dict.fromkeys(_channel(gw, c, app_id, to_user=True) for c in data.channels))
        name = _event_name(data.event, channels)
        if len(msgspec.json.encode(data.data)) > _MAX_DATA:
            raise ApiError(ErrorCode.CONTENT_TOO_LONG, f"data over {_MAX_DATA} bytes of JSON")
        pid = str(uuid.uuid4())
        # On user:<id> only that user receives it (a user id may contain ':'; the channel name alone
        # must never decide who reads a personal event).
        events = [event(c, name, data.data, Meta(o=c[5:]) if c.startswith("user:") else Meta()) for c in channels]

        async def body(_conn: Any) -> dict[str, Any]:
            return {"id": pid, "channels": channels}

        announce = Announcement(lambda _conn, pair: [] if pair[1] else events)
        try:
            result, replayed = await apps.once(gw.pool, app_id, data.idempotency_key, "publish", body, announce)
        except WriteError as err:
            raise ApiError(err.code, err.message) from err
        gw.announce(announce)
        return PublishResult(id=result["id"], channels=result["channels"], replayed=replayed)

    @get("/channels/{channel:str}/presence", operation_id="serverPresence",
         responses=responses(ErrorCode.INVALID_VALUE, ErrorCode.FORBIDDEN))
    async def presence(self, request: Request[Any, Any, Any], state: State, channel: FromPath[str]) -> Presence:
        """Live viewers of a channel whose namespace has ``presence = true``."""
        gw, app_id = await _app(request)
        ns = gw.namespaces.of(_channel(gw, channel, app_id))
        if ns is None or not ns.presence:
            raise ApiError(ErrorCode.INVALID_VALUE, f"presence is off for {channel.partition(':')[0]} channels")
        k, tag = gw.keys, "{" + channel + "}"
        try:
            async with gw.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(f"{k.prefix}p:{tag}:n")
                pipe.zrangebyscore(f"{k.prefix}p:{tag}:hb", time.time(), "+inf")
                counts, live = await pipe.execute()
        except REDIS_DOWN as err:
            raise _redis_down(err) from err
        alive = set(live)
        return Presence(channel=channel, viewers=sum(int(v) for n, v in counts.items() if n in alive))

    @get("/channels/{channel:str}/history", operation_id="serverHistory",
         responses=responses(ErrorCode.INVALID_VALUE, ErrorCode.FORBIDDEN))
    async def history(self, request: Request[Any, Any, Any], state: State, channel: FromPath[str],
                      since: FromQuery[str | None] = None,
                      limit: FromQuery[Annotated[int, Parameter(ge=1, le=1000)]] = 100) -> History:
        """A channel's kept events (``history_len`` of its namespace), oldest first, with their offsets: the newest
        ``limit``, or with ``since`` the ``limit`` after it, a page (``more``: ask again from the last offset)."""
        gw, app_id = await _app(request)
        _channel(gw, channel, app_id)
        recovered: bool | None = None
        try:
            if since:
                parsed = parse_offset(since)
                entries = None if parsed is None else await gw.backend.history(channel, parsed[0], parsed[1])
                recovered = entries is not None
                if entries is None:
                    entries = await gw.backend.current(channel)
            else:
                entries = await gw.backend.current(channel)
        except REDIS_DOWN as err:
            raise _redis_down(err) from err
        out = []
        for entry in entries:  # all of them first: what is left out must not shorten a page
            meta, raw = split_message(entry.message)
            if meta.x is not None or meta.o is not None or meta.m:
                continue  # control, personal and moderators' events are not the app's to read
            body = json.loads(raw)
            out.append(HistoryEvent(channel=channel, offset=f"{entry.epoch}-{entry.stream_id}", event=body["event"],
                                    ts=body["ts"], data=body["data"]))
        if not since:
            return History(channel=channel, events=out[-limit:], more=False)
        # Forward from `since`: the oldest first, so paging on from the last offset skips nothing.
        return History(channel=channel, events=out[:limit], recovered=recovered, more=len(out) > limit)

    @post("/users/{user_id:str}/disconnect", status_code=200, operation_id="serverDisconnect",
          responses=responses())
    async def disconnect(self, request: Request[Any, Any, Any], state: State, user_id: FromPath[str]) -> Done:
        """Close every socket of the user, on every node (close code 4010, after a ``session.disconnected``
        event on their ``user:`` channel). Their token still works: revoke it at your IdP or let it expire."""
        gw, app_id = await _app(request)
        await _control(gw, user_id, "session.disconnected", {"by": app_id}, Meta(o=user_id, x="disconnect"))
        return Done(user_id=user_id, action="disconnect")

    @post("/users/{user_id:str}/unsubscribe", status_code=200, operation_id="serverUnsubscribe",
          responses=responses(ErrorCode.INVALID_VALUE, ErrorCode.FORBIDDEN))
    async def unsubscribe(self, request: Request[Any, Any, Any], state: State, user_id: FromPath[str],
                          data: JSONBody[SkipValidation[Unsubscribe]]) -> Done:
        """Drop the user's subscriptions to ``channels`` on every node (``subscriptions.revoked`` on their
        ``user:`` channel says which). For a ``claims`` namespace, also stop listing the channel in the
        tokens you mint, or they can subscribe again."""
        gw, app_id = await _app(request)
        data = _body(Unsubscribe, data)
        channels = [_channel(gw, c, app_id) for c in data.channels]
        await _control(gw, user_id, "subscriptions.revoked", {"channels": channels, "by": app_id},
                       Meta(o=user_id, x="unsubscribe", c=channels))
        return Done(user_id=user_id, action="unsubscribe")

    @post("/moderate", status_code=202, operation_id="serverModerate",
          responses=responses(ErrorCode.CONFLICT, ErrorCode.INVALID_CONTENT, ErrorCode.CONTENT_TOO_LONG))
    async def moderate(self, request: Request[Any, Any, Any],
                       data: JSONBody[SkipValidation[ModerateRequest]]) -> Response[apps.ItemView]:
        """Moderate a text: scored by the moderation workers, flagged or hidden by the same policy as our own
        content, cased in the moderator console under your app. 200 with the decision when ``wait`` and it
        came in time; else 202 with ``state: pending``."""
        gw, app_id = await _app(request)
        data = _body(ModerateRequest, data)

        async def body(conn: Any) -> tuple[uuid.UUID, bool]:
            return await apps.submit_item(conn, app_id, content_type=data.content_type, content_id=data.content_id,
                                          user_id=data.author_id, text=data.text)

        announce = Announcement(lambda _conn, r: [job("app_item", r[0])] if r[1] else [])
        try:
            item_id, _ = await in_transaction(gw.pool, body, announce)
        except WriteError as err:
            raise ApiError(err.code, err.message) from err
        gw.announce(announce)
        view = await apps.item_view(gw.pool, item_id, app_id)
        if data.wait and view.decision is None:
            view = await _scored(gw, item_id, app_id)
        return Response(view, status_code=202 if view.state == "pending" else 200)

    @get("/moderation/{item_id:str}", operation_id="serverModeration", responses=responses(ErrorCode.NOT_FOUND))
    async def moderation(self, request: Request[Any, Any, Any], item_id: FromPath[str]) -> apps.ItemView:
        """An item you sent (or a publication on one of your app's namespaces): its state, scores, decision,
        case and moderator resolution."""
        gw, app_id = await _app(request)
        try:
            return await apps.item_view(gw.pool, item_id, app_id)
        except WriteError as err:
            raise ApiError(err.code, err.message) from err


async def _control(gw: Gateway, user_id: str, name: str, data: object, meta: Meta) -> None:
    try:
        await gw.publisher.publish(f"user:{user_id}", name, data, meta)
    except REDIS_DOWN as err:
        raise _redis_down(err) from err


async def _scored(gw: Gateway, item_id: uuid.UUID, app_id: str) -> apps.ItemView:
    """The item once a worker scored it (the worker pushes its id to a list it waits on), or as it
    stands after ``VYBE_MODERATE_WAIT_S``."""
    key = f"{gw.keys.prefix}scored:{item_id}"
    # Redis down: answer with the stored state (pending); the webhook or a read brings the rest.
    with contextlib.suppress(*REDIS_DOWN):
        await gw.waits.blpop([key], timeout=gw.settings.moderate_wait_s)
    return await apps.item_view(gw.pool, item_id, app_id)

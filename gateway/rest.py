"""REST: what a page or an app needs without a socket.

Writes reuse the socket's command types and handlers (``gateway.commands``), so
both doors validate, store and publish identically; only the framing differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery

from db import moderation as mdb
from db import writes
from db.pool import UNREACHABLE
from gateway import protocol as p
from gateway.auth import AuthError, Identity
from gateway.commands import CommandError, handle, unavailable

if TYPE_CHECKING:
    from gateway.context import Gateway

_STATUS = {
    "not_found": 404, "forbidden": 403, "auth_failed": 401, "token_expired": 401, "auth_required": 401,
    "rate_limited": 429, "conflict": 409, "content_unavailable": 409, "unavailable": 503, "internal": 500,
}


class ApiError(HTTPException):
    """An error with our stable code in the body: ``{"code", "message"}`` (and ``retry_after``)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status_code=_STATUS.get(code, 422), detail=message)
        self.code = code
        self.retry_after = retry_after


def _error_response(_: Request[Any, Any, Any], exc: ApiError) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"code": exc.code, "message": str(exc.detail)}
    headers = {}
    if exc.retry_after is not None:
        body["retry_after"] = exc.retry_after
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return Response(body, status_code=exc.status_code, headers=headers)


def _unreachable_response(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """PostgreSQL down under a read (writes go through the command handlers): 503, as on the socket."""
    err = unavailable("PostgreSQL")
    return _error_response(request, ApiError(err.code, err.message, err.retry_after))


def error_handlers() -> dict[int | type[Exception], Any]:
    handlers: dict[int | type[Exception], Any] = {ApiError: _error_response}
    for kind in UNREACHABLE:
        if issubclass(kind, Exception):
            handlers[kind] = _unreachable_response
    return handlers


class Actor(msgspec.Struct):
    """The REST caller in the shape the command handlers need (like a Connection)."""

    gw: Gateway
    user_id: str
    is_moderator: bool
    blocked: frozenset[str]


async def _actor(request: Request[Any, Any, Any]) -> Actor:
    gw = request.app.state.gateway
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token:
        raise ApiError("auth_required", "send Authorization: Bearer <token>")
    try:
        identity: Identity = gw.verifier.verify(token.strip())
    except AuthError as err:
        raise ApiError(err.code, str(err)) from err
    blocked = await gw.on_first_auth(identity)
    return Actor(gw, identity.user_id, identity.is_moderator, frozenset(blocked))


async def _run(request: Request[Any, Any, Any], cmd: Any) -> Any:
    actor = await _actor(request)
    try:
        return (await handle(actor, cmd)).ack
    except CommandError as err:
        raise ApiError(err.code, err.message, err.retry_after) from err


def _decode(body: bytes, kind: type[Any], **extra: Any) -> Any:
    try:
        raw = msgspec.json.decode(body) if body else {}
        if not isinstance(raw, dict):
            raise ApiError("invalid", "body must be a JSON object")
        return msgspec.convert({**raw, **extra}, kind)
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise ApiError("invalid", str(err)) from err


class RestController(Controller):
    path = "/api"
    tags = ["api"]

    @get("/feed")
    async def feed(self, request: Request[Any, Any, Any], state: State, cursor: FromQuery[str | None] = None,
                   limit: FromQuery[int] = 20, looproom_id: FromQuery[str | None] = None) -> Any:
        """The feed, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
        actor = await _actor(request)
        try:
            return await writes.feed_page(
                state.gateway.pool, actor.user_id, limit=max(1, min(limit, 100)), cursor=cursor,
                looproom_id=looproom_id, viewer_is_moderator=actor.is_moderator,
                premoderation=state.gateway.settings.premoderation,
            )
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err

    @get("/vybes/{vybe_id:str}")
    async def vybe(self, request: Request[Any, Any, Any], state: State, vybe_id: FromPath[str],
                   cursor: FromQuery[str | None] = None) -> Any:
        """One vybe with a page of its comments."""
        actor = await _actor(request)
        try:
            gw = state.gateway
            opts = {"viewer_is_moderator": actor.is_moderator, "premoderation": gw.settings.premoderation}
            vybe = await writes.get_vybe(gw.pool, vybe_id, viewer_id=actor.user_id, **opts)
            comments = await writes.vybe_comments(gw.pool, vybe_id, actor.user_id, cursor=cursor, **opts)
            return {"vybe": vybe, "comments": comments}
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err

    @post("/vybes", status_code=201)
    async def post_vybe(self, request: Request[Any, Any, Any]) -> Any:
        """Share a vybe (same fields as the socket's ``post_vybe``)."""
        return await _run(request, _decode(await request.body(), p.PostVybe))

    @post("/vybes/{vybe_id:str}/comments", status_code=201)
    async def comment(self, request: Request[Any, Any, Any], vybe_id: FromPath[str]) -> Any:
        return await _run(request, _decode(await request.body(), p.CommentCmd, vybe_id=vybe_id))

    @post("/vybes/{vybe_id:str}/share", status_code=200)
    async def share(self, request: Request[Any, Any, Any], vybe_id: FromPath[str]) -> Any:
        return await _run(request, _decode(await request.body(), p.Share, vybe_id=vybe_id))

    @post("/reactions", status_code=200)
    async def react(self, request: Request[Any, Any, Any]) -> Any:
        return await _run(request, _decode(await request.body(), p.React))

    @post("/reactions/remove", status_code=200)
    async def unreact(self, request: Request[Any, Any, Any]) -> Any:
        return await _run(request, _decode(await request.body(), p.Unreact))

    @post("/reports", status_code=200)
    async def report(self, request: Request[Any, Any, Any]) -> Any:
        return await _run(request, _decode(await request.body(), p.ReportCmd))

    @delete("/vybes/{vybe_id:str}", status_code=204)
    async def delete_vybe(self, request: Request[Any, Any, Any], state: State, vybe_id: FromPath[str]) -> None:
        actor = await _actor(request)
        try:
            await writes.delete_vybe(state.gateway.pool, actor.user_id, vybe_id)
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err

    @delete("/comments/{comment_id:str}", status_code=204)
    async def delete_comment(self, request: Request[Any, Any, Any], state: State, comment_id: FromPath[str]) -> None:
        actor = await _actor(request)
        try:
            await writes.delete_comment(state.gateway.pool, actor.user_id, comment_id)
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err


class ModerationController(Controller):
    """The moderator queue and actions (MODERATOR and ADMIN only)."""

    path = "/api/mod"
    tags = ["moderation"]

    @get("/queue")
    async def queue(self, request: Request[Any, Any, Any], state: State, limit: FromQuery[int] = 100) -> Any:
        """Open cases, oldest first, each with everything needed to decide."""
        actor = await _actor(request)
        if not actor.is_moderator:
            raise ApiError("forbidden", "the moderation queue is for MODERATOR and ADMIN roles")
        return await mdb.open_queue(state.gateway.pool, max(1, min(limit, 500)))

    @post("/cases/{case_id:str}/claim", status_code=200)
    async def claim(self, request: Request[Any, Any, Any], case_id: FromPath[str]) -> Any:
        """Claim (``{"version": n}``) or release (``{"version": n, "release": true}``) a case."""
        return await _run(request, _decode(await request.body(), p.Claim, case_id=case_id))

    @post("/cases/{case_id:str}/resolve", status_code=200)
    async def resolve(self, request: Request[Any, Any, Any], case_id: FromPath[str]) -> Any:
        """Resolve: ``{"version": n, "action": "remove|hide|restore|dismiss", "note": "..."}``."""
        return await _run(request, _decode(await request.body(), p.Resolve, case_id=case_id))

"""REST: what a page or an app needs without a socket.

Request bodies are the socket's commands without ``type`` (``gateway.protocol``'s
``*Body`` structs) and answers are the write path's result structs, so the
OpenAPI document states every body and answer, and both doors validate, store
and publish identically (``gateway.commands``). Every error, ours or Litestar's
(a bad query parameter, an unknown path), has the body ``{code, message}`` and
the status of its code in the error catalog (``common.errors``); each route
declares the codes it can answer with.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Link, OpenAPI, OpenAPIResponse
from litestar.params import FromPath, FromQuery, JSONBody, Parameter, SkipValidation

from common import errors, events
from common.errors import ErrorBody, ErrorCode
from db import learning, writes
from db import moderation as mdb
from db.outbox import Announcement
from db.pool import UNREACHABLE
from db.writes.errors import WriteError
from db.writes.feed import CURSOR_PATTERN
from gateway import protocol as p
from gateway.auth import AuthError, Identity
from gateway.commands import CommandError, handle, unavailable
from gateway.context import Gateway

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.handlers import BaseRouteHandler

log = logging.getLogger(__name__)


class ApiError(HTTPException):
    """An error with a catalog code: ``{"code", "message"}`` (and ``retry_after``)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(status_code=errors.status(code), detail=message)
        self.code = code
        self.retry_after = retry_after


def _error_response(code: str, message: str, status: int, retry_after: float | None = None,
                    headers: dict[str, str] | None = None) -> Response[ErrorBody]:
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return Response(ErrorBody(code=code, message=message, retry_after=retry_after), status_code=status,
                    headers=headers)


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[ErrorBody]:
    return _error_response(exc.code, str(exc.detail), exc.status_code, exc.retry_after)


# Litestar's own refusals, in our shape: the status stays, the code names it.
_HTTP_CODES = {400: ErrorCode.MALFORMED, 401: ErrorCode.AUTH_REQUIRED, 403: ErrorCode.FORBIDDEN,
               404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED, 413: ErrorCode.FRAME_TOO_LARGE,
               422: ErrorCode.INVALID}


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.INTERNAL)
    status = exc.status_code if code != ErrorCode.INTERNAL else 500
    message = str(exc.detail) if code != ErrorCode.INTERNAL else "internal error"
    return _error_response(code, message, status, headers=exc.headers)


def _validation_error(exc: ValidationException) -> Response[ErrorBody]:
    """A body or parameter that does not fit the schema: ``invalid`` (422), or for a stored text
    field ``invalid_content`` / ``content_too_long``, as on the socket; a body that is not JSON at
    all: ``malformed`` (400)."""
    detail = str(exc.detail)
    extra = [e for e in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(e, dict)]
    if not extra:  # the body is not JSON at all
        return _error_response(ErrorCode.MALFORMED, detail, 400)
    found = "; ".join(f"{e.get('key', '?')}: {e.get('message', '')}" for e in extra)
    codes = [ErrorCode.INVALID_CURSOR if e.get("key") in ("cursor", "after")
             else p.invalid_code(str(e.get("message", "")), str(e.get("key", ""))) for e in extra]
    code = codes[0] if len(set(codes)) == 1 else ErrorCode.INVALID
    return _error_response(code, f"{detail}: {found}" if found else detail, errors.status(code))


def _unreachable(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """PostgreSQL down under a read (writes go through the command handlers): 503, as on the socket."""
    err = unavailable("PostgreSQL")
    return _error_response(err.code, err.message, errors.status(err.code), err.retry_after)


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return _error_response(ErrorCode.INTERNAL, "internal error", 500, 1.0)


def error_handlers() -> dict[int | type[Exception], Any]:
    handlers: dict[int | type[Exception], Any] = {ApiError: _api_error, HTTPException: _http_error,
                                                   500: _internal}
    for kind in UNREACHABLE:
        if issubclass(kind, Exception):
            handlers[kind] = _unreachable
    return handlers


def responses(*codes: str) -> dict[int, ResponseSpec]:
    """The OpenAPI ``responses`` of a route that can answer with ``codes`` (plus what every
    authenticated route can: a bad token, a bad parameter, a backend down)."""
    by_status: dict[int, list[str]] = {}
    for code in (ErrorCode.AUTH_REQUIRED, ErrorCode.AUTH_FAILED, ErrorCode.TOKEN_EXPIRED, ErrorCode.MALFORMED,
                 ErrorCode.INVALID, ErrorCode.UNAVAILABLE, *codes):
        by_status.setdefault(errors.status(code), []).append(code)
    return {status: ResponseSpec(data_container=ErrorBody, generate_examples=False,
                                 description="Error: " + ", ".join(f"`{c}`" for c in dict.fromkeys(group)))
            for status, group in sorted(by_status.items())}


_WRITE = (ErrorCode.INVALID_CONTENT, ErrorCode.CONTENT_TOO_LONG, ErrorCode.INVALID_VALUE, ErrorCode.NOT_FOUND,
          ErrorCode.CONTENT_UNAVAILABLE, ErrorCode.CONFLICT)
_MODERATE = (ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT)

Limit = Annotated[int, Parameter(ge=1, le=100, description="Page size, 1 to 100.")]
Cursor = Annotated[str | None, Parameter(
    description="`next_cursor` of the previous page; empty or absent: the first page.",
    pattern=f"^$|{CURSOR_PATTERN}")]


class Actor(msgspec.Struct):
    """The REST caller in the shape the command handlers need (like a Connection)."""

    gw: Gateway
    user_id: str
    is_moderator: bool
    blocked: frozenset[str]


def _identity(connection: ASGIConnection[Any, Any, Any, Any]) -> Identity:
    """The caller's verified token, checked once per request (by the controllers' guard, before the body and
    the query are read: a request without a valid token is refused for that, whatever else is wrong with it)."""
    known = connection.state.get("identity")
    if isinstance(known, Identity):
        return known
    header = connection.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise ApiError(ErrorCode.AUTH_REQUIRED, "send Authorization: Bearer <token>")
    try:
        identity: Identity = connection.app.state.gateway.verifier.verify(token.strip())
    except AuthError as err:
        raise ApiError(err.code, str(err)) from err
    connection.state.identity = identity
    return identity


def _signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the member API: the token first (before, a malformed body was answered 400/422 to anyone)."""
    if connection.scope.get("method") != "OPTIONS":
        _identity(connection)


def _moderating(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of the moderator API: the token, then the role, before anything else is read."""
    if connection.scope.get("method") != "OPTIONS" and not _identity(connection).is_moderator:
        raise ApiError(ErrorCode.FORBIDDEN, "moderation is for MODERATOR and ADMIN roles")


async def _actor(request: Request[Any, Any, Any]) -> Actor:
    gw = request.app.state.gateway
    identity = _identity(request)
    blocked = await gw.on_first_auth(identity)
    return Actor(gw, identity.user_id, identity.is_moderator, frozenset(blocked))


_Ack = TypeVar("_Ack")


async def _run(request: Request[Any, Any, Any], cmd: Any, ack: type[_Ack]) -> _Ack:
    """Run ``cmd`` as the caller. ``ack`` names the type of its ack (``protocol.ack_results``)
    for the type checker; the command handlers return it untyped."""
    actor = await _actor(request)
    try:
        return cast("_Ack", (await handle(actor, cmd)).ack)
    except CommandError as err:
        raise ApiError(err.code, err.message, err.retry_after) from err


def _command(kind: type[Any], body: object, **path: str) -> Any:
    """The socket command of a REST call: its body (decoded strictly, as the socket decodes: ``0``
    is not ``false``) plus what the path names."""
    raw = {} if body is None else body
    if not isinstance(raw, dict):
        raise ApiError(ErrorCode.INVALID, "the body must be a JSON object")
    # JSON has one number type: 1.0 is the integer 1 (as JSON Schema says).
    raw = {k: int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v for k, v in raw.items()}
    try:
        return msgspec.convert({**raw, **path}, kind)
    except msgspec.ValidationError as err:
        raise ApiError(p.invalid_code(str(err)), str(err)) from err


class RestController(Controller):
    path = "/api"
    tags = ("api",)
    security = ({"BearerToken": []},)
    guards = [_signed_in]  # noqa: RUF012 (litestar's attribute)

    @get("/feed", operation_id="getFeed", responses=responses(ErrorCode.INVALID_CURSOR, ErrorCode.NOT_FOUND))
    async def feed(self, request: Request[Any, Any, Any], state: State, cursor: FromQuery[Cursor] = None,
                   limit: FromQuery[Limit] = 20, looproom_id: FromQuery[str | None] = None) -> writes.Page:
        """The feed as you may see it, newest first; pass ``next_cursor`` back as ``cursor``."""
        actor = await _actor(request)
        try:
            return await writes.feed_page(
                state.gateway.pool, actor.user_id, limit=limit, cursor=cursor or None, looproom_id=looproom_id,
                viewer_is_moderator=actor.is_moderator, premoderation=state.gateway.settings.premoderation,
            )
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err

    @get("/vybes/{vybe_id:str}", responses=responses(ErrorCode.NOT_FOUND, ErrorCode.INVALID_CURSOR),
         operation_id="getVybe")
    async def vybe(self, request: Request[Any, Any, Any], state: State, vybe_id: FromPath[str],
                   cursor: FromQuery[Cursor] = None) -> writes.VybeDetail:
        """One vybe with a page of its comments (oldest first)."""
        actor = await _actor(request)
        try:
            gw = state.gateway
            opts = {"viewer_is_moderator": actor.is_moderator, "premoderation": gw.settings.premoderation}
            vybe = await writes.get_vybe(gw.pool, vybe_id, viewer_id=actor.user_id, **opts)
            comments = await writes.vybe_comments(gw.pool, vybe_id, actor.user_id, cursor=cursor or None, **opts)
            return writes.VybeDetail(vybe=vybe, comments=comments)
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err

    @post("/vybes", status_code=201, operation_id="postVybe", responses=responses(*_WRITE))
    async def post_vybe(self, request: Request[Any, Any, Any],
                        data: JSONBody[SkipValidation[p.PostVybeBody]]) -> writes.Vybe:
        """Share a vybe (the socket's ``post_vybe``)."""
        return await _run(request, _command(p.PostVybe, data), writes.Vybe)

    @post("/vybes/{vybe_id:str}/comments", status_code=201, operation_id="postComment",
          responses=responses(*_WRITE, ErrorCode.INVALID_PARENT))
    async def comment(self, request: Request[Any, Any, Any], vybe_id: FromPath[str],
                      data: JSONBody[SkipValidation[p.CommentBody]]) -> writes.CommentView:
        """Comment on a vybe, or reply to one of its comments (``parent_id``)."""
        return await _run(request, _command(p.CommentCmd, data, vybe_id=vybe_id), writes.CommentView)

    @post("/vybes/{vybe_id:str}/share", status_code=200, operation_id="shareVybe", responses=responses(*_WRITE))
    async def share(self, request: Request[Any, Any, Any], vybe_id: FromPath[str],
                    data: JSONBody[SkipValidation[p.Request | None]] = None) -> writes.ShareView:
        """Share a vybe (the body is optional: ``{"id": ...}`` makes a retry safe)."""
        return await _run(request, _command(p.Share, data, vybe_id=vybe_id), writes.ShareView)

    @post("/reactions", status_code=200, operation_id="react", responses=responses(*_WRITE))
    async def react(self, request: Request[Any, Any, Any],
                    data: JSONBody[SkipValidation[p.ReactBody]]) -> writes.ReactionView:
        """Add a reaction (idempotent by user, target and reaction)."""
        return await _run(request, _command(p.React, data), writes.ReactionView)

    @post("/reactions/remove", status_code=200, operation_id="unreact", responses=responses(*_WRITE))
    async def unreact(self, request: Request[Any, Any, Any],
                      data: JSONBody[SkipValidation[p.ReactBody]]) -> writes.ReactionView:
        """Remove a reaction (idempotent)."""
        return await _run(request, _command(p.Unreact, data), writes.ReactionView)

    @post("/reports", status_code=200, operation_id="report", responses=responses(*_WRITE))
    async def report(self, request: Request[Any, Any, Any],
                     data: JSONBody[SkipValidation[p.ReportBody]]) -> writes.ReportResult:
        """Report a vybe, a comment or a user (a repeat by you returns your first report)."""
        return await _run(request, _command(p.ReportCmd, data), writes.ReportResult)

    @post("/appeals", status_code=200, operation_id="appeal", responses=responses(*_WRITE))
    async def appeal(self, request: Request[Any, Any, Any],
                     data: JSONBody[SkipValidation[p.AppealBody]]) -> mdb.AppealView:
        """Appeal the hiding or removal of your vybe or comment, once, with a short statement: the case
        reopens for a moderator other than the one who acted; the outcome comes as ``moderation.outcome``."""
        return await _run(request, _command(p.AppealCmd, data), mdb.AppealView)

    @get("/me/moderated", operation_id="getMyModerated", responses=responses())
    async def my_moderated(self, request: Request[Any, Any, Any], state: State,
                           limit: FromQuery[Annotated[int, Parameter(ge=1, le=500)]] = 100) -> list[mdb.Moderated]:
        """Your vybes and comments that moderation hid or removed, newest decision first: the moderator's message
        to you, your appeal's state, and whether you may still appeal (``POST /api/appeals``). For an app that
        was away when ``moderation.outcome`` came, or speaks REST only: hidden content leaves every read."""
        actor = await _actor(request)
        return await mdb.moderated_of(state.gateway.pool, actor.user_id, limit)

    @delete("/vybes/{vybe_id:str}", status_code=204, operation_id="deleteVybe",
            responses=responses(ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND))
    async def delete_vybe(self, request: Request[Any, Any, Any], state: State, vybe_id: FromPath[str]) -> None:
        """Delete your vybe with its comments and reactions."""
        actor = await _actor(request)
        gone = Announcement.of(events.deleted)
        try:
            await writes.delete_vybe(state.gateway.pool, actor.user_id, vybe_id, gone)
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err
        state.gateway.announce(gone)

    @delete("/comments/{comment_id:str}", status_code=204, operation_id="deleteComment",
            responses=responses(ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND))
    async def delete_comment(self, request: Request[Any, Any, Any], state: State, comment_id: FromPath[str]) -> None:
        """Delete your comment with its replies."""
        actor = await _actor(request)
        gone = Announcement.of(events.deleted)
        try:
            await writes.delete_comment(state.gateway.pool, actor.user_id, comment_id, gone)
        except writes.WriteError as err:
            raise ApiError(err.code, err.message) from err
        state.gateway.announce(gone)


class ModerationController(Controller):
    """The moderator queue and actions (MODERATOR and ADMIN only)."""

    path = "/api/mod"
    tags = ("moderation",)
    security = ({"BearerToken": []},)
    guards = [_moderating]  # noqa: RUF012 (litestar's attribute)

    @get("/queue", operation_id="getQueue", responses=responses(ErrorCode.FORBIDDEN, ErrorCode.INVALID_CURSOR))
    async def queue(self, request: Request[Any, Any, Any], state: State,
                    limit: FromQuery[Annotated[int, Parameter(ge=1, le=500)]] = 100,
                    appeals: FromQuery[Annotated[bool | None, Parameter(
                        description="true: only appeals; false: no appeals; absent: every open case")]] = None,
                    app: FromQuery[Annotated[str | None, Parameter(
                        description="only this app's cases (`vybe`: this app's own content)",
                        pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]] = None,
                    after: FromQuery[Annotated[str | None, Parameter(
                        description="the next page: the `cursor` of the last case of the page before (a page "
                                    "shorter than `limit` is the last)", pattern=CURSOR_PATTERN)]] = None,
                    ) -> list[mdb.CaseView]:
        """Open cases, oldest first, each with everything needed to decide; paged by ``after``."""
        await _moderator(request)
        try:
            return await mdb.open_queue(state.gateway.pool, limit, appeals, app, after)
        except WriteError as err:
            raise ApiError(err.code, err.message, err.retry_after) from err

    @post("/cases/{case_id:str}/claim", status_code=200, operation_id="claimCase", responses=responses(*_MODERATE))
    async def claim(self, request: Request[Any, Any, Any], case_id: FromPath[str],
                    data: JSONBody[SkipValidation[p.ClaimBody]]) -> mdb.CaseAck:
        """Claim (``{"version": n}``) or release (``{"version": n, "release": true}``) a case."""
        return await _run(request, _command(p.Claim, data, case_id=case_id), mdb.CaseAck)

    @post("/cases/{case_id:str}/resolve", status_code=200, operation_id="resolveCase", responses=responses(*_MODERATE))
    async def resolve(self, request: Request[Any, Any, Any], case_id: FromPath[str],
                      data: JSONBody[SkipValidation[p.ResolveBody]]) -> mdb.CaseAck:
        """Resolve: ``{"version": n, "action": "remove|hide|restore|dismiss", "note": "...", "labels": [...]}``.
        The decision is a label the model learns from (``vybe moderation retrain``)."""
        return await _run(request, _command(p.Resolve, data, case_id=case_id), mdb.CaseAck)

    @post("/cases/{case_id:str}/reopen", status_code=200, operation_id="reopenCase", responses=responses(*_MODERATE))
    async def reopen(self, request: Request[Any, Any, Any], case_id: FromPath[str],
                     data: JSONBody[SkipValidation[p.ReopenBody]]) -> mdb.CaseAck:
        """Undo a resolution (``{"version": n}``): the case is open again, its content back under review."""
        return await _run(request, _command(p.Reopen, data, case_id=case_id), mdb.CaseAck)

    @get("/resolved", operation_id="getResolved", responses=responses(ErrorCode.FORBIDDEN))
    async def resolved(self, request: Request[Any, Any, Any], state: State,
                       limit: FromQuery[Annotated[int, Parameter(ge=1, le=500)]] = 50) -> list[mdb.CaseView]:
        """Resolved cases, most recent first (to review and reopen)."""
        await _moderator(request)
        return await mdb.recently_resolved(state.gateway.pool, limit)

    @get("/cases/{case_id:str}/context", operation_id="getCaseContext",
         responses=responses(ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND))
    async def context(self, request: Request[Any, Any, Any], state: State, case_id: FromPath[str]) -> mdb.CaseContext:
        """Around a case: the vybe a comment answers, the author's earlier cases and their outcomes, and
        how often each reporter's past reports were upheld."""
        await _moderator(request)
        try:
            return await mdb.case_context(state.gateway.pool, case_id)
        except WriteError as err:
            raise ApiError(err.code, err.message, err.retry_after) from err

    @get("/stats", operation_id="getModerationStats", responses=responses(ErrorCode.FORBIDDEN))
    async def stats(self, request: Request[Any, Any, Any], state: State,
                    window: FromQuery[Annotated[int, Parameter(ge=60, le=31_536_000)]] = 2_592_000,
                    ) -> learning.Stats:
        """How right the model's flags were, per label, by moderators' decisions over ``window`` seconds
        (default 30 days): precision (flags confirmed) and recall (harm moderators found that the model
        had flagged; harm nobody reported is not counted)."""
        await _moderator(request)
        return await learning.label_stats(state.gateway.pool, window)

    @get("/care", operation_id="getCareQueue", responses=responses(ErrorCode.FORBIDDEN, ErrorCode.INVALID_CURSOR))
    async def care(self, request: Request[Any, Any, Any], state: State,
                   limit: FromQuery[Annotated[int, Parameter(ge=1, le=500)]] = 100,
                   after: FromQuery[Annotated[str | None, Parameter(
                       description="the next page: the `cursor` of the last care case of the page before (a page "
                                   "shorter than `limit` is the last)", pattern=CURSOR_PATTERN)]] = None,
                   ) -> list[learning.CareCase]:
        """Open care cases, oldest first: posts that read as their author's own self-harm disclosure.
        They are not abuse and stay visible; their authors were sent the care message. Paged by ``after``."""
        await _moderator(request)
        try:
            return await learning.care_queue(state.gateway.pool, limit, after)
        except WriteError as err:
            raise ApiError(err.code, err.message, err.retry_after) from err

    @post("/care/{care_id:str}/claim", status_code=200, operation_id="claimCareCase", responses=responses(*_MODERATE))
    async def claim_care(self, request: Request[Any, Any, Any], state: State, care_id: FromPath[str],
                         data: JSONBody[SkipValidation[p.ClaimCareBody]]) -> learning.CareAck:
        """Say you are reaching out (``{"version": n}``), so no second moderator contacts the member, until the
        claim lapses or you let it go (``{"version": n, "release": true}``); others cannot close it meanwhile."""
        actor = await _moderator(request)
        body = _command(p.ClaimCareBody, data)
        gw = state.gateway
        claimed = Announcement.of(lambda r: events.care_claimed(r.care))
        try:
            done = await learning.claim_care(gw.pool, care_id, body.version, actor.user_id,
                                             gw.settings.care_claim_lease_s,
                                             body.release, claimed, request_id=body.id or None)
        except WriteError as err:
            raise ApiError(err.code, err.message, err.retry_after) from err
        gw.announce(claimed)
        return learning.CareAck(**msgspec.structs.asdict(done.care), replayed=done.replayed)

    @post("/care/{care_id:str}/close", status_code=200, operation_id="closeCareCase", responses=responses(*_MODERATE))
    async def close_care(self, request: Request[Any, Any, Any], state: State, care_id: FromPath[str],
                         data: JSONBody[SkipValidation[p.CloseCareBody]]) -> learning.CareAck:
        """Close a care case (``{"version": n, "note": "reached out by DM"}``); the note stays in the audit log."""
        actor = await _moderator(request)
        body = _command(p.CloseCareBody, data)
        gw = state.gateway
        closed = Announcement.of(lambda r: events.care_closed(r.care))
        try:
            done = await learning.close_care(gw.pool, care_id, body.version, actor.user_id, body.note, closed,
                                             request_id=body.id or None)
        except WriteError as err:
            raise ApiError(err.code, err.message, err.retry_after) from err
        gw.announce(closed)
        return learning.CareAck(**msgspec.structs.asdict(done.care), replayed=done.replayed)


async def _moderator(request: Request[Any, Any, Any]) -> Actor:
    actor = await _actor(request)
    if not actor.is_moderator:
        raise ApiError(ErrorCode.FORBIDDEN, "moderation is for MODERATOR and ADMIN roles")
    return actor


def _link(operation_id: str, description: str, parameters: dict[str, str] | None = None,
          body: dict[str, object] | None = None) -> Link:
    return Link(operation_id=operation_id, description=description, parameters=parameters, request_body=body)


# What each answer lets a client do next (OpenAPI links): a reader finds the flow, and schemathesis's
# stateful phase chains real ids instead of guessing them.
_LINKS: dict[tuple[str, str, str], dict[str, Link]] = {
    ("/api/vybes", "post", "201"): {
        "GetVybe": _link("getVybe", "Read it with its comments", {"vybe_id": "$response.body#/id"}),
        "Comment": _link("postComment", "Comment on it", {"vybe_id": "$response.body#/id"},
                         {"content": "Me too", "parent_id": None}),
        "Share": _link("shareVybe", "Share it", {"vybe_id": "$response.body#/id"}),
        "React": _link("react", "React to it", body={"target_type": "SHARED_VYBE", "target_id": "$response.body#/id",
                                                      "reaction": "HEART"}),
        "Report": _link("report", "Report it", body={"target_type": "SHARED_VYBE", "target_id": "$response.body#/id"}),
    },
    ("/api/vybes/{vybe_id}/comments", "post", "201"): {
        "Reply": _link("postComment", "Reply to it", {"vybe_id": "$response.body#/shared_vybe_id"},
                       {"content": "Thank you", "parent_id": "$response.body#/id"}),
        "React": _link("react", "React to it", body={"target_type": "COMMENT", "target_id": "$response.body#/id",
                                                      "reaction": "HEART"}),
    },
    ("/api/mod/cases/{case_id}/claim", "post", "200"): {
        "Resolve": _link("resolveCase", "Resolve the case you claimed", {"case_id": "$response.body#/case_id"},
                         {"version": "$response.body#/version", "action": "dismiss"}),
    },
}


def add_links(schema: OpenAPI) -> None:
    """Add :data:`_LINKS` to the generated OpenAPI document."""
    for (path, method, status), links in _LINKS.items():
        item = schema.paths[path] if schema.paths else None
        operation = getattr(item, method, None)
        response = operation.responses.get(status) if operation and operation.responses else None
        if isinstance(response, OpenAPIResponse):
            response.links = {**(response.links or {}), **links}

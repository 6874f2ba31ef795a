"""The Litestar application: the WebSocket endpoint, REST, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.handlers import asgi
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.types import Receive, Send

from common.bus import job_backlog
from common.redisconn import REDIS_DOWN
from gateway.context import Gateway, gateway_lifespan
from gateway.pages import PAGE_HANDLERS
from gateway.protocol import json_schema
from gateway.rest import ModerationController, RestController, add_links, error_handlers
from gateway.server_api import ServerController

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from common.settings import Settings


WS_PATH = "/ws"
_PROTOCOL_SCHEMA = json_schema()


@asgi(WS_PATH, copy_scope=False)
async def websocket_endpoint(scope: Any, receive: Receive, send: Send) -> None:
    """``/ws`` over plain HTTP gets 426. WebSocket upgrades never reach the app: the gateway's own
    protocol (``gateway.wsproto.WebSocket``, installed by ``gateway.server``) takes the socket from
    uvicorn at the upgrade; served without it, an upgrade is refused."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1011, "reason": "serve with `vybe gateway`"})
        return
    start: Any = {"type": "http.response.start", "status": 426,
                  "headers": [(b"content-type", b"text/plain"), (b"upgrade", b"websocket")]}
    await send(start)
    body: Any = {"type": "http.response.body", "body": b"WebSocket endpoint: connect with ws://.../ws\n"}
    await send(body)


@get("/healthz", sync_to_thread=False, tags=["operations"])
def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", tags=["operations"])
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Readiness: PostgreSQL and Redis answer, pub/sub delivers, and every background loop runs."""
    gw: Gateway = state.gateway
    checks = await gw.ready()
    ready = all(all(v.values()) if isinstance(v, dict) else v for v in checks.values()) and not gw.draining
    return Response({"ready": ready, "draining": gw.draining, **checks}, status_code=200 if ready else 503)


@get("/schema/protocol.json", sync_to_thread=False, tags=["operations"])
def protocol_schema() -> dict[str, object]:
    """The WebSocket protocol (``/ws``) as a JSON Schema, generated from the structs the server decodes
    and encodes with (``gateway.protocol``)."""
    return _PROTOCOL_SCHEMA


@get("/metrics", tags=["operations"], media_type="text/plain; version=0.0.4")
async def metrics(state: State) -> bytes:
    """Prometheus metrics of this node."""
    gw: Gateway = state.gateway
    gw.job_backlog = None  # without an answer from Redis: no figure rather than a stale one
    with contextlib.suppress(*REDIS_DOWN, TimeoutError):
        gw.job_backlog = await asyncio.wait_for(job_backlog(gw.redis, gw.keys), 1.0)
    return gw.metrics.render()


def openapi_config() -> OpenAPIConfig:
    """``/schema``: the API reference page (Redoc, served from this package: no CDN, so it works
    offline) and ``/schema/openapi.json``; the socket protocol's schema is ``/schema/protocol.json``."""
    return OpenAPIConfig(
        title="Vybe Live", version="0.1.0", path="/schema",
        components=Components(security_schemes={
            "BearerToken": SecurityScheme(
                type="http", scheme="bearer", bearer_format="JWT",
                description="The same JWT as the socket's (claims: docs/protocol.md, Connecting and authenticating)"),
            "ApiKey": SecurityScheme(
                type="http", scheme="bearer", bearer_format="vk_<id>.<secret>",
                description="An app's API key, for trusted backends (`vybe apps create`, `vybe apps key`; "
                            "docs/server-api.md)")}),
        description="REST API of the Vybe Live gateway. The WebSocket protocol (`/ws`) is in docs/protocol.md "
                    "and its JSON Schema at `/schema/protocol.json`. Every error has the body `{code, message}` "
                    "(and `retry_after` where waiting helps); codes are listed in docs/protocol.md.",
        render_plugins=[
            RedocRenderPlugin(js_url="/static/vendor/redoc/redoc.standalone.js", google_fonts=False, path="/"),
            JsonRenderPlugin(path="/openapi.json"),
        ],
    )


def create_asgi(settings: Settings) -> Litestar:
    """What uvicorn serves (HTTP; WebSocket upgrades go to ``gateway.wsproto.WebSocket``)."""
    return create_app(settings)


def create_app(settings: Settings) -> Litestar:
    """The app for one gateway node; its resources live as long as its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with gateway_lifespan(settings) as gw:
            app.state.gateway = gw
            yield

    allow: dict[str, str] = {}

    def answer_options(request: Request[Any, Any, Any]) -> Response[None] | None:
        """OPTIONS lists every method of the path. (Litestar's own OPTIONS handler names only the
        methods of the path's first-registered handler when one path has several.)"""
        if request.method != "OPTIONS":
            return None
        methods = allow.get(next(iter(request.route_handler.paths), ""))
        return None if methods is None else Response(None, status_code=204, headers={"Allow": methods})

    app = Litestar(
        before_request=answer_options,
        route_handlers=[websocket_endpoint, healthz, readyz, metrics, protocol_schema, RestController,
                        ModerationController, ServerController, *PAGE_HANDLERS],
        lifespan=[lifespan],
        exception_handlers=error_handlers(),
        openapi_config=openapi_config(),
        debug=False,
    )
    add_links(app.openapi_schema)
    allow.update({r.path: ", ".join(sorted(r.methods)) for r in app.routes if isinstance(r, HTTPRoute)})
    return app


__all__ = ["Request", "create_app"]

"""The browser pages: the live feed (``GET /``) and the moderator console (``GET /mod``).

Plain HTML, ES modules and CSS committed under ``gateway/static`` (no build step,
nothing fetched from another origin: the Content-Security-Policy says so too).
The pages talk to the same gateway: REST under ``/api`` and the socket on ``/ws``.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from litestar.static_files import create_static_files_router

from moderation.policy import DEFAULT_FLAG, PolicyError, parse_thresholds

if TYPE_CHECKING:
    from litestar.types import ControllerRouterHandler

STATIC_DIR = Path(__file__).parent / "static"

# Same-origin only: scripts, styles and the socket ('self' covers ws:/wss: to this host).
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {
    "content-security-policy": _CSP,
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


@functools.cache
def _template(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _page(body: str) -> Response[str]:
    return Response(body, media_type=MediaType.HTML, headers=_HEADERS)


@get("/", include_in_schema=False, sync_to_thread=False)
def feed_page() -> Response[str]:
    """The live feed for a signed-in user."""
    return _page(_template("index.html"))


@get("/mod", include_in_schema=False, sync_to_thread=False)
def mod_page(state: State) -> Response[str]:
    """The moderator console. The flag thresholds in force, as the policy reads them from the same
    setting as the workers, are handed to the page as data (a meta tag) for the score bars."""
    settings: Any = state.gateway.settings
    try:
        flag, _ = parse_thresholds(settings.moderation_thresholds)
    except PolicyError:  # workers refuse to start on it; the console shows the defaults meanwhile
        flag = dict(DEFAULT_FLAG)
    thresholds = html.escape(json.dumps(flag, separators=(",", ":")), quote=True)
    return _page(_template("mod.html").replace("{{THRESHOLDS}}", thresholds))


static_files = create_static_files_router(
    path="/static", directories=[STATIC_DIR], name="static", include_in_schema=False,
    cache_control=None, send_as_attachment=False,
)

PAGE_HANDLERS: list[ControllerRouterHandler] = [feed_page, mod_page, static_files]

__all__ = ["PAGE_HANDLERS", "STATIC_DIR"]

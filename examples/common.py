"""What the sister-app examples share: where the gateway is, member tokens, and a member's inbox.

Your backend does three things with Vybe Live, and this module shows the first two:

1. it mints each member's JWT with the gateway's secret (HS256: ``sub``, ``name``, ``role``, ``iat``,
   ``exp``, and ``channels`` listing the ``claims`` channels the member may join, such as one
   ``chat:<match id>``): :func:`mint_member_token`;
2. it calls the server API with its app's API key (``vybe_client.VybeServer``): :meth:`Config.api`;
3. its members' apps hold a socket with that token (``vybe_client.VybeClient``): :meth:`Config.member`.

Configuration: ``vybe dev`` writes ``.vybe/dev.json`` (``{"http", "ws", "jwt_secret", "api_keys":
{app: key}}``); ``VYBE_DEV_FILE`` names another file (``vybe dev`` writes it to ``$VYBE_DATA_DIR/dev.json``).
These environment variables override it: ``VYBE_URL`` (``http://host:port``), ``VYBE_WS_URL``
(``ws://host:port/ws``, derived from ``VYBE_URL`` when unset), ``VYBE_JWT_SECRET``, and
``VYBE_API_KEY_<APP>`` (``VYBE_API_KEY_MIEL``, ``VYBE_API_KEY_SOULSEER``...).

Run an example against ``vybe dev`` started with the examples' namespaces:

    VYBE_NAMESPACES=examples/namespaces.toml .venv/bin/vybe dev     # terminal 1
    .venv/bin/python -m examples.miel                               # terminal 2

Each example is an ``async def run(config) -> report``; its ``__main__`` calls :func:`main`, which prints
the report as JSON and exits 1 when the flow did not work (``report["ok"]`` false), 2 without a config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from vybe_client import VybeClient, VybeError, VybeServer

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Mapping

    from vybe_client import Event

WAIT_S = 10.0
"""How long an example waits for something to happen before it calls the flow failed."""


class ConfigError(Exception):
    """No usable configuration: ``str()`` says what is missing."""


@dataclass(frozen=True)
class Config:
    """Where the gateway is, the JWT secret your backend signs members' tokens with, your API keys."""

    http: str
    """``http://host:port``: the server API and REST."""
    ws: str
    """``ws://host:port/ws``: members' sockets."""
    jwt_secret: str
    api_keys: Mapping[str, str] = field(default_factory=dict)
    """One API key per app (``miel``, ``soulseer``, ``opencircle``, ``vibeup``)."""
    wait_s: float = WAIT_S

    def token(self, user_id: str, *, name: str | None = None, role: str = "MEMBER",
              channels: Iterable[str] = (), ttl_s: int = 3600) -> str:
        """A member's JWT, as your backend mints it (see :func:`mint_member_token`)."""
        return mint_member_token(self.jwt_secret, user_id, name=name, role=role, channels=channels, ttl_s=ttl_s)

    def member(self, user_id: str, *, name: str | None = None, role: str = "MEMBER",
               channels: Iterable[str] = ()) -> VybeClient:
        """A member's socket (not connected yet: ``async with``), authenticated with a fresh token."""
        token = self.token(user_id, name=name, role=role, channels=channels)
        # event_buffer=0: the examples read events through callbacks (Inbox), not client.events().
        return VybeClient(self.ws, token=token, max_attempts=3, event_buffer=0)

    def api(self, app: str) -> VybeServer:
        """The server API with ``app``'s key (``async with config.api("miel") as api:``)."""
        key = self.api_keys.get(app)
        if not key:
            raise ConfigError(f"no API key for app {app!r}: set VYBE_API_KEY_{app.upper()}, or start `vybe dev` "
                              "with VYBE_NAMESPACES=examples/namespaces.toml (it makes one per app)")
        return VybeServer(self.http, key)


def mint_member_token(secret: str, user_id: str, *, name: str | None = None, role: str = "MEMBER",
                      channels: Iterable[str] = (), ttl_s: int = 3600) -> str:
    """HS256 JWT for one member. ``channels`` lists the channels of ``claims`` namespaces (``chat:m-81``,
    ``session:s-7``) this member may join: list only theirs; ``chat:*`` would open every chat."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "name": name or user_id, "role": role, "iat": now, "exp": now + ttl_s}
    channels = list(channels)
    if channels:
        claims["channels"] = channels
    return jwt.encode(claims, secret, algorithm="HS256")


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The dev file (``path``, else ``VYBE_DEV_FILE``, else ``.vybe/dev.json``), then the environment."""
    env = os.environ if environ is None else environ
    file = Path(path or env.get("VYBE_DEV_FILE") or ".vybe/dev.json")
    dev: dict[str, Any] = {}
    if file.exists():
        try:
            dev = json.loads(file.read_text())
        except ValueError as err:
            raise ConfigError(f"{file}: not JSON ({err})") from err
    http = env.get("VYBE_URL") or dev.get("http")
    ws = env.get("VYBE_WS_URL") or (_ws_of(env["VYBE_URL"]) if env.get("VYBE_URL") else dev.get("ws"))
    secret = env.get("VYBE_JWT_SECRET") or dev.get("jwt_secret")
    keys = dict(dev.get("api_keys") or {})
    prefix = "VYBE_API_KEY_"
    keys.update({name[len(prefix):].lower(): value for name, value in env.items()
                 if name.startswith(prefix) and value})
    if not (http and ws and secret):
        raise ConfigError(f"no gateway config: {file} is missing (start `vybe dev`, or point VYBE_DEV_FILE at "
                          "its dev.json), or set VYBE_URL and VYBE_JWT_SECRET")
    return Config(http=http.rstrip("/"), ws=ws, jwt_secret=secret, api_keys=keys)


def _ws_of(http: str) -> str:
    return "ws" + http.rstrip("/").removeprefix("http") + "/ws"


class Inbox:
    """Every event one member's socket received, in order; :meth:`wait_for` waits for one."""

    def __init__(self, client: VybeClient) -> None:
        self.events: list[Event] = []
        self._arrived = asyncio.Event()
        client.on("event", self._add)

    def _add(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()

    def mark(self) -> int:
        """A position: ``wait_for(..., after=mark)`` ignores what came before it."""
        return len(self.events)

    def find(self, name: str, *, channel: str | None = None, where: Callable[[dict[str, Any]], bool] | None = None,
             after: int = 0) -> list[Event]:
        return [e for e in self.events[after:] if e.event == name and (channel is None or e.channel == channel)
                and (where is None or where(e.data))]

    async def wait_for(self, name: str, *, channel: str | None = None,
                       where: Callable[[dict[str, Any]], bool] | None = None, after: int = 0,
                       timeout: float = WAIT_S) -> Event | None:
        """The first such event (from ``after`` on), waiting up to ``timeout`` seconds; None if none came."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = self.find(name, channel=channel, where=where, after=after)
            if found:
                return found[0]
            left = deadline - loop.time()
            if left <= 0:
                return None
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)


class ModeratorDesk:
    """What a moderator sees in Vybe's console (``/mod``), through REST: the examples look up the case a
    flagged text opened. Moderators are Vybe's, with a MODERATOR token; an app's backend never needs this."""

    def __init__(self, config: Config, moderator: str = "dev-moderator") -> None:
        self.config = config
        self.headers = {"Authorization": f"Bearer {config.token(moderator, role='MODERATOR', name='Moderator')}"}

    async def queue(self, app: str) -> list[dict[str, Any]]:
        """Open cases of ``app`` (``GET /api/mod/queue?app=...``), oldest first."""
        async with httpx.AsyncClient(base_url=self.config.http, timeout=10.0) as http:
            answer = await http.get("/api/mod/queue", params={"app": app, "limit": 500}, headers=self.headers)
        answer.raise_for_status()
        cases: list[dict[str, Any]] = answer.json()
        return cases

    async def wait_for_case(self, app: str, content_id: str, timeout: float = WAIT_S) -> dict[str, Any] | None:
        """The open case of ``app``'s content ``content_id`` (a publication's id), once the model flagged it."""
        deadline = time.monotonic() + timeout
        while True:
            case = next((c for c in await self.queue(app) if c.get("content_id") == content_id), None)
            if case is not None or time.monotonic() > deadline:
                return case
            await asyncio.sleep(0.2)

    async def resolve(self, case: dict[str, Any], action: str, note: str | None = None) -> dict[str, Any]:
        """``hide``, ``remove``, ``restore`` or ``dismiss`` the case, at the version read."""
        body = {"version": case["version"], "action": action, "note": note}
        async with httpx.AsyncClient(base_url=self.config.http, timeout=10.0) as http:
            answer = await http.post(f"/api/mod/cases/{case['case_id']}/resolve", json=body, headers=self.headers)
        answer.raise_for_status()
        resolved: dict[str, Any] = answer.json()
        return resolved


def main(flow: Callable[[Config], Coroutine[Any, Any, dict[str, Any]]]) -> None:
    """``python -m examples.<app>``: run ``flow`` against the configured gateway, print its report as JSON,
    exit 0 when ``report["ok"]``, 1 when the flow did not work or failed, 2 without a configuration."""
    try:
        config = load_config()
    except ConfigError as err:
        print(f"examples: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    try:
        report = asyncio.run(flow(config))
    except ConfigError as err:
        print(f"examples: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    except (VybeError, httpx.HTTPError, OSError) as err:
        print(f"examples: the flow failed: {err!r}", file=sys.stderr)
        raise SystemExit(1) from err
    print(json.dumps(report, indent=2))
    raise SystemExit(0 if report.get("ok") else 1)

"""A thin client of the server API, for trusted backends (``Authorization: Bearer <api key>``)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast
from urllib.parse import quote

import httpx

from vybe_client.errors import ServerError

if TYPE_CHECKING:
    from types import TracebackType


class PublishAnswer(TypedDict):
    id: str
    """This publish's id (for your logs)."""
    channels: list[str]
    """The channels it was stored for (delivered to each, in order, even if Redis is down right now)."""
    replayed: bool
    """True when ``idempotency_key`` was seen before: nothing was published again."""


class PresenceAnswer(TypedDict):
    channel: str
    viewers: Any


class HistoryAnswer(TypedDict):
    channel: str
    events: list[dict[str, Any]]
    """Oldest first: the newest ``limit``, or with ``since`` the first ``limit`` after it."""
    recovered: bool | None
    """With ``since``: false when history no longer reaches back to it (events were missed)."""
    more: bool
    """With ``since``: more events follow; ask again with ``since`` = the last event's offset."""


def verify_webhook(secret: str, raw_body: bytes, signature: str | None, tolerance_s: float = 300.0,
                   now: float | None = None) -> bool:
    """Whether a webhook is ours: ``signature`` is its ``X-Vybe-Signature`` header (``t=<unix time>,v1=<hex>``), the
    HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with your app's webhook secret, the whole ``whsec_...`` string. Check
    the raw bytes as received, before parsing them. A ``t`` more than ``tolerance_s`` from ``now`` is refused
    (a replay); the comparison takes constant time. A missing or malformed header is False, never an exception."""
    pairs = [p.strip().split("=", 1) for p in (signature or "").split(",") if "=" in p]
    times = [v.strip() for k, v in pairs if k.strip() == "t"]
    macs = [v.strip().encode("utf-8", "surrogateescape") for k, v in pairs if k.strip() == "v1"]
    if len(times) != 1 or not times[0].isdigit() or not macs:
        return False
    t = int(times[0])
    if not abs((time.time() if now is None else now) - t) <= tolerance_s:  # NaN refuses
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + raw_body, hashlib.sha256).hexdigest().encode()
    return any(hmac.compare_digest(expected, mac) for mac in macs)


class ModerationAnswer(TypedDict):
    """An item (``POST /api/server/moderate``, ``GET /api/server/moderation/{item_id}``, a webhook's ``data``)."""

    item_id: str
    app: str
    content_type: str
    content_id: str
    author_id: str
    state: str
    """``pending`` (not scored yet), ``approved``, ``flagged`` (a case is open), ``hidden`` or ``removed``."""
    decision: str | None
    """The model's (``approve``, ``shadow``, ``flag``, ``hide``); None until scored."""
    scores: dict[str, float] | None
    """Per label; None until scored."""
    reasons: list[str]
    model_version: str | None
    case_id: str | None
    resolution: str | None
    """A moderator's decision, once made (``remove``, ``hide``, ``restore``, ``dismiss``)."""
    channel: str | None
    held: bool
    created_at: str
    care: NotRequired[bool]
    """In a ``moderation.scored`` webhook: the text reached the care threshold (a self-harm disclosure)."""


def _segment(value: str) -> str:
    return quote(value, safe=":@")


class VybeServer:
    """``async with VybeServer("http://gateway:8000", api_key) as api:`` then ``await api.publish(...)``.

    Every method returns the decoded JSON answer; an error answer (``{code, message, retry_after?}``)
    raises :class:`ServerError` with its HTTP status. Pass ``client`` to reuse an ``httpx.AsyncClient``
    (its base URL and headers are then yours to set; it is not closed here).
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0,
                 client: httpx.AsyncClient | None = None) -> None:
        self._own = client is None
        self._http = client or httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def __aenter__(self) -> VybeServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own:
            await self._http.aclose()

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        """One call: the decoded JSON body of a 2xx answer (None when empty), else :class:`ServerError`."""
        try:
            response = await self._http.request(method, path, json=json, params=params, headers=self._headers)
        except httpx.TimeoutException as err:
            raise ServerError(0, "timeout", str(err) or "no answer in time") from err
        except httpx.TransportError as err:
            raise ServerError(0, "unreachable", str(err) or type(err).__name__) from err
        if response.is_success:
            return response.json() if response.content else None
        raise _error(response)

    async def publish(self, channels: list[str], event: str, data: Any,
                      idempotency_key: str | None = None) -> PublishAnswer:
        """Publish ``event`` with ``data`` on each channel (one event, stored once per channel)."""
        body = {"channels": list(channels), "event": event, "data": data, "idempotency_key": idempotency_key}
        return cast("PublishAnswer", await self.request("POST", "/api/server/publish", json=body))

    async def presence(self, channel: str) -> PresenceAnswer:
        path = f"/api/server/channels/{_segment(channel)}/presence"
        return cast("PresenceAnswer", await self.request("GET", path))

    async def history(self, channel: str, since: str | None = None, limit: int = 100) -> HistoryAnswer:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        path = f"/api/server/channels/{_segment(channel)}/history"
        return cast("HistoryAnswer", await self.request("GET", path, params=params))

    async def disconnect(self, user_id: str) -> Any:
        """Close every socket of ``user_id`` (on every node)."""
        return await self.request("POST", f"/api/server/users/{_segment(user_id)}/disconnect")

    async def unsubscribe(self, user_id: str, channels: list[str]) -> Any:
        """Unsubscribe every socket of ``user_id`` from ``channels``."""
        return await self.request("POST", f"/api/server/users/{_segment(user_id)}/unsubscribe",
                                  json={"channels": list(channels)})

    async def moderate(self, content_type: str, content_id: str, author_id: str, text: str,
                       wait: bool = True) -> ModerationAnswer:
        """Score ``text`` with the deployment's moderation (``wait``: answer with the decision)."""
        body = {"content_type": content_type, "content_id": content_id, "author_id": author_id, "text": text,
                "wait": wait}
        return cast("ModerationAnswer", await self.request("POST", "/api/server/moderate", json=body))

    async def moderation(self, item_id: str) -> ModerationAnswer:
        return cast("ModerationAnswer", await self.request("GET", f"/api/server/moderation/{_segment(item_id)}"))


def _error(response: httpx.Response) -> ServerError:
    try:
        body = response.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    retry_after = body.get("retry_after")
    if not isinstance(retry_after, int | float):
        header = response.headers.get("Retry-After")
        try:
            retry_after = float(header) if header is not None else None
        except ValueError:
            retry_after = None
    code = body.get("code")
    message = body.get("message")
    return ServerError(response.status_code, code if isinstance(code, str) else f"http_{response.status_code}",
                       message if isinstance(message, str) else response.reason_phrase, retry_after)

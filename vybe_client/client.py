"""The asyncio WebSocket client of the Vybe Live gateway (docs/protocol.md).

One task per client owns the connection: connect, authenticate (an ``auth`` frame), resubscribe
every held channel with ``since`` = its last offset, read until the socket closes, wait a jittered
backoff, again. Commands get a fresh ``id`` and wait for the ack or error with that id; commands made
while the socket is down wait for the next authenticated socket and go with the same id (writes are
idempotent by id on the server).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import json
import logging
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, overload

from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from vybe_client.errors import AuthLost, ClientStopped, CommandError
from vybe_client.models import (
    AppealTarget,
    ConnectionState,
    Event,
    Notice,
    PrivacyLevel,
    PublishResult,
    ReactableType,
    ReactionType,
    ReportTarget,
    ReportType,
    Resolution,
    SubscribeResult,
    VybeType,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
    from types import TracebackType

    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("vybe_client")

AUTH_CLOSES = frozenset({4003, 4004, 4010})
"""Token refused (4003), expired unrefreshed (4004), or the user disconnected by the app's backend
through the server API (4010): no reconnect without a new token."""
TOO_LARGE = 1009
MAX_FRAME_BYTES = 1 << 20
"""The server closes the socket (1009) over this: such a command is refused here instead."""
GOING_AWAY = 1001
FLOODING = 4029
FLOOD_PAUSE_S = 5.0
_RETRYABLE = frozenset({"rate_limited", "unavailable", "internal"})
"""Errors a command is sent again for (same id), after ``retry_after``."""
_RETRIES = 5
"""At most this many times in all, as the JavaScript SDK's ``retries`` default ..."""
_INTERNAL_RETRIES = 1
"""... of which at most this many after ``internal`` (a fault of the server, not a busy one), as there too."""


def retry_delay(retry_after: float | None, attempt: int) -> float:
    """The wait before a refused command goes again for the ``attempt``-th time (1, 2, ...), as the JavaScript SDK
    waits: the answer's ``retry_after`` (0.5 s without one; at least 0.1 s), doubled for each attempt before, times
    a jitter in [1, 1.5). Never sooner than the server asked; growing while the refusals go on; and the clients one
    burst of refusals reached do not all come back in the same instant."""
    base = max(0.1, retry_after if retry_after is not None else 0.5)
    return base * float(2 ** (attempt - 1)) * (1 + random.random() / 2)


ANSWER_ALLOWANCE_S = 0.25
"""A retry goes only if it leaves the caller this long to hear its answer before the caller stops waiting."""

_KINDS = frozenset({"event", "notice", "recovered", "unrecovered", "gap", "status", "auth_lost",
                    "subscribe_error", "error", "digest"})
_DEDUP_WINDOW = 512
"""Offsets remembered per channel, so that a replay (a resubscribe with ``since``) repeats nothing."""

_ids = itertools.count(1)


def new_id(prefix: str) -> str:
    """A fresh command id (at most 64 characters, as the server requires)."""
    return f"{prefix[:24]}-{next(_ids):x}-{os.urandom(6).hex()}"


def _jwt_exp(token: str) -> float | None:
    """The ``exp`` claim of a JWT, unverified (only to know when to ask ``get_token`` again)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


@dataclass(eq=False)
class _Pending:
    frame: dict[str, Any]
    kind: Literal["user", "internal", "auth"]
    seq: int
    future: asyncio.Future[dict[str, Any]] | None = None
    on_reply: Callable[[dict[str, Any] | None, CommandError | None], None] | None = None
    retries: int = 0
    internal_retries: int = 0
    queued: bool = False
    retry_handle: asyncio.TimerHandle | None = None
    payload: str = ""
    deadline: float | None = None
    """The loop time the caller stops waiting at; a retry that would go too late to be answered before it is not
    made: the refusal is the answer, which says more than a timeout (nothing was applied; ``retry_after``)."""

    @property
    def id(self) -> str:
        return str(self.frame["id"])

    def settle(self, result: dict[str, Any] | None, error: CommandError | None) -> None:
        if self.on_reply is not None:
            self.on_reply(result, error)
        fut = self.future
        if fut is not None and not fut.done():
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result if result is not None else {})


@dataclass(eq=False)
class _Channel:
    name: str
    subscribed: bool = False
    held_before: bool = False
    waiters: list[asyncio.Future[SubscribeResult]] = field(default_factory=list)


class _TokenBucket:
    """The client keeps under the server's per-connection rate limit (20/s, bursts of 40)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class VybeClient:
    """A Vybe Live WebSocket client that stays connected.

    ``async with VybeClient(url, token=...) as client:`` connects and authenticates (it retries like
    a reconnect, within ``max_attempts``; a refused token raises :class:`AuthLost`). Then:

    - ``await client.subscribe("feed")`` holds a channel: it is resubscribed, with ``since`` = the
      last offset seen on it, after every reconnect;
    - ``async for event in client.events():`` the events, in order, each once; or callbacks with
      ``client.on(kind, fn)``;
    - commands (``post_vybe``, ``comment``, ... ``send(type, **fields)``) return the ack's ``result``
      or raise :class:`CommandError`.

    A ``subscriptions.revoked`` event on your ``user:`` channel (the server API's ``unsubscribe``) drops
    the channels it names here too.

    ``token`` or ``get_token`` (an async callable returning a fresh token) is required. With
    ``get_token`` the client refreshes in band on ``token_expiring``, and asks for a new token before
    reconnecting with an expired one or after a refusal.

    ``backoff=(base, cap)``: reconnect delays are "full jitter" (uniform in 0 .. min(cap, base * 2**n)
    after n failed attempts); after ``going_away`` / 1001 the client comes back within 0.3 s;
    ``unavailable`` and 4029 pauses are honoured. ``max_attempts``: consecutive failed attempts
    before the client gives up (None: never). ``rate=(per_s, burst)``: a client-side limit under the
    server's (None: off). ``event_buffer``: events kept for ``events()`` (the oldest is dropped beyond;
    0: no buffer, callbacks only).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str]] | None = None,
        command_timeout: float = 20.0,
        backoff: tuple[float, float] = (0.5, 15.0),
        max_attempts: int | None = None,
        rate: tuple[float, int] | None = (15.0, 30),
        event_buffer: int = 10_000,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if token is None and get_token is None:
            raise ValueError("VybeClient needs token= or get_token=")
        if backoff[0] <= 0 or backoff[1] < backoff[0]:
            raise ValueError("backoff must be (base, cap) with 0 < base <= cap")
        self.url = url
        self.command_timeout = command_timeout
        self._token = token
        self._get_token = get_token
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._bucket = _TokenBucket(*rate) if rate else None
        self._open_timeout = open_timeout
        self._ping_interval = ping_interval
        self._headers = dict(headers or {})

        self._ws: ClientConnection | None = None
        self._authed = False
        self._auth: dict[str, Any] | None = None
        self._state: ConnectionState = "closed"
        self._pending: dict[str, _Pending] = {}
        self._outbox: deque[_Pending] = deque()
        self._seq = itertools.count()
        self._channels: dict[str, _Channel] = {}
        self._offsets: dict[str, str] = {}
        self._seen: dict[str, deque[str]] = {}
        self._handlers: dict[str, list[Callable[..., object]]] = {}
        self._buffer: asyncio.Queue[Event | None] | None = (
            asyncio.Queue(maxsize=event_buffer) if event_buffer > 0 else None)
        self.dropped_events = 0
        """Events dropped from a full ``events()`` buffer (callbacks got them)."""

        self._run_task: asyncio.Task[None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._ready: asyncio.Future[None] | None = None
        self._closing = asyncio.Event()
        self._finished = False
        self._stop_error: ClientStopped | None = None
        self._failures = 0
        self._fresh_token_tried = False
        self._refused: tuple[str | None, int, str] | None = None
        """The token a 4003/4004/4010 refused, the code and reason: ``get_token`` giving it back is a sign-out."""
        self._going_away = False
        self._retry_after_hint = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> VybeClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        """Start the connection task; returns once the first socket is authenticated."""
        if self._finished:
            raise self._stop_error or ClientStopped(1000, "closed")
        if self._run_task is None:
            loop = asyncio.get_running_loop()
            self._ready = loop.create_future()
            self._run_task = loop.create_task(self._run(), name="vybe-client")
        if self._ready is not None:
            await asyncio.shield(self._ready)

    async def close(self) -> None:
        """Close the socket (1000) and stop; commands still waiting raise ``CommandError("closed")``."""
        self._closing.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(OSError, ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.close(1000, "bye"), 5.0)
        task = self._run_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=5.0)
            if not task.done():  # still connecting (open_timeout): stop it there
                task.cancel()
                await asyncio.wait({task})
        self._finish(None)
        for t in (self._pump_task, self._refresh_task, *self._tasks):
            if t is not None and not t.done():
                t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        """True while a socket is open and authenticated."""
        return self._authed

    @property
    def auth(self) -> dict[str, Any] | None:
        """The last ``auth`` ack's result (``user_id``, ``role``, ``expires_at``, ``blocked``)."""
        return self._auth

    @property
    def user_id(self) -> str | None:
        uid = (self._auth or {}).get("user_id")
        return uid if isinstance(uid, str) else None

    @property
    def channels(self) -> tuple[str, ...]:
        """The channels held (resubscribed after every reconnect)."""
        return tuple(self._channels)

    @property
    def offsets(self) -> dict[str, str]:
        """The last offset seen per channel (a copy)."""
        return dict(self._offsets)

    def offset(self, channel: str) -> str | None:
        return self._offsets.get(channel)

    # -- callbacks ---------------------------------------------------------------------------

    @overload
    def on(self, kind: Literal["event"], fn: Callable[[Event], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["notice"], fn: Callable[[Notice], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["recovered", "unrecovered"],
           fn: Callable[[SubscribeResult], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["gap"], fn: Callable[[str], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["status"],
           fn: Callable[[ConnectionState, float | str | None], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["auth_lost"], fn: Callable[[int, str], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["subscribe_error"],
           fn: Callable[[str, CommandError], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["error"], fn: Callable[[CommandError], object]) -> Callable[[], None]: ...
    @overload
    def on(self, kind: Literal["digest"], fn: Callable[[dict[str, Any]], object]) -> Callable[[], None]: ...

    def on(self, kind: str, fn: Callable[..., object]) -> Callable[[], None]:
        """Call ``fn`` (a function or a coroutine function) on ``kind``; returns a function that removes it.

        ``event(Event)``, ``notice(Notice)`` (every notice), ``recovered(SubscribeResult)`` (a subscribe
        with ``since`` answered ``recovered: true``; also your own ``user:`` channel's after a reconnect: the
        client resumes it too), ``unrecovered(SubscribeResult)`` (answered
        ``recovered: false``, or a channel resubscribed after a reconnect before any offset was seen:
        refetch), ``gap(channel)``, ``status(state, detail)``, ``auth_lost(close_code, reason)`` (4003 token
        refused, 4004 expired, 4010 disconnected by the app's backend; after ``get_token`` was asked once),
        ``subscribe_error(channel, CommandError)`` (a resubscribe refused: the channel is dropped),
        ``error(CommandError)`` (an error that answers no command), ``digest({channel, count, skipped,
        offset})`` (a digest channel's coalesced frame, after its items came as events; ``skipped``
        arrived but were not carried: refetch to show them).
        """
        if kind not in _KINDS:
            raise ValueError(f"unknown callback kind {kind!r} (one of {sorted(_KINDS)})")
        handlers = self._handlers.setdefault(kind, [])
        handlers.append(fn)

        def off() -> None:
            with contextlib.suppress(ValueError):
                handlers.remove(fn)

        return off

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, once. Ends when the client is closed; raises :class:`ClientStopped`
        (or :class:`AuthLost`) when it stopped on its own. Meant for one consumer."""
        queue = self._buffer
        if queue is None:
            raise RuntimeError("event_buffer=0: use client.on('event', fn)")
        while True:
            item = await queue.get()
            if item is None:
                queue.put_nowait(None)  # for any other iterator
                if self._stop_error is not None:
                    raise self._stop_error
                return
            yield item

    # -- commands ----------------------------------------------------------------------------

    async def request(self, frame: Mapping[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
        """Send one command (``frame`` with a ``type``; an ``id`` is added unless given) and return
        its ack's ``result``; raise :class:`CommandError` for its error or after ``timeout``
        (default ``command_timeout``), counted from now, waiting for a socket included."""
        if self._finished or self._closing.is_set():
            raise CommandError("closed", "the client is closed")
        body = dict(frame)
        if not body.get("id"):
            body["id"] = new_id(str(body.get("type") or "cmd"))
        cid = str(body["id"])
        if cid in self._pending:
            raise CommandError("duplicate_id", f"a command with id {cid!r} is in flight")
        payload = json.dumps(body)  # a TypeError here, for what JSON cannot carry, is the caller's
        if len(payload) > MAX_FRAME_BYTES:
            raise CommandError("frame_too_large", f"the command is {len(payload)} bytes of JSON")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        limit = self.command_timeout if timeout is None else timeout
        p = _Pending(body, "user", next(self._seq), future=fut, payload=payload,
                     deadline=asyncio.get_running_loop().time() + limit)
        self._pending[cid] = p
        self._enqueue(p)
        try:
            async with asyncio.timeout(limit):
                return await fut
        except TimeoutError:
            raise CommandError("timeout", f"no answer to {body.get('type')!s} within {limit:g} s") from None
        finally:
            self._forget(p)

    async def send(self, type: str, /, **fields: Any) -> dict[str, Any]:
        """Any command: ``await client.send("ping")``; an ``id`` field is used as the command id."""
        return await self.request({"type": type, **fields})

    async def _command(self, type_: str, request_id: str | None, **fields: Any) -> dict[str, Any]:
        frame = {"type": type_, **{k: v for k, v in fields.items() if v is not None}}
        if request_id:
            frame["id"] = request_id
        return await self.request(frame)

    async def subscribe(self, channel: str, since: str | None = None) -> SubscribeResult:
        """Hold ``channel``: subscribed now (with ``since``, the events after it follow the ack), and
        again with its last offset after every reconnect. Raises :class:`CommandError` (``forbidden``,
        ``unknown_channel``, ...), and the channel is then not held."""
        if self._finished or self._closing.is_set():
            raise CommandError("closed", "the client is closed")
        entry = self._channels.get(channel)
        created = entry is None
        if entry is None:
            entry = self._channels[channel] = _Channel(channel)
            if channel != self._own_channel():
                self._seen.pop(channel, None)
                if since is None:
                    self._offsets.pop(channel, None)
        if since is not None:
            self._offsets[channel] = since
        fut: asyncio.Future[SubscribeResult] = asyncio.get_running_loop().create_future()
        entry.waiters.append(fut)
        if self._authed:
            self._send_subscribe(channel, since, resume=False)
        try:
            async with asyncio.timeout(self.command_timeout):
                return await fut
        except TimeoutError:
            if created and not entry.subscribed and self._channels.get(channel) is entry:
                del self._channels[channel]
            raise CommandError("timeout", f"no answer to subscribe {channel} within "
                                          f"{self.command_timeout:g} s") from None
        finally:
            with contextlib.suppress(ValueError):
                entry.waiters.remove(fut)

    async def resync(self, channel: str) -> SubscribeResult:
        """Subscribe again from the last offset seen on ``channel`` (after a ``gap``, say): the events
        after it that were not delivered yet follow; ``recovered`` / ``unrecovered`` as for a resume."""
        return await self.subscribe(channel, since=self._offsets.get(channel))

    async def unsubscribe(self, channel: str) -> None:
        """Stop holding ``channel`` (a channel not held is not an error)."""
        entry = self._channels.pop(channel, None)
        self._offsets.pop(channel, None)
        self._seen.pop(channel, None)
        if entry is None:
            return
        for fut in entry.waiters:
            if not fut.done():
                fut.set_exception(CommandError("not_subscribed", "unsubscribed meanwhile"))
        if not self._authed:
            return  # the next socket does not subscribe it
        try:
            await self.request({"type": "unsubscribe", "channel": channel})
        except CommandError as err:
            if err.code != "not_subscribed":
                raise

    async def refresh_token(self, token: str) -> dict[str, Any]:
        """Renew the session on this socket (``auth`` again; the token must be for the same user).
        The token is also what later reconnects authenticate with. Returns the ack's result."""
        self._token = token
        result = await self.request({"type": "auth", "token": token})
        if self._token == token:
            self._auth = result
        return result

    async def publish(self, channel: str, data: Any, *, request_id: str | None = None) -> PublishResult:
        """Publish ``data`` on a channel whose namespace allows it (``chat:...``). Subscribers get a
        ``publication`` event whose ``data`` is ``{"id", "user_id", "data"}``."""
        result = await self._command("publish", request_id, channel=channel, data=data)
        return PublishResult.from_result(channel, result)

    async def post_vybe(self, content: str, *, vybe_type: VybeType | None = None,
                        privacy_level: PrivacyLevel | None = None, is_anonymous: bool | None = None,
                        looproom_id: str | None = None, loopchain_id: str | None = None,
                        request_id: str | None = None) -> dict[str, Any]:
        return await self._command("post_vybe", request_id, content=content, vybe_type=vybe_type,
                                   privacy_level=privacy_level, is_anonymous=is_anonymous,
                                   looproom_id=looproom_id, loopchain_id=loopchain_id)

    async def comment(self, vybe_id: str, content: str, *, parent_id: str | None = None,
                      is_anonymous: bool | None = None, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("comment", request_id, vybe_id=vybe_id, content=content,
                                   parent_id=parent_id, is_anonymous=is_anonymous)

    async def react(self, target_id: str, reaction: ReactionType, *, target_type: ReactableType = "SHARED_VYBE",
                    request_id: str | None = None) -> dict[str, Any]:
        return await self._command("react", request_id, target_type=target_type, target_id=target_id,
                                   reaction=reaction)

    async def unreact(self, target_id: str, reaction: ReactionType, *,
                      target_type: ReactableType = "SHARED_VYBE", request_id: str | None = None) -> dict[str, Any]:
        return await self._command("unreact", request_id, target_type=target_type, target_id=target_id,
                                   reaction=reaction)

    async def share(self, vybe_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("share", request_id, vybe_id=vybe_id)

    async def report(self, target_type: ReportTarget, target_id: str, report_type: ReportType = "OTHER", *,
                     description: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("report", request_id, target_type=target_type, target_id=target_id,
                                   report_type=report_type, description=description)

    async def block(self, user_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("block", request_id, user_id=user_id)

    async def unblock(self, user_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("unblock", request_id, user_id=user_id)

    async def appeal(self, target_type: AppealTarget, target_id: str, statement: str, *,
                     request_id: str | None = None) -> dict[str, Any]:
        return await self._command("appeal", request_id, target_type=target_type, target_id=target_id,
                                   statement=statement)

    async def claim(self, case_id: str, version: int, *, release: bool = False,
                    request_id: str | None = None) -> dict[str, Any]:
        return await self._command("claim", request_id, case_id=case_id, version=version,
                                   release=release or None)

    async def resolve(self, case_id: str, version: int, action: Resolution, *, note: str | None = None,
                      message: str | None = None, labels: Sequence[str] | None = None,
                      request_id: str | None = None) -> dict[str, Any]:
        return await self._command("resolve", request_id, case_id=case_id, version=version, action=action,
                                   note=note, message=message, labels=list(labels) if labels is not None else None)

    async def reopen(self, case_id: str, version: int, *, request_id: str | None = None) -> dict[str, Any]:
        return await self._command("reopen", request_id, case_id=case_id, version=version)

    async def ping(self) -> dict[str, Any]:
        """The server's time (``{"time": epoch seconds}``): an application heartbeat."""
        return await self._command("ping", None)

    # -- the connection task -----------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._closing.is_set():
                self._set_state("connecting", self._failures)
                code, reason, authed = await self._connect_once()
                if self._closing.is_set():
                    break
                delay = self._next_delay(code, reason, authed)
                if delay is None:
                    return
                self._set_state("reconnecting", round(delay, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
        except InvalidURI as err:
            self._finish(ClientStopped(0, str(err)))
        except Exception as err:
            log.exception("vybe: the connection task failed")
            self._finish(ClientStopped(0, f"client error: {err!r}"))

    def _next_delay(self, code: int, reason: str, authed: bool) -> float | None:
        """The wait before the next attempt, or None after stopping for good."""
        if not authed:
            self._failures += 1
        if code in AUTH_CLOSES:
            if self._get_token is not None and not self._fresh_token_tried:
                self._fresh_token_tried = True  # once per refusal streak: reset by a successful auth
                self._refused = (self._token, code, reason)  # the same token back is a sign-out
                self._token = None
                return 0.0
            log.warning("vybe: signed out (%s %s)", code, reason)
            self._emit("auth_lost", code, reason)
            self._finish(AuthLost(code, reason))
            return None
        if code == TOO_LARGE:
            self._finish(ClientStopped(code, reason or "a frame was too large for the server"))
            return None
        if self._max_attempts is not None and self._failures >= self._max_attempts:
            self._finish(ClientStopped(code, f"gave up after {self._failures} attempts ({reason})"))
            return None
        if self._going_away or code == GOING_AWAY:
            delay = random.uniform(0.05, 0.3)  # the node is draining: another one answers at once
        else:
            base, cap = self._backoff
            delay = random.uniform(0.0, min(cap, base * 2.0 ** min(self._failures, 32)))
        if code == FLOODING:
            delay = max(delay, FLOOD_PAUSE_S)
        return max(delay, self._retry_after_hint)

    async def _token_for_connect(self) -> str:
        token = self._token
        if self._get_token is not None:
            exp = _jwt_exp(token) if token is not None else None
            if token is None or (exp is not None and exp <= time.time() + 1.0):
                token = self._token = await self._get_token()
        if token is None:
            raise AuthLost(4003, "no token")
        refused, self._refused = self._refused, None
        if refused is not None and token == refused[0]:  # get_token gave back the token just refused
            raise AuthLost(refused[1], refused[2])
        return token

    async def _connect_once(self) -> tuple[int, str, bool]:
        """One connection, authenticated and read until it closes: (close code, reason, authenticated)."""
        self._going_away = False
        self._retry_after_hint = 0.0
        try:
            token = await self._token_for_connect()
        except AuthLost as err:
            return err.close_code, err.reason, False
        except Exception as err:  # noqa: BLE001 - the app's get_token failing is a failed attempt, retried
            log.warning("vybe: get_token failed: %r", err)
            return 0, f"get_token failed: {err!r}", False
        try:
            ws = await ws_connect(self.url, open_timeout=self._open_timeout, ping_interval=self._ping_interval,
                                  ping_timeout=self._ping_interval, max_size=None, compression=None,
                                  additional_headers=self._headers or None)
        except (OSError, TimeoutError, InvalidHandshake) as err:
            log.info("vybe: connecting to %s failed: %s", self.url, err)
            return 1006, str(err) or type(err).__name__, False
        self._ws = ws
        reader = asyncio.create_task(self._read(ws), name="vybe-client-reader")
        authed = False
        try:
            authed = await self._authenticate(ws, token, reader)
            if authed:
                self._on_live()
            code, reason = await reader
        finally:
            if not reader.done():
                reader.cancel()
                ws.transport.abort()
            self._on_disconnect()
        log.info("vybe: connection closed (%s %s)", code, reason)
        return code, reason, authed

    async def _authenticate(self, ws: ClientConnection, token: str, reader: asyncio.Task[tuple[int, str]]) -> bool:
        loop = asyncio.get_running_loop()
        for _ in range(5):
            cid = new_id("auth")
            fut: asyncio.Future[dict[str, Any]] = loop.create_future()
            p = _Pending({"type": "auth", "id": cid, "token": token}, "auth", next(self._seq), future=fut)
            self._pending[cid] = p
            try:
                await ws.send(json.dumps(p.frame))
                either: set[asyncio.Future[Any]] = {fut, reader}
                await asyncio.wait(either, timeout=self.command_timeout, return_when=asyncio.FIRST_COMPLETED)
            except ConnectionClosed:
                return False
            finally:
                self._pending.pop(cid, None)
            if not fut.done():
                fut.cancel()
                if not reader.done():
                    log.warning("vybe: no answer to auth within %g s", self.command_timeout)
                    with contextlib.suppress(OSError, ConnectionClosed):
                        await ws.close(1000, "no answer to auth")
                return False
            err = fut.exception()
            if err is None:
                self._auth = fut.result()
                return True
            if isinstance(err, CommandError) and err.code == "unavailable":
                # A backend is down: the socket stays, unauthenticated; auth again after retry_after.
                await asyncio.wait({reader}, timeout=err.retry_after or 1.0)
                if reader.done():
                    return False
                continue
            log.warning("vybe: auth refused: %s", err)  # the server closes with 4003 next
            return False
        return False

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                if not isinstance(raw, str):
                    continue
                try:
                    data = json.loads(raw)
                except ValueError:
                    log.warning("vybe: a frame that is not JSON: %.200s", raw)
                    continue
                for msg in data if isinstance(data, list) else [data]:
                    if isinstance(msg, dict):
                        try:
                            self._handle(msg)
                        except Exception:
                            log.exception("vybe: handling %.200r failed", msg)
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            return rcvd.code, rcvd.reason
        sent = ws.protocol.close_sent
        if sent is not None:
            return sent.code, sent.reason
        return 1006, "connection lost"

    def _on_live(self) -> None:
        self._authed = True
        self._failures = 0
        self._fresh_token_tried = False
        self._set_state("live", None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        resubscribes = []
        for name, entry in self._channels.items():
            resubscribes.append(self._subscribe_pending(name, self._offsets.get(name), resume=entry.held_before))
        own = self._own_channel()
        if own is not None and own not in self._channels:
            # The server holds it again at auth; `since` brings what it carried while we were away. With no
            # offset yet, a subscribe (answered like the first) names its resume point, so a reconnect before
            # its first event (a new user's first reaction or moderation outcome) still misses nothing.
            resubscribes.append(self._subscribe_pending(own, self._offsets.get(own), resume=own in self._offsets))
        for p in reversed(resubscribes):  # before the commands that waited for the socket
            self._enqueue(p, front=True)
        self._kick()

    def _on_disconnect(self) -> None:
        self._authed = False
        self._ws = None
        for entry in self._channels.values():
            entry.subscribed = False
        lost = CommandError("disconnected", "the connection dropped")
        for p in list(self._pending.values()):
            if p.kind != "user":
                self._forget(p)
                p.settle(None, lost)
        # Commands in flight go again, in their order and with their ids, on the next socket.
        for p in self._outbox:
            p.queued = False
        self._outbox.clear()
        for p in sorted(self._pending.values(), key=lambda p: p.seq):
            if p.retry_handle is None:
                self._enqueue(p)

    # -- sending -----------------------------------------------------------------------------

    def _enqueue(self, p: _Pending, *, front: bool = False) -> None:
        if p.queued:
            return
        p.queued = True
        if front:
            self._outbox.appendleft(p)
        else:
            self._outbox.append(p)
        self._kick()

    def _kick(self) -> None:
        if self._authed and self._outbox and (self._pump_task is None or self._pump_task.done()):
            self._pump_task = asyncio.get_running_loop().create_task(self._pump(), name="vybe-client-sender")

    async def _pump(self) -> None:
        while self._outbox:
            ws = self._ws
            if ws is None or not self._authed:
                return
            p = self._outbox[0]
            if self._pending.get(p.id) is not p:
                self._outbox.popleft()
                p.queued = False
                continue
            if self._bucket is not None:
                wait = self._bucket.take()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            self._outbox.popleft()
            p.queued = False
            try:
                await ws.send(p.payload or json.dumps(p.frame))
            except ConnectionClosed:
                if self._pending.get(p.id) is p and p.kind == "user":
                    self._enqueue(p, front=True)
                return

    def _forget(self, p: _Pending) -> None:
        if self._pending.get(p.id) is p:
            del self._pending[p.id]
        if p.retry_handle is not None:
            p.retry_handle.cancel()
            p.retry_handle = None
        if p.queued:
            p.queued = False
            with contextlib.suppress(ValueError):
                self._outbox.remove(p)

    def _retry(self, p: _Pending) -> None:
        p.retry_handle = None
        if self._pending.get(p.id) is p:
            self._enqueue(p, front=True)  # ahead of the commands queued since, as the JavaScript SDK

    # -- subscriptions -----------------------------------------------------------------------

    def _own_channel(self) -> str | None:
        uid = self.user_id
        return f"user:{uid}" if uid else None

    def _subscribe_pending(self, name: str, since: str | None, *, resume: bool) -> _Pending:
        frame: dict[str, Any] = {"type": "subscribe", "id": new_id("subscribe"), "channel": name}
        if since is not None:
            frame["since"] = since
        entry = self._channels.get(name)

        def on_reply(result: dict[str, Any] | None, err: CommandError | None) -> None:
            self._subscribed(name, entry, since, resume, result, err)

        p = _Pending(frame, "internal", next(self._seq), on_reply=on_reply)
        self._pending[p.id] = p
        return p

    def _send_subscribe(self, name: str, since: str | None, *, resume: bool) -> None:
        self._enqueue(self._subscribe_pending(name, since, resume=resume))

    def _subscribed(self, name: str, entry: _Channel | None, since: str | None, resume: bool,
                    result: dict[str, Any] | None, err: CommandError | None) -> None:
        current = entry is not None and self._channels.get(name) is entry
        if err is not None:
            if err.code == "disconnected":
                return  # subscribed again after the reconnect
            if entry is None:
                log.warning("vybe: resubscribing %s failed: %s", name, err)
                return
            if not current:
                return
            del self._channels[name]
            self._offsets.pop(name, None)
            waiters, entry.waiters = entry.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
            if not waiters:
                log.warning("vybe: subscription to %s refused: %s", name, err)
                self._emit("subscribe_error", name, err)
            return
        res = SubscribeResult.from_result(name, result or {})
        position = (result or {}).get("offset")
        if since is None and isinstance(position, str) and name not in self._offsets:
            # The channel's newest offset as we joined: a reconnect before its first event resumes
            # from here (an event that arrived before this ack already set a newer one).
            self._offsets[name] = position
        elif since is not None and isinstance(position, str) and (result or {}).get("recovered") is False \
                and self._offsets.get(name) == since:
            self._offsets[name] = position  # history no longer reached `since`: resume from here next time
        if entry is not None:
            if not current:  # unsubscribed while the subscribe was in flight
                self._spawn(self._quiet_unsubscribe(name))
                return
            entry.subscribed = entry.held_before = True
            waiters, entry.waiters = entry.waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(res)
        if since is not None and res.recovered is True:
            self._emit("recovered", res)
        elif (since is not None and res.recovered is False) or (resume and since is None):
            # Resubscribed with no offset to resume from: whatever came meanwhile is unknown.
            self._emit("unrecovered", res)

    async def _quiet_unsubscribe(self, name: str) -> None:
        if name in self._channels or not self._authed:
            return
        with contextlib.suppress(CommandError):
            await self.request({"type": "unsubscribe", "channel": name})

    # -- receiving ---------------------------------------------------------------------------

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "event":
            data = msg.get("data")
            items = data.get("items") if isinstance(data, dict) else None
            if str(msg.get("event", "")).endswith(".digest") and isinstance(items, list):
                # A digest channel (delivery = "digest"): its newest items arrive as the events they
                # are; `digest` then says how many arrived in all (`skipped` were not carried).
                for item in items:
                    if isinstance(item, dict):
                        self._on_event(Event.from_message(item))
                count = data.get("count") if isinstance(data, dict) else 0
                count = count if isinstance(count, int) else 0
                offset = msg.get("offset")
                if isinstance(offset, str) and msg.get("channel") in self._channels:
                    self._offsets[str(msg["channel"])] = offset
                self._emit("digest", {"channel": msg.get("channel"), "count": count,
                                      "skipped": max(0, count - len(items)), "offset": offset})
                return
            self._on_event(Event.from_message(msg))
        elif kind == "ack":
            cid = msg.get("id")
            p = self._pending.get(cid) if isinstance(cid, str) else None
            if p is None:
                return  # an answer after its command timed out, or the header-auth ack
            self._forget(p)
            result = msg.get("result")
            p.settle(result if isinstance(result, dict) else {}, None)
        elif kind == "error":
            self._on_error(msg)
        elif kind == "notice":
            self._on_notice(Notice.from_message(msg))

    def _on_event(self, ev: Event) -> None:
        if ev.offset is not None:
            # A subscribe with `since` on a channel already held (the own `user:` channel after a
            # reconnect, a resync) replays events after it: those already delivered are dropped.
            seen = self._seen.get(ev.channel)
            if seen is None:
                seen = self._seen[ev.channel] = deque(maxlen=_DEDUP_WINDOW)
            elif ev.offset in seen:
                return
            seen.append(ev.offset)
            self._offsets[ev.channel] = ev.offset
        if ev.event == "subscriptions.revoked" and ev.channel == self._own_channel():
            # The app's backend dropped these subscriptions (server API): no longer held here either.
            revoked = ev.data.get("channels")
            for name in revoked if isinstance(revoked, list) else ():
                if isinstance(name, str) and name != ev.channel and name in self._channels:
                    self._channels.pop(name, None)
                    self._offsets.pop(name, None)
                    # A subscribe answered after the revoke (a reconnect's, replayed offline) is undone.
                    self._spawn(self._quiet_unsubscribe(name))
        queue = self._buffer
        if queue is not None:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                self.dropped_events += 1
                if self.dropped_events == 1 or self.dropped_events % 1000 == 0:
                    log.warning("vybe: events() is not keeping up: %d events dropped", self.dropped_events)
            queue.put_nowait(ev)
        self._emit("event", ev)

    def _on_error(self, msg: dict[str, Any]) -> None:
        code = str(msg.get("code") or "error")
        retry_after = msg.get("retry_after")
        err = CommandError(code, str(msg.get("message") or code),
                           float(retry_after) if isinstance(retry_after, int | float) else None)
        cid = msg.get("id")
        p = self._pending.get(cid) if isinstance(cid, str) and cid else None
        if p is None:
            if code == "unavailable" and err.retry_after:
                self._retry_after_hint = max(self._retry_after_hint, err.retry_after)
            log.warning("vybe: server error: %s", err)
            self._emit("error", err)
            return
        delay = retry_delay(err.retry_after, p.retries + 1)
        loop = asyncio.get_running_loop()
        again = code in _RETRYABLE and p.retries < _RETRIES and \
            (code != "internal" or p.internal_retries < _INTERNAL_RETRIES)
        if p.kind != "auth" and again and \
                (p.deadline is None or loop.time() + delay + ANSWER_ALLOWANCE_S < p.deadline):
            p.retries += 1  # the same id: rate_limited and unavailable applied nothing; the writes dedupe by it
            p.internal_retries += code == "internal"
            p.retry_handle = loop.call_later(delay, self._retry, p)
            return
        self._forget(p)
        p.settle(None, err)

    def _on_notice(self, notice: Notice) -> None:
        if notice.code == "going_away":
            self._going_away = True
        self._emit("notice", notice)
        if notice.code == "token_expiring" and self._get_token is not None:
            if self._refresh_task is None or self._refresh_task.done():
                self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())
        elif notice.code == "gap":
            channel = notice.data.get("channel")
            self._emit("gap", channel if isinstance(channel, str) else "")

    async def _refresh(self) -> None:
        if self._get_token is None:
            return
        try:
            await self.refresh_token(await self._get_token())
        except Exception as err:  # noqa: BLE001 - a failed refresh ends in 4004, then get_token again
            log.warning("vybe: token refresh failed: %r", err)

    # -- internals ---------------------------------------------------------------------------

    def _emit(self, kind: str, *args: Any) -> None:
        for fn in list(self._handlers.get(kind, ())):
            try:
                out = fn(*args)
            except Exception:
                log.exception("vybe: a %s callback failed", kind)
                continue
            if inspect.isawaitable(out):
                self._spawn(out)

    def _spawn(self, aw: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("vybe: a callback failed", exc_info=task.exception())

    def _set_state(self, state: ConnectionState, detail: float | str | None) -> None:
        self._state = state
        self._emit("status", state, detail)

    def _finish(self, error: ClientStopped | None) -> None:
        """Stop for good: fail what waits, end ``events()``."""
        if self._finished:
            return
        self._finished = True
        self._stop_error = error
        self._closing.set()
        if error is None:
            failure = CommandError("closed", "the client is closed")
        elif isinstance(error, AuthLost):
            failure = CommandError("signed_out", f"the token was refused or expired ({error.close_code})")
        else:
            failure = CommandError("closed", str(error))
        for p in list(self._pending.values()):
            self._forget(p)
            p.settle(None, failure)
        for entry in self._channels.values():
            for fut in entry.waiters:
                if not fut.done():
                    fut.set_exception(failure)
        queue = self._buffer
        if queue is not None:
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error or ClientStopped(1000, "closed"))
            self._ready.exception()  # retrieved: connect() raises it, if anyone waits
        self._set_state("closed" if error is None else "offline", None if error is None else str(error))

    def __repr__(self) -> str:
        return f"<VybeClient {self.url} {self._state} user={self.user_id!r} channels={len(self._channels)}>"

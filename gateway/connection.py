"""One client session over a :class:`gateway.wsproto.WebSocket`: authenticate, read commands,
answer, and write queued frames.

The socket calls :meth:`Connection.received` per message; a reader task exists only while
commands wait (they are answered in order), and a writer task only while a backlog waits: it
drains a send queue bounded in bytes, joining whatever is queued into one frame (an array: JSON
text, or MessagePack binary when the client negotiated the ``vybe.msgpack`` subprotocol; the
socket's :class:`Codec` decides). An idle socket holds neither. A reader never waits on a
writer: fan-out only appends to the queue, and a connection whose queue overflows is closed with
4008 (slow consumer) so that it cannot slow anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from common.errors import ErrorCode
from common.tasks import cancelled_meanwhile
from db.pool import UNREACHABLE
from gateway.auth import AuthError, Identity
from gateway.codec import JSON_CODEC, Codec
from gateway.commands import CommandError, handle, unavailable
from gateway.hub import Unavailable
from gateway.protocol import (
    Ack,
    Auth,
    AuthResult,
    CloseCode,
    DecodeFailure,
    Error,
    Notice,
    Ping,
    Pong,
)
from gateway.wsproto import data_frame

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.context import Gateway
    from gateway.wsproto import WebSocket

log = logging.getLogger(__name__)


class TokenBucket:
    """``rate`` commands per second with bursts of ``burst``."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0.0 when allowed; otherwise seconds until a token is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Connection:
    """One client socket: a :class:`gateway.hub.Subscriber` with a reader and a writer."""

    # Consecutive refusals after which a flooding client is disconnected.
    FLOOD_LIMIT = 50
    # Commands waiting for the reader beyond which the socket stops reading (TCP pushes back).
    INBOX_MAX = 32
    # How long a closed session's commands may still run (a peer that sent, then closed).
    READER_GRACE_S = 10.0
    # Tens of thousands of these live for hours: slots instead of a __dict__ (~1 KB each).
    __slots__ = ("_bucket", "_close", "_flushing", "_inbox", "_publish_buckets", "_queue", "_queued", "_reader",
                 "_refusals", "_sending", "_timer", "_writer", "blocked", "channels", "codec", "gw", "identity",
                 "is_moderator", "resuming", "sock", "user_id")

    def __init__(self, gw: Gateway, sock: WebSocket, codec: Codec = JSON_CODEC) -> None:
        self.gw = gw
        self.sock = sock
        self.codec = codec
        self.identity: Identity | None = None
        self.user_id = ""
        self.is_moderator = False
        self.blocked: frozenset[str] = frozenset()
        self.resuming: dict[str, list[tuple[tuple[int, int], bytes]] | tuple[int, int]] = {}
        self.channels: set[str] = set()
        self._queue: list[bytes] = []
        self._queued = 0
        self._sending = False
        self._flushing = False  # a flush is scheduled for this loop turn
        self._writer: asyncio.Task[None] | None = None
        self._close: tuple[int, str] | None = None
        self._inbox: list[str | bytes] = []
        self._reader: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the one pending deadline (auth, warning or expiry)
        self._bucket = TokenBucket(gw.settings.rate_per_s, gw.settings.rate_burst)
        self._publish_buckets: dict[str, TokenBucket] | None = None  # made at the first publish
        self._refusals = 0

    def control(self, action: str, channels: list[str] | None) -> None:
        """The server API's ``disconnect`` (close 4010) or ``unsubscribe`` (the channels dropped; the
        personal channel stays). Its event (``session.disconnected``, ``subscriptions.revoked``) came first."""
        if action == "disconnect":
            self.close(CloseCode.DISCONNECTED, "disconnected by the server")
        elif action == "unsubscribe":
            gone = [c for c in channels or () if c in self.channels and c != f"user:{self.user_id}"]
            self.channels.difference_update(gone)
            if any(self.gw.namespaces.presence_channel(c) for c in gone):
                self.gw.presence.touch()
            if gone:
                self.gw.spawn(self.gw.hub.drop(self, gone))

    def publish_bucket(self, namespace: str, rate: float, burst: int) -> TokenBucket:
        """This connection's publication limit on ``namespace`` (beside the command rate limit)."""
        if self._publish_buckets is None:
            self._publish_buckets = {}
        bucket = self._publish_buckets.get(namespace)
        if bucket is None:
            bucket = self._publish_buckets[namespace] = TokenBucket(rate, burst)
        return bucket

    # -- the send side (called by the hub and by handlers) -------------------

    def deliver(self, element: bytes, frame_bytes: bytes) -> None:
        """Fan-out entry: ``frame_bytes`` is ``element`` (of this socket's codec) as a ready
        WebSocket frame, the same object for every socket of the format. Written at once
        when nothing is queued ahead of it."""
        if not self._queue and not self._sending and self._close is None and self.sock.write_frame(frame_bytes):
            gw = self.gw  # counted inline: this runs once per socket per event
            gw.frames_out += 1
            gw.bytes_out += len(frame_bytes)
            return
        self.push(element)

    def push(self, element: bytes) -> None:
        """Queue an element of this socket's codec (one or more encoded messages)."""
        if self._close is not None:
            return
        self._queued += len(element)
        if self._queued > self.gw.settings.send_queue_bytes:
            self.gw.metrics.slow_consumer_closes.inc()
            self._queue.clear()
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer: send queue full; reconnect and resume")
            return
        self._queue.append(element)
        if self._writer is None and not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this loop turn queued as one frame; a transport that takes no more gets the
        writer task, which waits for it (most sockets never need one: a task per reply cost a
        reconnect storm more than the reply itself)."""
        self._flushing = False
        if self._writer is not None or not self._queue:
            return
        if self.sock.writable and self.sock.is_open:
            frame = self._take()
            self.sock.write_frame(frame)
            self._sent(frame)
            return
        self._writer = asyncio.create_task(self._drain(), name="ws-writer")

    def _take(self) -> bytes:
        """Everything queued as one frame; the queue is then empty."""
        codec = self.codec
        frame = data_frame(codec.payload(codec.join(self._queue)), codec.binary)
        self._queue.clear()
        self._queued = 0
        return frame

    def _sent(self, frame: bytes) -> None:
        self.gw.frames_out += 1
        self.gw.bytes_out += len(frame)

    def enqueue(self, element: bytes) -> None:
        """Queue a JSON element, whatever this socket's format (for code that writes to every
        socket, e.g. the drain's notice); a MessagePack socket transcodes it."""
        self.push(self.codec.from_json(element))

    def reply(self, message: object) -> None:
        if isinstance(message, Error):
            self.gw.metrics.errors.labels(message.code).inc()
        self.push(self.codec.encode(message))

    def close(self, code: int, reason: str) -> None:
        """Close the session (from anywhere); idempotent. Queued frames go out first, then the close
        frame; a command still running is cancelled."""
        if self._close is None:
            self._close = (code, reason)
            self._inbox.clear()
            if self._reader is not None and self._reader is not asyncio.current_task():
                self._reader.cancel()
            self.gw.spawn(self._teardown())

    def lost(self, code: int) -> None:
        """The socket's callback: the peer closed (``code``) or vanished (1006), or broke the protocol.
        Commands it sent before are still carried out (a client may send, then close at once); their
        answers have nowhere to go."""
        if self._close is None:
            self._close = (code, "")
            self.gw.spawn(self._teardown())

    def lost_keepalive(self) -> None:
        """The keepalive's callback: a ping went unanswered for a whole interval."""
        self.close(1011, "keepalive ping timeout")

    async def _drain(self) -> None:
        """Send everything queued, coalesced into as few frames as possible; exits when empty.

        Exists only while there is a backlog, so an idle connection holds no writer task.
        """
        sock = self.sock
        try:
            while self._queue:
                frame = self._take()
                self._sending = True
                try:
                    while not sock.write_frame(frame):
                        if not sock.is_open:  # the peer is gone, or the close frame went out
                            self.close(1006, "peer gone")
                            return
                        await sock.wait_writable()  # a paused transport: wait until it drains
                finally:
                    self._sending = False
                self._sent(frame)
        finally:
            self._writer = None

    # -- the receive side ----------------------------------------------------

    def start(self, header_token: str | None) -> None:
        """The socket's handshake is done (101 sent): serve it. A token from the ``Authorization``
        header is verified first, as if it were an ``auth`` frame; else one must come in time."""
        self.gw.connections.add(self)
        self.gw.metrics.connections.inc()
        if header_token is not None:
            self._reader = asyncio.create_task(self._read(header_token), name="ws-reader")
        else:
            self._set_timer(self.gw.settings.auth_timeout_s, self._auth_deadline)

    def received(self, data: str | bytes) -> None:
        """The socket's callback, per message: queue it for the reader (started when none runs)."""
        if self._close is not None:
            return
        self._inbox.append(data)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(None), name="ws-reader")
        elif len(self._inbox) >= self.INBOX_MAX:
            self.sock.pause_reading()

    async def _read(self, header_token: str | None) -> None:
        """Answer queued commands in order; exits when none is left (or the session closes)."""
        try:
            if header_token is not None:
                await self._header_auth(header_token)
            field = bytes if self.codec.binary else str  # the frame kind this socket reads
            inbox = self._inbox  # close() empties it; lost() does not
            while inbox:
                data = inbox.pop(0)
                if not isinstance(data, field):
                    self.reply(self.codec.wrong_frame())
                    continue
                await self._on_frame(data)
        except asyncio.CancelledError:
            if self._close is None:
                raise  # cancelled from outside (shutdown): propagate
        except Exception:  # a bug must not leave the socket open and unanswered
            log.exception("socket reader failed")
            self.close(1011, "internal error")
        finally:
            self._reader = None
            if self._close is None:
                self.sock.resume_reading()

    async def _header_auth(self, header_token: str) -> None:
        try:
            identity = await self._authenticate(header_token, None)
        except AuthError as err:
            self.reply(Error(None, err.code, str(err)))
            self.close(CloseCode.AUTH_INVALID, "invalid token")
            return
        except CommandError as err:  # a backend is down: try again later (1013)
            self.reply(Error(None, err.code, err.message, err.retry_after))
            self.close(CloseCode.TRY_AGAIN, "backend unavailable; retry")
            return
        self.reply(Ack("", _auth_result(identity, self.blocked)))  # the same answer as an `auth` frame's

    def _auth_deadline(self) -> None:
        if self.identity is None:
            self.close(CloseCode.AUTH_TIMEOUT, "no auth frame in time")

    async def _on_frame(self, data: str | bytes) -> None:
        self.gw.commands_in += 1
        limit = self.gw.frame_limit
        if len(data) > limit or (isinstance(data, str) and len(data) * 4 > limit and len(data.encode()) > limit):
            self.reply(Error(None, ErrorCode.FRAME_TOO_LARGE, f"frame over {limit} bytes"))
            return
        wait = self._bucket.take()
        if wait:
            self._refusals += 1
            if self._refusals >= self.FLOOD_LIMIT:
                self.close(CloseCode.FLOOD, "flood: too many commands after rate-limit errors")
                return
            self.reply(Error(self.codec.peek_id(data), ErrorCode.RATE_LIMITED, "too many commands; slow down",
                             round(wait, 3)))
            return
        self._refusals = 0
        try:
            cmd = self.codec.decode(data)
        except DecodeFailure as err:
            self.reply(err.error)
            return
        await self._dispatch(cmd)

    async def _dispatch(self, cmd: Any) -> None:
        if isinstance(cmd, Auth):
            await self._on_auth(cmd)
            return
        if self.identity is None:
            self.reply(Error(cmd.id, ErrorCode.AUTH_REQUIRED, "send an `auth` command first"))
            return
        if isinstance(cmd, Ping):
            self.reply(Ack(cmd.id, Pong(time=time.time())))
            return
        try:
            result = await handle(self, cmd)
        except CommandError as err:
            self.reply(Error(cmd.id, err.code, err.message, err.retry_after))
            return
        except Exception as err:  # a bug in one command must not drop the socket unanswered
            cancelled_meanwhile(err)
            log.exception("command %s failed", type(cmd).__name__)
            self.reply(Error(cmd.id, ErrorCode.INTERNAL, "internal error; the command may not have been applied",
                             1.0))
            return
        if result is not None:
            self.reply(Ack(cmd.id, result.ack))
            for element in result.after:  # the hub's, in this socket's codec
                self.push(element)
            if result.finish is not None:
                result.finish()

    async def _on_auth(self, cmd: Auth) -> None:
        first = self.identity is None
        if first and self._timer is not None:  # the auth deadline waits while an `auth` is handled (a hung
            self._timer.cancel()  # PostgreSQL may take its whole timeout), and starts again if it fails
            self._timer = None
        retry_after = 0.0
        try:
            identity = await self._authenticate(cmd.token, cmd.id)
        except AuthError as err:
            self.reply(Error(cmd.id, err.code, str(err)))
            if first:
                self.close(CloseCode.AUTH_INVALID, "invalid token")
            return
        except CommandError as err:  # a backend is down: the socket stays, the client retries `auth`
            self.reply(Error(cmd.id, err.code, err.message, err.retry_after))
            retry_after = err.retry_after or 0.0
            return
        finally:
            if first and self.identity is None:  # the deadline starts again: retry_after, then the usual time
                self._set_timer(retry_after + self.gw.settings.auth_timeout_s, self._auth_deadline)
        self.reply(Ack(cmd.id, _auth_result(identity, self.blocked)))

    async def _authenticate(self, token: str, cid: str | None) -> Identity:
        """Verify; on the first success, load the user and join their personal channel.
        Raises :class:`AuthError`, or :class:`CommandError` (``unavailable``) while
        PostgreSQL or Redis is down, leaving the socket unauthenticated."""
        identity = self.gw.verifier.verify(token)
        if self.identity is not None and identity.user_id != self.identity.user_id:
            raise AuthError("a refreshed token must be for the same user")
        if self.identity is None:
            channel = f"user:{identity.user_id}"
            try:
                blocked = frozenset(await self.gw.on_first_auth(identity))
                self.user_id, self.is_moderator, self.blocked = identity.user_id, identity.is_moderator, blocked
                # Personal channel: notifications and block-list changes from other nodes.
                await self.gw.hub.subscribe(self, channel)
            except UNREACHABLE as err:
                raise unavailable("PostgreSQL") from err
            except Unavailable as err:
                raise CommandError(ErrorCode.UNAVAILABLE, str(err), err.retry_after) from err
            self.channels.add(channel)
        self.identity = identity
        self.user_id, self.is_moderator = identity.user_id, identity.is_moderator
        self._schedule_expiry()
        return identity

    def _set_timer(self, delay: float, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._close is not None:
            return  # closed: a command still finishing (an auth) arms nothing
        self._timer = asyncio.get_running_loop().call_later(max(delay, 0.0), callback)

    def _left(self) -> float:
        expires_at = self.identity.expires_at if self.identity else time.time()
        return expires_at + self.gw.settings.jwt_leeway_s - time.time()

    def _schedule_expiry(self) -> None:
        """Warn ``token_warn_s`` before expiry, then close at expiry (one timer at a time)."""
        left = self._left()
        warn_in = left - self.gw.settings.token_warn_s
        if warn_in > 0:
            self._set_timer(warn_in, self._warn_expiry)
        elif left > 0:
            # Already inside the warning window: warn at once, but after this auth's ack (a client
            # waiting for the ack must not get the warning about its token before it).
            self._set_timer(0, self._warn_expiry)
        else:
            self._set_timer(0, self._expired)

    def _warn_expiry(self) -> None:
        self.reply(Notice("token_expiring", "token expires soon: send `auth` with a fresh token",
                          {"expires_at": self.identity.expires_at if self.identity else None}))
        self._set_timer(self._left(), self._expired)

    def _expired(self) -> None:
        self.close(CloseCode.TOKEN_EXPIRED, "token expired")

    async def _teardown(self) -> None:
        """After :meth:`close` or :meth:`lost`: let the commands already received finish (up to
        ``READER_GRACE_S``), leave every channel, let queued frames (an error, a notice) go out, then
        the close frame. Meanwhile the session is in ``gw.closing``, not ``gw.connections`` (a drain
        waits for both to empty)."""
        if self in self.gw.connections:
            self.gw.connections.discard(self)
            self.gw.metrics.connections.dec()
        self.gw.closing.add(self)
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task():
                _, pending = await asyncio.wait([reader], timeout=self.READER_GRACE_S)
                if pending:
                    reader.cancel()
                    await asyncio.wait([reader])
            with contextlib.suppress(*self.gw.backend.transient_errors):
                await self.gw.leave(self)
            self._flush()  # what is queued goes before the close frame
            writer = self._writer
            if writer is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait([writer], timeout=2.0)
                writer.cancel()
        finally:
            code, reason = self._close or (1000, "")
            self.sock.send_close(code, reason)  # a peer that reads nothing is dropped after CLOSE_TIMEOUT_S
            self.gw.closing.discard(self)


def _auth_result(identity: Identity, blocked: frozenset[str]) -> AuthResult:
    return AuthResult(user_id=identity.user_id, role=identity.role, expires_at=identity.expires_at,
                      blocked=sorted(blocked))

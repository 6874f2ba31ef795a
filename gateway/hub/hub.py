"""The orchestrator: channel registry, per-viewer filtering, resume merge, recovery.

One upstream subscription per channel per process. Each live event is turned into
its client bytes once (``_element``) and the same bytes are queued to every
permitted subscriber. Subscribers are the sockets (``gateway.connection``); the hub
only needs the small :class:`Subscriber` protocol from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import msgspec

from gateway.hub.base import Backend, Unavailable
from gateway.protocol import Notice, encode
from gateway.wsproto import text_frame
from common.bus import Meta, make_offset, parse_offset, split_message, stream_id_key

if TYPE_CHECKING:
    from prometheus_client import Histogram

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

Key = tuple[int, int]
SUBSCRIBE_TIMEOUT_S = 3.0


class Subscriber(Protocol):
    """What the hub needs of a socket."""

    user_id: str
    is_moderator: bool
    blocked: frozenset[str]
    resuming: dict[str, list[tuple[Key, bytes]] | Key]
    """Per channel being resumed: live events held until the missed ones are queued; after
    that, until live delivery passes it, the offset the resume ended at (a floor)."""

    def enqueue(self, element: bytes) -> None:
        """Queue one encoded message; never blocks (overflow closes the socket)."""

    def deliver(self, element: bytes, frame_bytes: bytes) -> None:
        """Like enqueue; ``frame_bytes`` is the ready WebSocket frame of ``[element]``."""


class _Channel:
    __slots__ = ("epoch", "last", "name", "pending", "recovering", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        self.subscribers: dict[Subscriber, None] = {}
        self.epoch: str | None = None
        self.last: Key | None = None
        self.recovering: list[tuple[str, str, bytes]] | None = None
        # Set while the upstream subscription is being confirmed (one per user channel:
        # an asyncio.Event each would cost ~0.7 KB per connected user).
        self.pending: asyncio.Future[None] | None = None


class Resume(msgspec.Struct):
    recovered: bool | None
    """None: no ``since`` given; True: every missed event is in ``missed``; False: refetch via REST."""
    missed: list[bytes] = msgspec.field(default_factory=list)
    after: Key | None = None


class Hub:
    """Fan-out for one gateway process."""

    def __init__(self, backend: Backend, metrics: object | None = None) -> None:
        self.backend = backend
        backend.on_message = self._on_message
        backend.on_reconnect = self._on_reconnect
        self._channels: dict[str, _Channel] = {}
        self.events_in = 0
        self.deliveries = 0
        self.latency: Histogram | None = None
        self._burst: list[tuple[_Channel, str, str, bytes]] = []

    def channel_count(self) -> int:
        return len(self._channels)

    def channels(self) -> list[str]:
        return list(self._channels)

    def local_viewers(self, channel: str) -> int:
        """Distinct users on this node subscribed to ``channel``."""
        state = self._channels.get(channel)
        return len({sub.user_id for sub in state.subscribers}) if state else 0

    # -- subscriptions -------------------------------------------------------

    async def subscribe(self, sub: Subscriber, channel: str, since: str | None = None) -> Resume:
        """Attach ``sub``. With ``since``, return what it missed; live events meanwhile
        are buffered for it until :meth:`finish_resume`, which the caller runs right
        after queueing the missed ones, so the cut-over has no gap and no duplicate.
        """
        state = await self._ensure(channel)
        if since is None:
            state.subscribers[sub] = None
            return Resume(None)
        parsed = parse_offset(since)
        sub.resuming[channel] = []
        state.subscribers[sub] = None
        entries = None
        if parsed is not None:
            entries = await self.backend.history(channel, parsed[0], parsed[1])
        if entries is None:
            return Resume(False)
        last: Key = parsed[1] if parsed else (0, 0)
        missed: list[bytes] = []
        for entry in entries:
            meta, body = split_message(entry.message)
            if _permitted(sub, meta):
                missed.append(_element(channel, make_offset(entry.epoch, entry.stream_id), body))
            last = max(last, stream_id_key(entry.stream_id))
        return Resume(True, missed, last)

    def finish_resume(self, sub: Subscriber, channel: str, after: Key | None) -> None:
        """Release the live events buffered during a resume, skipping those already sent.

        History can be ahead of this node's live stream (an event in Redis whose pub/sub
        message has not been fanned out here yet): then ``after`` stays as a floor, and
        live events up to it are skipped for this socket, so none arrives twice.
        """
        held = sub.resuming.pop(channel, [])
        last = after
        for key, element in held if isinstance(held, list) else ():
            if after is None or key > after:
                sub.enqueue(element)
                last = key
        state = self._channels.get(channel)
        if last is not None and last == after and state is not None and (state.last is None or state.last < last):
            sub.resuming[channel] = last

    async def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.subscribers.pop(sub, None)
        sub.resuming.pop(channel, None)
        if not state.subscribers:
            del self._channels[channel]
            await self.backend.unsubscribe(channel)

    async def drop(self, sub: Subscriber, channels: Iterable[str]) -> None:
        """Detach a closed socket from all its channels."""
        for channel in list(channels):
            await self.unsubscribe(sub, channel)

    async def _ensure(self, channel: str) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            if not self.backend.healthy:
                raise Unavailable("live events are unavailable (Redis is unreachable); retry")
            state = self._channels[channel] = _Channel(channel)
            state.pending = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.backend.subscribe(channel), SUBSCRIBE_TIMEOUT_S)
            except BaseException as err:
                if not state.subscribers:
                    self._channels.pop(channel, None)
                    with contextlib.suppress(*self.backend.transient_errors):
                        await self.backend.unsubscribe(channel)
                if isinstance(err, TimeoutError):
                    raise Unavailable("live events are unavailable (Redis did not confirm); retry") from err
                raise
            finally:
                state.pending.set_result(None)
                state.pending = None
        elif state.pending is not None:
            await asyncio.shield(state.pending)
            if self._channels.get(channel) is not state:  # the subscription it waited on failed
                raise Unavailable("live events are unavailable (Redis did not confirm); retry")
        return state

    # -- delivery ------------------------------------------------------------

    def _on_message(self, channel: str, epoch: str, stream_id: str, message: bytes) -> None:
        """Collect; fan out on the next loop turn. Events that arrive together (a burst
        read from Redis in one go) then share one frame and one write per socket:
        under load that divides the system calls, the dominant cost, by the burst size."""
        self.events_in += 1
        state = self._channels.get(channel)
        if state is None:
            return
        if state.recovering is not None:
            state.recovering.append((epoch, stream_id, message))
            return
        if not self._burst:
            asyncio.get_running_loop().call_soon(self._flush)
        self._burst.append((state, epoch, stream_id, message))

    def _flush(self) -> None:
        """Deliver the burst in arrival order (so publish order holds across channels),
        each run of consecutive events of one channel together."""
        burst, self._burst = self._burst, []
        run: list[tuple[str, str, bytes]] = []
        current: _Channel | None = None
        for state, epoch, stream_id, message in burst:
            if state is not current and run:
                self._deliver_live(current, run)
                run = []
            current = state
            run.append((epoch, stream_id, message))
        if run:
            self._deliver_live(current, run)

    def _deliver_live(self, state: _Channel | None, run: list[tuple[str, str, bytes]]) -> None:
        if state is None or self._channels.get(state.name) is not state:
            return  # unsubscribed meanwhile
        if state.recovering is not None:  # Redis reconnected meanwhile: recovery orders it
            state.recovering.extend(run)
            return
        self._deliver(state, run)

    def _deliver(self, state: _Channel, items: list[tuple[str, str, bytes]]) -> None:
        """Fan a run of events of one channel out, in order."""
        events: list[tuple[Key, Meta, bytes]] = []
        for epoch, stream_id, message in items:
            key = stream_id_key(stream_id)
            if state.epoch is not None and epoch != state.epoch:
                self._fan(state, events)  # what came before the reset goes out before the notice
                events = []
                self._gap(state, "channel history was reset")
            elif state.epoch == epoch and state.last is not None and key <= state.last:
                continue  # already delivered (recovery overlap)
            state.epoch, state.last = epoch, key
            meta, body = split_message(message)
            if self.latency is not None and meta.t:
                self.latency.observe(max(time.time() - meta.t, 0.0))
            events.append((key, meta, _element(state.name, make_offset(epoch, stream_id), body)))
        self._fan(state, events)

    def _fan(self, state: _Channel, events: list[tuple[Key, Meta, bytes]]) -> None:
        if len(events) == 1 or any(m.o is not None or m.m or m.b is not None for _, m, _ in events):
            for event in events:  # personal, moderator-only or control events: one at a time
                self._fan_one(state, *event)
        elif events:
            self._fan_many(state, events)

    def _fan_one(self, state: _Channel, key: Key, meta: Meta, element: bytes) -> None:
        ready = text_frame(b"[" + element + b"]")  # built once, written to every socket as is
        only, mods, author = meta.o, meta.m, meta.a
        name = state.name
        count = 0
        for sub in state.subscribers:
            if (only is not None and only != sub.user_id) or (mods and not sub.is_moderator) \
                    or (author is not None and author in sub.blocked):
                continue
            if meta.b is not None:
                sub.blocked = frozenset(meta.b)  # block list changed on another socket of this user
            if sub.resuming:
                held = sub.resuming.get(name)
                if isinstance(held, list):
                    held.append((key, element))
                    count += 1
                    continue
                if held is not None:
                    if key <= held:
                        continue  # already sent from history by the resume
                    del sub.resuming[name]
            sub.deliver(element, ready)
            count += 1
        self.deliveries += count

    def _fan_many(self, state: _Channel, events: list[tuple[Key, Meta, bytes]]) -> None:
        """Several public events: one frame for all, the same bytes for every socket
        that blocked none of their authors (``element`` is then the comma-joined run,
        which the send queue splices into a JSON array like any other element)."""
        joined = b",".join(element for _, _, element in events)
        ready = text_frame(b"[" + joined + b"]")
        authors = frozenset(meta.a for _, meta, _ in events if meta.a is not None)
        name, n, count = state.name, len(events), 0
        for sub in state.subscribers:
            if sub.resuming and name in sub.resuming:
                held = sub.resuming[name]
                if isinstance(held, list):
                    held.extend((key, element) for key, _, element in events)
                    count += n
                    continue
                if events[-1][0] > held:
                    del sub.resuming[name]
                mine = [element for key, meta, element in events
                        if key > held and (meta.a is None or meta.a not in sub.blocked)]
                if mine:
                    part = b",".join(mine)
                    sub.deliver(part, text_frame(b"[" + part + b"]"))
                    count += len(mine)
            elif sub.blocked and not sub.blocked.isdisjoint(authors):
                mine = [element for _, meta, element in events if meta.a not in sub.blocked]
                if mine:
                    part = b",".join(mine)
                    sub.deliver(part, text_frame(b"[" + part + b"]"))
                    count += len(mine)
            else:
                sub.deliver(joined, ready)
                count += n
        self.deliveries += count

    def _gap(self, state: _Channel, why: str) -> None:
        notice = encode(Notice("gap", f"events on {state.name} may have been missed ({why}); "
                                      "resubscribe with your last offset or refetch", {"channel": state.name}))
        for sub in state.subscribers:
            if sub.resuming and not isinstance(sub.resuming.get(state.name, []), list):
                del sub.resuming[state.name]  # a floor of the old epoch means nothing now
            sub.enqueue(notice)

    async def _on_reconnect(self, channels: Iterable[str]) -> None:
        """After Redis came back: backfill each channel from its history. When history cannot
        fill the hole (Redis lost its data, or trimmed past it), announce a gap, then deliver
        what the channel's new history already holds: it was all published after the loss."""
        for name in channels:
            state = self._channels.get(name)
            if state is None:
                continue
            if state.epoch is None or state.last is None:
                continue  # nothing delivered yet, so nothing to have missed
            state.recovering = []
            try:
                entries = await self.backend.history(name, state.epoch, state.last)
                if entries is None:
                    self._gap(state, "the connection to Redis was lost and history could not fill it")
                    state.epoch = state.last = None
                    entries = await self.backend.current(name)
            except self.backend.transient_errors as err:  # must end in a gap notice, not a loss
                log.warning("history read failed during recovery of %s: %s", name, err)
                if state.epoch is not None:
                    self._gap(state, "the connection to Redis was lost and history could not be read")
                    state.epoch = state.last = None
                entries = []
            buffered, state.recovering = state.recovering, None
            self._deliver(state, [(e.epoch, e.stream_id, e.message) for e in entries])
            self._deliver(state, buffered)


def _permitted(sub: Subscriber, meta: Meta) -> bool:
    if meta.o is not None and meta.o != sub.user_id:
        return False
    if meta.m and not sub.is_moderator:
        return False
    return meta.a is None or meta.a not in sub.blocked


def _element(channel: str, offset: str, body: bytes) -> bytes:
    # body is the JSON object {"event":..,"ts":..,"data":..}; splice our fields in front.
    return b'{"type":"event","channel":' + _json.encode(channel) + b',"offset":"' + offset.encode() + b'",' + body[1:]

"""The orchestrator: channel registry, per-viewer filtering, resume merge, recovery.

One upstream subscription per channel per process. Each live event is turned into
its client bytes once per wire format (``_element``: JSON; transcoded from it once
for MessagePack, only while a channel has MessagePack subscribers) and the same
bytes are queued to every permitted subscriber of that format. Subscribers are the
sockets (``gateway.connection``); the hub only needs the small :class:`Subscriber`
protocol from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

import msgspec

from common.bus import Meta, make_offset, parse_offset, split_message, stream_id_key
from gateway.codec import JSON_CODEC, MSGPACK_CODEC, Codec
from gateway.hub.base import Backend, HistoryEntry, Unavailable
from gateway.protocol import Notice
from gateway.wsproto import data_frame

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from prometheus_client import Histogram

    from common.namespaces import Digest

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()

Key = tuple[int, int]
SUBSCRIBE_TIMEOUT_S = 3.0


class Subscriber(Protocol):
    """What the hub needs of a socket."""

    user_id: str
    is_moderator: bool
    blocked: frozenset[str]
    codec: Codec
    """The socket's wire format: every element the hub hands it is encoded in it."""
    resuming: dict[str, list[tuple[Key, bytes]] | Key]
    """Per channel being resumed: live events held until the missed ones are queued; after
    that, until live delivery passes it, the offset the resume ended at (a floor)."""

    def push(self, element: bytes) -> None:
        """Queue an element of ``codec`` (one or more messages); never blocks (overflow closes
        the socket)."""

    def deliver(self, element: bytes, frame_bytes: bytes) -> None:
        """Like push; ``frame_bytes`` is the ready WebSocket frame of ``element``."""

    def control(self, action: str, channels: list[str] | None) -> None:
        """A control event from the server API (``Meta.x``): disconnect, or drop ``channels``."""


class _Channel:
    __slots__ = ("binary", "digest", "digested", "epoch", "last", "name", "opened_ms", "pending", "recovering",
                 "subscribers", "timer")

    def __init__(self, name: str, digest: Digest | None = None) -> None:
        self.name = name
        self.opened_ms = int(time.time() * 1000) - 1000  # when this node joined it, less a second
        self.digest = digest
        self.digested: list[tuple[Key, Meta, bytes, str]] = []  # waiting for the next digest
        self.timer: asyncio.TimerHandle | None = None
        # Grouped by wire format, so each group's loop hands all its sockets the same bytes.
        self.subscribers: dict[Subscriber, None] = {}  # JSON
        self.binary: dict[Subscriber, None] | None = None  # MessagePack, while there are any
        self.epoch: str | None = None
        self.last: Key | None = None
        self.recovering: list[tuple[str, str, bytes]] | None = None
        # Set while the upstream subscription is being confirmed (one per user channel:
        # an asyncio.Event each would cost ~0.7 KB per connected user).
        self.pending: asyncio.Future[None] | None = None

    def add(self, sub: Subscriber) -> None:
        if not sub.codec.binary:
            self.subscribers[sub] = None
        elif self.binary is None:
            self.binary = {sub: None}
        else:
            self.binary[sub] = None

    def holds(self, sub: Subscriber) -> bool:
        return sub in self.subscribers or (self.binary is not None and sub in self.binary)

    def discard(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)
        if self.binary is not None:
            self.binary.pop(sub, None)
            if not self.binary:
                self.binary = None

    def groups(self) -> Iterator[tuple[Codec, dict[Subscriber, None]]]:
        yield JSON_CODEC, self.subscribers
        if self.binary:
            yield MSGPACK_CODEC, self.binary

    def everyone(self) -> Iterator[Subscriber]:
        for _, subs in self.groups():
            yield from subs

    def occupied(self) -> bool:
        return bool(self.subscribers or self.binary)


class Resume(msgspec.Struct):
    recovered: bool | None
    """None: no ``since`` given; True: every missed event is in ``missed``; False: refetch via REST."""
    missed: list[bytes] = msgspec.field(default_factory=list)
    after: Key | None = None
    position: str | None = None
    """Without ``since``: the channel's newest offset when the subscription began (a resume point)."""


class Hub:
    """Fan-out for one gateway process."""

    def __init__(self, backend: Backend, metrics: object | None = None,
                 digest_of: Callable[[str], Digest | None] | None = None) -> None:
        self.backend = backend
        self._digest_of = digest_of or (lambda channel: None)
        self.digests = 0
        backend.on_message = self._on_message
        backend.on_reconnect = self._on_reconnect
        backend.on_recovering = self._on_recovering
        self._channels: dict[str, _Channel] = {}
        self._missed: dict[tuple[str, str, str], tuple[bytes, Meta, bytes, Key]] = {}  # see _history_element
        self._missed_bytes = 0
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
        return len({sub.user_id for sub in state.everyone()}) if state is not None else 0

    # -- subscriptions -------------------------------------------------------

    async def subscribe(self, sub: Subscriber, channel: str, since: str | None = None, *,
                        position: bool = False) -> Resume:
        """Attach ``sub``. With ``since``, return what it missed; live events meanwhile
        are buffered for it until :meth:`finish_resume`, which the caller runs right
        after queueing the missed ones, so the cut-over has no gap and no duplicate. Without
        ``since``, ``position`` asks for the channel's newest offset (one more read) as a resume point.
        """
        state = await self._ensure(channel)
        # The own user: channel is held from auth on, whatever a subscribe to it again answers (the SDKs ask for its
        # resume point); any other channel whose catch-up failed is let go, as the SDKs let it go too.
        held = state.holds(sub) and channel == f"user:{sub.user_id}"
        if since is None:
            state.add(sub)
            if not position:
                return Resume(None)
            return Resume(None, position=await self._position(sub, state, channel, held=held))
        parsed = parse_offset(since)
        sub.resuming[channel] = []
        state.add(sub)
        entries = None
        if parsed is not None:
            try:
                entries = await self.backend.history(channel, parsed[0], parsed[1])
            except BaseException:  # the caller answers `unavailable`: nothing stays attached that was not
                await self._detach(sub, state, held=held)
                raise
        if entries is None:  # history no longer reaches back: a fresh resume point, so the next resume can
            return Resume(False, position=await self._position(sub, state, channel, stored=True, held=held))
        last: Key = parsed[1] if parsed else (0, 0)
        missed: list[bytes] = []
        for entry in entries:
            meta, element, key = self._history_element(channel, entry)
            if _permitted(sub, meta):
                missed.append(sub.codec.from_json(element))
            last = max(last, key)
        return Resume(True, missed, last)

    async def _position(self, sub: Subscriber, state: _Channel, channel: str, stored: bool = False,
                        held: bool = False) -> str | None:
        """The channel's newest offset for ``sub``, attached already: whatever is newer reaches it live.
        ``stored``: read from Redis, not from what this node delivered last (after a resume that history no
        longer reached, that memory may name the history that was lost). ``held``: ``sub`` keeps the channel
        if the read fails (its own user: channel)."""
        if not stored and state.epoch is not None and state.last is not None:  # what this node delivered last
            return make_offset(state.epoch, f"{state.last[0]}-{state.last[1]}")
        try:
            return await self.backend.position(channel)
        except BaseException:
            await self._detach(sub, state, held=held)
            raise

    def _history_element(self, channel: str, entry: HistoryEntry) -> tuple[Meta, bytes, Key]:
        """A stored event as a resume sends it, built once for all the sockets of a reconnect storm.
        Kept by (channel, epoch, id) with the stored bytes, which a hit must match (an id reused under
        the same epoch, e.g. by a replica promoted with a slow clock, is rebuilt); at most 4096 events
        or 8 MB, then the cache starts again."""
        cache_key = (channel, entry.epoch, entry.stream_id)
        made = self._missed.get(cache_key)
        if made is None or made[0] != entry.message:
            if len(self._missed) >= 4096 or self._missed_bytes > 8 << 20:
                self._missed.clear()
                self._missed_bytes = 0
            meta, body = split_message(entry.message)
            element = _element(channel, make_offset(entry.epoch, entry.stream_id), body)
            made = self._missed[cache_key] = (entry.message, meta, element, stream_id_key(entry.stream_id))
            self._missed_bytes += len(entry.message) + len(element)
        return made[1], made[2], made[3]

    async def _detach(self, sub: Subscriber, state: _Channel, *, held: bool) -> None:
        """Undo a subscription that failed half-way (a history or position read that failed). ``held``: the
        socket's own user: channel, held since auth, stays held and live: only the catch-up failed (before, the
        failed read of a subscribe to it again cut the socket off its own channel)."""
        if held:
            self.finish_resume(sub, state.name, None)  # the live events buffered meanwhile go out
            return
        sub.resuming.pop(state.name, None)
        with contextlib.suppress(*self.backend.transient_errors):
            await self.unsubscribe(sub, state.name)

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
                sub.push(element)
                last = key
        state = self._channels.get(channel)
        if last is not None and last == after and state is not None and (state.last is None or state.last < last):
            sub.resuming[channel] = last

    async def unsubscribe(self, sub: Subscriber, channel: str) -> None:
        state = self._channels.get(channel)
        if state is None:
            return
        state.discard(sub)
        sub.resuming.pop(channel, None)
        if not state.occupied():
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
            state = self._channels[channel] = _Channel(channel, self._digest_of(channel))
            state.pending = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):  # no task per subscribe, as wait_for makes
                    await self.backend.subscribe(channel)
            except BaseException as err:
                if not state.occupied():
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
            offset = make_offset(epoch, stream_id)
            element = _element(state.name, offset, body)
            if state.digest is not None and _coalesced(state.digest, meta, element):
                self._fan(state, events)  # what came before it goes out first
                events = []
                self._hold_for_digest(state, (key, meta, element, offset))
                continue
            if state.digested:
                self._flush_digest(state)  # a take-down never overtakes the item it takes down
            events.append((key, meta, element))
        self._fan(state, events)

    # -- digests ---------------------------------------------------------------

    def _hold_for_digest(self, state: _Channel, event: tuple[Key, Meta, bytes, str]) -> None:
        state.digested.append(event)
        if state.timer is None and state.digest is not None:
            state.timer = asyncio.get_running_loop().call_later(state.digest.interval_s, self._flush_digest, state)

    def _flush_digest(self, state: _Channel) -> None:
        """One ``<namespace>.digest`` per socket: how many items arrived, the newest in full, and the
        newest offset (a resume point). Sockets that blocked an author get their own, without them;
        a socket being resumed gets the items one by one, after its missed ones."""
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        pending, state.digested = state.digested, []
        if not pending or state.digest is None or self._channels.get(state.name) is not state:
            return
        digest = state.digest
        authors = frozenset(meta.a for _, meta, _, _ in pending if meta.a is not None)
        shared = _digest_element(state.name, digest, pending)
        for codec, subs in state.groups():
            element = shared if codec is JSON_CODEC else codec.from_json(shared)
            ready = _ready(codec, element)
            for sub in subs:
                held = sub.resuming.get(state.name) if sub.resuming else None
                if isinstance(held, list):
                    held.extend((key, codec.from_json(el) if codec.binary else el) for key, meta, el, _ in pending
                                if meta.a is None or meta.a not in sub.blocked)
                    continue
                if held is not None:
                    mine = [e for e in pending if e[0] > held and (e[1].a is None or e[1].a not in sub.blocked)]
                    if not mine:
                        continue
                    del sub.resuming[state.name]
                    own = _digest_element(state.name, digest, mine)
                    sub.push(codec.from_json(own) if codec.binary else own)
                elif sub.blocked and not sub.blocked.isdisjoint(authors):
                    mine = [e for e in pending if e[1].a not in sub.blocked]
                    if mine:
                        own = _digest_element(state.name, digest, mine)
                        sub.push(codec.from_json(own) if codec.binary else own)
                else:
                    sub.deliver(element, ready)
                self.digests += 1
                self.deliveries += len(pending)

    def _fan(self, state: _Channel, events: list[tuple[Key, Meta, bytes]]) -> None:
        if not events:
            return
        if state.subscribers:
            self._fan_group(state.name, state.subscribers, JSON_CODEC, events)
        if state.binary:  # transcoded once per event, shared by every MessagePack socket
            self._fan_group(state.name, state.binary, MSGPACK_CODEC,
                            [(key, meta, MSGPACK_CODEC.from_json(element)) for key, meta, element in events])

    def _fan_group(self, name: str, subs: dict[Subscriber, None], codec: Codec,
                   events: list[tuple[Key, Meta, bytes]]) -> None:
        if len(events) == 1 or any(m.o is not None or m.m or m.b is not None or m.x is not None for _, m, _ in events):
            for event in events:  # personal, moderator-only or control events: one at a time
                self._fan_one(name, subs, codec, *event)
        else:
            self._fan_many(name, subs, codec, events)

    def _fan_one(self, name: str, subs: dict[Subscriber, None], codec: Codec,
                 key: Key, meta: Meta, element: bytes) -> None:
        ready = _ready(codec, element)  # built once, written to every socket as is
        only, mods, author = meta.o, meta.m, meta.a
        count = 0
        for sub in subs:
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
            if meta.x is not None:  # after the event that says why, so the client reads it first
                sub.control(meta.x, meta.c)
        self.deliveries += count

    def _fan_many(self, name: str, subs: dict[Subscriber, None], codec: Codec,
                  events: list[tuple[Key, Meta, bytes]]) -> None:
        """Several public events: one frame for all, the same bytes for every socket
        that blocked none of their authors (``element`` is then the run, joined by the
        codec, which the send queue splices into a frame like any other element)."""
        joined = codec.join([element for _, _, element in events])
        ready = _ready(codec, joined)
        n, count = len(events), 0
        authors = frozenset(meta.a for _, meta, _ in events if meta.a is not None)
        for sub in subs:
            if sub.resuming and name in sub.resuming:
                held = sub.resuming[name]
                if isinstance(held, list):
                    held.extend((key, element) for key, meta, element in events
                                if meta.a is None or meta.a not in sub.blocked)
                    count += n
                    continue
                if events[-1][0] > held:
                    del sub.resuming[name]
                count += _deliver_part(sub, codec, [element for key, meta, element in events
                                                    if key > held and (meta.a is None or meta.a not in sub.blocked)])
            elif sub.blocked and not sub.blocked.isdisjoint(authors):
                count += _deliver_part(sub, codec, [element for _, meta, element in events
                                                    if meta.a not in sub.blocked])
            else:
                sub.deliver(joined, ready)
                count += n
        self.deliveries += count

    def _gap(self, state: _Channel, why: str) -> None:
        notice = Notice("gap", f"events on {state.name} may have been missed ({why}); "
                               "resubscribe with your last offset or refetch", {"channel": state.name})
        for codec, subs in state.groups():
            element = codec.encode(notice)
            for sub in subs:
                if sub.resuming and not isinstance(sub.resuming.get(state.name, []), list):
                    del sub.resuming[state.name]  # a floor of the old epoch means nothing now
                sub.push(element)

    def _on_recovering(self, channels: Iterable[str]) -> None:
        """The backend is about to resubscribe these channels: hold their live events (in arrival
        order) until :meth:`_on_reconnect` has delivered what history has first."""
        for name in channels:
            state = self._channels.get(name)
            if state is not None and state.recovering is None:
                state.recovering = []

    async def _on_reconnect(self, channels: Iterable[str]) -> None:
        """After Redis came back: backfill each channel from its history. When history cannot
        fill the hole (Redis lost its data, or trimmed past it), announce a gap, then deliver
        what the channel's new history already holds: it was all published after the loss.
        Every channel's live events are held from the start (not only while its own history is
        read), so none moves a channel's position past what its backfill must still deliver."""
        names = list(channels)
        self._on_recovering(names)
        for name in names:
            state = self._channels.get(name)
            if state is None:
                continue
            if state.recovering is None:  # another recovery of it finished meanwhile: this one reads again
                state.recovering = []
            try:
                entries: list[HistoryEntry] | None
                if state.epoch is None or state.last is None:
                    # Nothing delivered here yet, but events may have been published while we were
                    # away (an outbox relay can beat our resubscription): those Redis stamped after
                    # this node joined the channel (a second's margin for clock skew; more is harmless).
                    entries = [e for e in await self.backend.current(name)
                               if stream_id_key(e.stream_id)[0] >= state.opened_ms]
                else:
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


def _ready(codec: Codec, element: bytes) -> bytes:
    """The WebSocket frame of ``element``."""
    return data_frame(codec.payload(element), codec.binary)


def _deliver_part(sub: Subscriber, codec: Codec, mine: list[bytes]) -> int:
    """Deliver the events of a run that this socket may see, in a frame of their own."""
    if mine:
        part = codec.join(mine)
        sub.deliver(part, _ready(codec, part))
    return len(mine)


def _coalesced(digest: Digest, meta: Meta, element: bytes) -> bool:
    """Whether an event of a digest channel waits for the digest (an item for everyone, named in
    ``Digest.names``), rather than going out at once (personal, moderators', control, take-downs)."""
    if meta.o is not None or meta.m or meta.b is not None or meta.x is not None:
        return False
    head = element[:160]
    return any(name in head for name in digest.names)


def _digest_element(channel: str, digest: Digest, events: list[tuple[Key, Meta, bytes, str]]) -> bytes:
    items = b",".join(el for _, _, el, _ in events[len(events) - digest.items:]) if digest.items else b""
    return (b'{"type":"event","channel":' + _json.encode(channel) + b',"offset":"' + events[-1][3].encode()
            + b'","event":"' + digest.event.encode() + b'","ts":' + _json.encode(time.time())
            + b',"data":{"count":' + str(len(events)).encode() + b',"items":[' + items + b"]}}")


def _element(channel: str, offset: str, body: bytes) -> bytes:
    # body is the JSON object {"event":..,"ts":..,"data":..}; splice our fields in front.
    return b'{"type":"event","channel":' + _json.encode(channel) + b',"offset":"' + offset.encode() + b'",' + body[1:]

"""Simulated users: one persistent :class:`User` per person, a fresh :class:`Conn` per socket.

A user keeps what a real app keeps across reconnects: its token, its channels,
the last offset seen per channel (resubscribed with ``since``), and its commands
not yet answered (resent with the same ``id``, so a write is applied once).

Readers, the many, take a fast path: event frames are never JSON-decoded; each
event's channel, offset and ``ts`` are found with ``bytes.find``. Frames holding
an ack, error or notice, and every frame of the few active users, are decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from loadtest.texts import FRIENDLY, REACTIONS, TOXIC, VYBE_TYPES
from loadtest.wsclient import WsClient, client_frame, handshake

if TYPE_CHECKING:
    from loadtest.runner import Run
    from loadtest.stats import Stats

_EV = b'{"type":"event","channel":"'
_EV_LEN = len(_EV)
_OFFSET_GAP = len(b'","offset":"')
_TS = b'"ts":'
_ACK = b'"type":"ack"'
_ERR = b'"type":"error"'
_NOTICE = b'"type":"notice"'
_DIGEST = b'.digest","ts":'
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_RETRY_CODES = {"rate_limited", "unavailable"}

Reply = Callable[[Any, "str | None"], None]


@dataclass
class Pending:
    kind: str
    payload: bytes
    sent_at: float
    on_reply: Reply | None
    retry: bool  # resend on reconnect (writes: same id, applied once)
    vybe: str | None = None  # the vybe whose counters this write moves (correctness check)
    attempts: int = 1


@dataclass
class VybeBelief:
    """What the simulated users believe they did to one vybe."""

    toxic: bool
    reactions: set[tuple[str, str]] = field(default_factory=set)
    comments: int = 0
    touched: bool = False
    uncertain: bool = False  # a write whose outcome we never learned


class Ledger:
    """Shared truth of the simulation, for the correctness check."""

    def __init__(self, hot: int, hot_share: float) -> None:
        self.vybes: dict[str, VybeBelief] = {}
        self.targets: list[str] = []  # friendly vybes, in creation order; the first `hot` are the hot spots
        self.hot = hot
        self.hot_share = hot_share
        self.toxic: dict[str, tuple[str, float]] = {}  # id -> (kind, acked at)
        self.flagged: dict[str, float] = {}  # target id -> first report.flagged arrival
        self.flag_latency: list[float] = []
        self.false_positives: set[str] = set()
        self.vybes_posted = self.comments_posted = 0
        self.toxic_vybes = self.toxic_comments = 0
        self.reactions_applied = self.unreactions_applied = 0
        self.claims = self.resolves = 0

    def pick_target(self, rnd: random.Random) -> str | None:
        t = self.targets
        if not t:
            return None
        if rnd.random() < self.hot_share:
            return t[rnd.randrange(min(self.hot, len(t)))]
        return t[rnd.randrange(len(t))]

    def add_vybe(self, vid: str, toxic: bool) -> None:
        self.vybes[vid] = VybeBelief(toxic)
        if not toxic:
            self.targets.append(vid)

    def flagged_event(self, target_id: str, now: float) -> None:
        self.flagged.setdefault(target_id, now)

    def settle(self) -> None:
        """After the run: flag latency (ack of the toxic write -> report.flagged) and false positives.
        (A flag can arrive before the author's ack: the two travel on different sockets.)"""
        self.flag_latency = [max(0.0, self.flagged[t] - at) for t, (_, at) in self.toxic.items() if t in self.flagged]
        self.false_positives = {t for t in self.flagged if t not in self.toxic}


class Conn(WsClient):
    """One socket of a user."""

    def __init__(self, user: User, request: bytes) -> None:
        super().__init__(request)
        self.user = user
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_open(self) -> None:
        self.user.opened(self)

    def on_text(self, payload: bytes, now: float) -> None:
        self.user.frame(payload, now)

    def on_refused(self, status: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(status))

    def on_closed(self, was_alive: bool, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before auth ack: {exc}"))
        self.user.lost(self, was_alive)


class User:
    """One simulated person; ``role`` decides what it does."""

    role = "user"
    fast = False

    def __init__(self, run: Run, uid: str, index: int, channels: list[str]) -> None:
        self.run = run
        self.stats: Stats = run.stats
        self.ledger: Ledger = run.ledger
        self.uid = uid
        self.index = index
        self.channels = channels
        self.offsets: dict[bytes, bytes] = {}
        self.pending: dict[str, Pending] = {}
        self.seq = 0
        self.conn: Conn | None = None
        self.up = asyncio.Event()
        self.url_index = index
        self.failures = 0
        self.reconnecting = False
        self.churned = False
        self.rnd = random.Random(f"{run.run_id}-{uid}")
        self.task: asyncio.Task[None] | None = None
        self._token: str | None = None

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.run.token(self.uid, "MODERATOR" if self.role == "moderator" else "MEMBER")
        return self._token

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> bool:
        """Open a socket, authenticate and (re)subscribe; True when the auth ack came."""
        run = self.run
        host, port, path = run.targets[self.url_index % len(run.targets)]
        conn = Conn(self, handshake(host, port, path))
        loop = asyncio.get_running_loop()
        local = (run.sources[self.index % len(run.sources)], 0) if run.sources else None
        try:
            async with run.handshakes:
                await asyncio.wait_for(loop.create_connection(lambda: conn, host, port, local_addr=local),
                                       run.args.connect_timeout)
                await asyncio.wait_for(asyncio.shield(conn.ready), run.args.connect_timeout)
        except (TimeoutError, OSError, ConnectionError) as err:
            conn.abort()
            self.stats.connect_failed(f"{type(err).__name__}: {err}")
            return False
        return True

    def opened(self, conn: Conn) -> None:
        """Handshake done: pipeline auth, subscriptions (with ``since``) and unanswered writes."""
        self.conn = conn
        self.stats.conn_opened += 1
        frames = [self._frame("auth", {"token": self.token}, self._auth_reply, retry=False)]
        for ch in self.channels:
            frames.append(self._subscribe_frame(ch))
        for p in list(self.pending.values()):
            if p.retry:  # unanswered writes go out again with the same id: applied once
                p.sent_at = time.time()
                p.attempts += 1
                frames.append(p.payload)
        conn.write(b"".join(frames))

    def _auth_reply(self, result: Any, code: str | None) -> None:
        conn = self.conn
        if conn is None or conn.ready.done():
            return
        if code is None:
            conn.ready.set_result(None)
            self.failures = 0
            self.up.set()
        else:
            conn.ready.set_exception(ConnectionError(f"auth refused: {code}"))

    def _subscribe_frame(self, channel: str) -> bytes:
        since = self.offsets.get(channel.encode())
        fields: dict[str, Any] = {"channel": channel}
        if since is not None:
            fields["since"] = since.decode()
            self.stats.resumes += 1
        return self._frame("subscribe", fields, self._subscribed, retry=False)

    def _subscribed(self, result: Any, code: str | None) -> None:
        if code is None and isinstance(result, dict):
            rec = result.get("recovered")
            if rec is True:
                self.stats.resumes_recovered += 1
                self.stats.resumed_events += int(result.get("missed") or 0)
            elif rec is False:
                self.stats.resumes_not_recovered += 1

    def lost(self, conn: Conn, was_alive: bool) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self.up.clear()
        if self.run.stopping:
            return  # our own close at the end of the run
        if self.churned:
            self.churned = False
            self.stats.close("churn")
        elif conn.close_code is not None:
            self.stats.close(conn.close_code)
        elif was_alive and conn.open:
            self.stats.close("dropped")
        # Commands sent on this socket that are not retried are lost with it.
        for cid in [c for c, p in self.pending.items() if not p.retry]:
            del self.pending[cid]
        if conn.open and not self.run.stopping and not self.reconnecting:
            self.reconnecting = True
            asyncio.get_running_loop().create_task(self.reconnect())

    async def reconnect(self) -> None:
        """As an app does: back off with jitter, try the next gateway, resume by offset."""
        try:
            while not self.run.stopping:
                delay = min(5.0, 0.25 * (2 ** min(self.failures, 5))) * (0.5 + self.rnd.random())
                self.failures += 1
                await asyncio.sleep(delay)
                if self.run.stopping:
                    return
                self.url_index += 1
                self.stats.reconnects += 1
                if await self.connect():
                    return
        finally:
            self.reconnecting = False

    # -- commands ------------------------------------------------------------------------

    def _frame(self, kind: str, fields: dict[str, Any], on_reply: Reply | None, retry: bool,
               vybe: str | None = None) -> bytes:
        self.seq += 1
        cid = f"{self.uid}.{self.seq}"
        payload = _encode({"type": kind, "id": cid, **fields})
        frame = client_frame(1, payload)
        self.pending[cid] = Pending(kind, frame, time.time(), on_reply, retry, vybe)
        self.stats.command_sent(kind)
        return frame

    def send(self, kind: str, fields: dict[str, Any], on_reply: Reply | None = None, retry: bool = True,
             vybe: str | None = None) -> None:
        frame = self._frame(kind, fields, on_reply, retry, vybe)
        if self.conn is not None:
            self.conn.write(frame)

    def _resend(self, cid: str) -> None:
        p = self.pending.get(cid)
        if p is not None and self.conn is not None:
            p.sent_at = time.time()
            p.attempts += 1
            self.conn.write(p.payload)

    # -- frames --------------------------------------------------------------------------

    def frame(self, p: bytes, now: float) -> None:
        stats = self.stats
        if self.fast and _ACK not in p and _ERR not in p and _NOTICE not in p and _DIGEST not in p:
            lat_h = stats.latency
            sec_h = stats.sec_hist(now)
            offsets = self.offsets
            n = 0
            i = p.find(_EV)
            while i >= 0:
                j = i + _EV_LEN
                k = p.find(b'"', j)
                o = k + _OFFSET_GAP
                e = p.find(b'"', o)
                t = p.find(_TS, e) + 5
                c = p.find(b",", t)
                lat = now - float(p[t:c])
                lat_h.add(lat)
                sec_h.add(lat)
                offsets[p[j:k]] = p[o:e]
                n += 1
                i = p.find(_EV, c)
            stats.delivered += n
            return
        try:
            msgs = _decode(p)
        except msgspec.DecodeError:
            stats.error("undecodable_frame", p[:200].decode("utf-8", "replace"))
            return
        if not isinstance(msgs, list):
            msgs = [msgs]
        for m in msgs:
            t = m.get("type")
            if t == "event" and str(m.get("event", "")).endswith(".digest"):
                self._digest(m, now)
            elif t == "event":
                lat = now - float(m.get("ts") or now)
                stats.latency.add(lat)
                stats.sec_hist(now).add(lat)
                stats.delivered += 1
                off = m.get("offset")
                if off:
                    self.offsets[m["channel"].encode()] = off.encode()
                self.on_event(m, now)
            elif t == "ack" or t == "error":
                self._answer(m, now)
            elif t == "notice":
                code = m.get("code", "?")
                stats.notices[code] = stats.notices.get(code, 0) + 1
                if code == "gap":
                    pass  # the next resubscribe with our offset answers recovered:false

    def _digest(self, m: dict[str, Any], now: float) -> None:
        """A ``<namespace>.digest`` (coalesced delivery): it delivers ``count`` items; the latency
        is each included item's, from its own ``ts`` (when it was published) to now, so it
        includes the wait for the digest."""
        data = m.get("data") or {}
        for item in data.get("items") or ():
            lat = now - float(item.get("ts") or now)
            self.stats.latency.add(lat)
            self.stats.sec_hist(now).add(lat)
        self.stats.delivered += int(data.get("count") or 0)
        self.stats.digests += 1
        off = m.get("offset")
        if off:
            self.offsets[m["channel"].encode()] = off.encode()

    def _answer(self, m: dict[str, Any], now: float) -> None:
        cid = str(m.get("id") or "")
        p = self.pending.get(cid) if cid else None
        if m["type"] == "ack":
            if p is None:
                return
            del self.pending[cid]
            self.stats.ack(p.kind, now - p.sent_at)
            if p.on_reply is not None:
                p.on_reply(m.get("result"), None)
            return
        code = m.get("code", "?")
        self.stats.error(code, f"{p.kind if p else '?'}: {m.get('message', '')}")
        if p is None:
            return
        if code in _RETRY_CODES and p.retry and p.attempts < 5:
            delay = float(m.get("retry_after") or 0.2)
            asyncio.get_running_loop().call_later(delay, self._resend, cid)
            return
        del self.pending[cid]
        if p.on_reply is not None:
            p.on_reply(None, code)

    def on_event(self, m: dict[str, Any], now: float) -> None:
        pass

    # -- behaviour -----------------------------------------------------------------------

    async def behave(self) -> None:
        """The user's activity loop until the run's write phase ends."""

    async def _tick(self, rate: float) -> bool:
        """Sleep an exponential interval (Poisson arrivals at ``rate``/s); False when writes stop."""
        await asyncio.sleep(self.rnd.expovariate(rate) if rate > 0 else 3600)
        while not self.up.is_set() and not self.run.writes_done:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.up.wait(), 1.0)
        return not self.run.writes_done


class Reader(User):
    role = "reader"
    fast = True


class Poster(User):
    role = "poster"

    async def behave(self) -> None:
        args = self.run.args
        total = args.post_rate + args.comment_rate
        if total <= 0:
            return
        while await self._tick(total):
            toxic = self.rnd.random() < args.toxic_share
            text = self.rnd.choice(TOXIC if toxic else FRIENDLY)
            if self.rnd.random() < args.post_rate / total:
                self.post(text, toxic)
            else:
                vid = self.ledger.pick_target(self.rnd)
                if vid is not None:
                    self.comment(vid, text, toxic)

    def post(self, text: str, toxic: bool) -> None:
        def done(result: Any, code: str | None) -> None:
            if code is None:
                led = self.ledger
                led.vybes_posted += 1
                led.add_vybe(result["id"], toxic)
                if toxic:
                    led.toxic_vybes += 1
                    led.toxic[result["id"]] = ("vybe", time.time())

        self.send("post_vybe", {"content": text, "vybe_type": self.rnd.choice(VYBE_TYPES)}, done)

    def comment(self, vid: str, text: str, toxic: bool) -> None:
        belief = self.ledger.vybes[vid]
        belief.touched = True

        def done(result: Any, code: str | None) -> None:
            if code is None:
                led = self.ledger
                led.comments_posted += 1
                belief.comments += 1
                if toxic:
                    led.toxic_comments += 1
                    led.toxic[result["id"]] = ("comment", time.time())

        self.send("comment", {"vybe_id": vid, "content": text}, done, vybe=vid)


class Reactor(User):
    role = "reactor"

    async def behave(self) -> None:
        inflight: set[tuple[str, str]] = set()
        rate = self.run.args.react_rate
        while await self._tick(rate):
            vid = self.ledger.pick_target(self.rnd)
            if vid is None:
                continue
            reaction = self.rnd.choice(REACTIONS)
            key = (vid, reaction)
            if key in inflight:
                continue
            belief = self.ledger.vybes[vid]
            belief.touched = True
            mine = (self.uid, reaction)
            kind = "unreact" if mine in belief.reactions else "react"
            inflight.add(key)

            def done(result: Any, code: str | None, kind: str = kind, key: tuple[str, str] = key,
                     mine: tuple[str, str] = mine, belief: VybeBelief = belief) -> None:
                inflight.discard(key)
                if code is not None:
                    return
                # applied:false means the state already was so; either way we now know it.
                if kind == "react":
                    belief.reactions.add(mine)
                    if result.get("applied"):
                        self.ledger.reactions_applied += 1
                else:
                    belief.reactions.discard(mine)
                    if result.get("applied"):
                        self.ledger.unreactions_applied += 1

            self.send(kind, {"target_type": "SHARED_VYBE", "target_id": vid, "reaction": reaction}, done, vybe=vid)


class Moderator(User):
    role = "moderator"

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.busy = 0

    def on_event(self, m: dict[str, Any], now: float) -> None:
        if m.get("event") != "report.flagged":
            return
        data = m.get("data") or {}
        target = data.get("target_id")
        if target:
            self.ledger.flagged_event(str(target), now)
        case = data.get("case_id")
        n = self.run.args.moderators
        if case and n and (hash(str(case)) % n) == self.index and data.get("state", "open") == "open":
            self.queue.put_nowait(data)

    async def behave(self) -> None:
        rate = self.run.args.mod_rate
        while not self.run.stopping:
            try:
                data = await asyncio.wait_for(self.queue.get(), 1.0)
            except TimeoutError:
                continue
            await asyncio.sleep(self.rnd.expovariate(rate) if rate > 0 else 0)
            self.act(data)

    def act(self, data: dict[str, Any]) -> None:
        case = data["case_id"]
        toxic = str(data.get("target_id")) in self.ledger.toxic
        action = self.run.args.mod_action if toxic else "dismiss"
        self.busy += 1

        def resolved(result: Any, code: str | None) -> None:
            self.busy -= 1
            if code is None:
                self.ledger.resolves += 1

        def claimed(result: Any, code: str | None) -> None:
            if code is not None:
                self.busy -= 1
                return
            self.ledger.claims += 1
            self.send("resolve", {"case_id": case, "version": result["version"], "action": action,
                                  "note": "vybe loadtest"}, resolved)

        self.send("claim", {"case_id": case, "version": data["version"]}, claimed)


ROLES: dict[str, type[User]] = {"reader": Reader, "poster": Poster, "reactor": Reactor, "moderator": Moderator}

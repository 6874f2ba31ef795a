"""The guarantees a fault must not break, as functions that return what broke.

Each reads the system of record (PostgreSQL) or the channel history (the Redis
stream ``{prefix}h:{channel}``; each entry's field ``m`` is ``<meta-json>\\n<body-json>``,
body ``{"event","ts","data"}``, see common/bus.py) with a fresh connection, so a
check works whatever the fault did to earlier connections.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from common import redisconn
from common.bus import Keys
from db.counters import Drift, check_counters

if TYPE_CHECKING:
    from load import Client, Outcome
    from services import Proc


# -- commands -------------------------------------------------------------------

def unanswered(outcomes: list[Outcome], allow_closed: bool = False) -> list[Outcome]:
    """Attempts that got neither an ack nor a typed error (``closed``: the socket was lost first)."""
    bad = ("timeout",) if allow_closed else ("timeout", "closed")
    return [o for o in outcomes if o.kind in bad or (o.kind == "error" and not isinstance(o.code, str))]


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts by outcome: ``ack``, ``timeout``, ``closed``, ``error:<code>``."""
    return dict(collections.Counter(o.kind if o.kind != "error" else f"error:{o.code}" for o in outcomes))


async def lost_writes(dsn: str, outcomes: list[Outcome]) -> list[str]:
    """Acknowledged posts and comments whose rows are not in PostgreSQL."""
    vybes = {o.result["id"] for o in outcomes if o.kind == "ack" and o.type == "post_vybe"}
    comments = {o.result["id"] for o in outcomes if o.kind == "ack" and o.type == "comment"}
    conn = await asyncpg.connect(dsn)
    try:
        have_v = {r[0] for r in await conn.fetch("SELECT id::text FROM shared_vybes WHERE id::text = ANY($1)",
                                                 list(vybes))}
        have_c = {r[0] for r in await conn.fetch("SELECT id::text FROM comments WHERE id::text = ANY($1)",
                                                 list(comments))}
    finally:
        await conn.close()
    return sorted((vybes - have_v) | (comments - have_c))


async def counter_drift(dsn: str) -> list[Drift]:
    """``db.counters.check_counters``: every denormalized counter that differs from its rows."""
    conn = await asyncpg.connect(dsn)
    try:
        return await check_counters(conn)
    finally:
        await conn.close()


# -- channel history ------------------------------------------------------------

@dataclass(frozen=True)
class HistoryEvent:
    channel: str
    offset: str
    """``<epoch>-<stream id>``: what clients see (common.bus.make_offset)."""
    event: str
    ts: float
    data: Any
    joined: bool = False
    """Stored in one stream entry with other events (0x1E-separated): a publishing bug, reported as such."""


async def read_history(redis_url: str, prefix: str, channel: str) -> list[HistoryEvent]:
    """Every event kept in ``channel``'s history, oldest first (empty when Redis has none)."""
    keys = Keys(prefix)
    client = await redisconn.connect(redis_url)  # one server or a cluster
    try:
        epoch = cast("bytes | None", await client.get(keys.epoch(channel)))
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(keys.stream(channel), "-", "+"))
    finally:
        await client.aclose()
    out = []
    for sid, fields in entries:
        if b"z" in fields:  # a resume point's marker (common.bus.POSITION_SCRIPT), never an event
            continue
        offset = f"{(epoch or b'?').decode()}-{sid.decode()}"
        parts = fields[b"m"].split(b"\x1e")  # one event per entry; several would be a bug, kept visible
        for part in parts:
            body = _body(part)
            out.append(HistoryEvent(channel, offset, body["event"], body["ts"], body["data"], len(parts) > 1))
    return out


def _body(message: bytes) -> dict[str, Any]:
    text = message.partition(b"\n")[2].decode()
    body, end = json.JSONDecoder().raw_decode(text)
    if text[end:].strip():
        raise AssertionError(f"a history entry is not <meta>\\n<one JSON body>: {message!r}")
    return body  # type: ignore[no-any-return]


async def last_offset(redis_url: str, prefix: str, channel: str) -> str | None:
    """The newest offset of ``channel`` now: a reader's baseline (it must receive everything after it)."""
    history = await read_history(redis_url, prefix, channel)
    return history[-1].offset if history else None


@dataclass
class FeedReport:
    missing: list[str] = field(default_factory=list)
    """Committed PUBLIC vybes with no ``vybe.created`` in the feed history."""
    duplicates: list[str] = field(default_factory=list)
    """Vybes announced more than once."""
    phantoms: list[str] = field(default_factory=list)
    """Announced vybes with no row (an event for a write that did not commit)."""

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.phantoms)


async def feed_vs_rows(dsn: str, redis_url: str, prefix: str, since: float | None = None) -> FeedReport:
    """Every committed vybe (created at or after ``since``) is in ``feed``'s history exactly once."""
    history = [h for h in await read_history(redis_url, prefix, "feed") if h.event == "vybe.created"]
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id::text AS id, created_at FROM shared_vybes WHERE privacy_level = 'PUBLIC'")
    finally:
        await conn.close()
    cut = datetime.fromtimestamp(since, UTC) if since is not None else None
    committed = {r["id"] for r in rows if cut is None or r["created_at"] >= cut}
    counts = collections.Counter(h.data["id"] for h in history)
    return FeedReport(missing=sorted(committed - set(counts)), duplicates=sorted(i for i, n in counts.items() if n > 1),
                      phantoms=sorted(set(counts) - {r["id"] for r in rows}))


# -- delivery to live subscribers -----------------------------------------------

@dataclass
class Delivery:
    reader: str
    channel: str
    missing: list[HistoryEvent] = field(default_factory=list)
    """In history after the baseline, not received, and not covered by a gap notice."""
    excused: int = 0
    """Not received, but appended to history before a gap notice (or ``recovered: false``) told the reader."""
    duplicates: list[str] = field(default_factory=list)
    gaps: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates)


def _after(offset: str, baseline: str | None) -> bool:
    if baseline is None:
        return True
    epoch, _, sid = offset.partition("-")
    b_epoch, _, b_sid = baseline.partition("-")
    if epoch != b_epoch:  # history was reset: all of it is newer than the baseline
        return True
    ms, _, seq = sid.partition("-")
    b_ms, _, b_seq = b_sid.partition("-")
    return (int(ms), int(seq)) > (int(b_ms), int(b_seq))


def _published_at(offset: str) -> float:
    """When Redis appended the event (its stream id's milliseconds): ``ts`` is when the write stored it,
    which precedes publishing by a whole outage when the outbox relayed it afterwards."""
    return int(offset.split("-")[1]) / 1000


def delivery(reader: Client, channel: str, history: list[HistoryEvent], baseline: str | None) -> Delivery:
    """Did ``reader`` receive every event of ``channel`` after ``baseline``, once each, or hear of the gap?"""
    got = [e["offset"] for e in reader.received(channel)]
    counts = collections.Counter(got)
    lost = [x.at for x in reader.lost if x.channel == channel]
    told_until = max(lost, default=0.0)
    report = Delivery(reader.name, channel, duplicates=sorted(o for o, n in counts.items() if n > 1), gaps=len(lost))
    for h in history:
        if not _after(h.offset, baseline) or h.offset in counts:
            continue
        if _published_at(h.offset) <= told_until:
            report.excused += 1
        else:
            report.missing.append(h)
    return report


async def settle(readers: list[Client], redis_url: str, prefix: str, baselines: dict[str, str | None],
                 timeout: float = 10.0) -> list[Delivery]:
    """Wait (up to ``timeout``) until every reader has every event of its channels; return the final reports."""
    deadline = time.monotonic() + timeout
    while True:
        histories = {c: await read_history(redis_url, prefix, c) for c in baselines}
        reports = [delivery(r, c, histories[c], baselines[c]) for r in readers for c in baselines]
        if all(not d.missing for d in reports) or time.monotonic() > deadline:
            return reports
        await asyncio.sleep(0.25)


# -- readiness ------------------------------------------------------------------

class ReadySampler:
    """Polls each gateway's ``/readyz`` in the background; keeps (time answered, status or None)."""

    def __init__(self, gateways: list[Proc], interval_s: float = 0.1) -> None:
        self.gateways, self.interval_s = gateways, interval_s
        self.samples: dict[str, list[tuple[float, int | None]]] = {g.name: [] for g in gateways}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> ReadySampler:
        self._tasks = [asyncio.create_task(self._poll(g), name=f"readyz-{g.name}") for g in self.gateways]
        return self

    async def _poll(self, gw: Proc) -> None:
        while True:
            status = await gw.readyz(timeout=8.0)
            self.samples[gw.name].append((time.time(), status))
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def unready_between(self, name: str, t0: float, t1: float) -> bool:
        """Some answer (or failure to answer) other than 200 arrived between ``t0`` and ``t1``."""
        return any(t0 <= t <= t1 and s != 200 for t, s in self.samples[name])

    def recovery_s(self, name: str, since: float) -> float | None:
        """Seconds from ``since`` to the first 200 after it (None: never)."""
        return next((round(t - since, 2) for t, s in self.samples[name] if t >= since and s == 200), None)

    async def wait_ready(self, since: float, timeout: float) -> dict[str, float | None]:
        """Wait until every gateway answered 200 after ``since`` (or ``timeout``); seconds each took."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.recovery_s(g.name, since) is not None for g in self.gateways):
                break
            await asyncio.sleep(0.1)
        return {g.name: self.recovery_s(g.name, since) for g in self.gateways}


# -- moderation cases -----------------------------------------------------------

def case_version_problems(history: list[HistoryEvent], stored: dict[str, int]) -> list[str]:
    """Per case on ``mod:flagged``, in history order: every change carries a higher version (an event
    repeating a version must repeat the same case), and the last announced version is the stored one."""
    by_target: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for h in history:
        if isinstance(h.data, dict) and "version" in h.data:
            by_target[str(h.data["target_id"])].append(h.data)
    problems = []
    for target, cases in by_target.items():
        for prev, cur in itertools.pairwise(cases):
            changed = sorted(k for k in prev.keys() | cur.keys() if prev.get(k) != cur.get(k))
            if cur["version"] < prev["version"]:
                problems.append(f"{target}: version went back {prev['version']} -> {cur['version']}")
            elif cur["version"] == prev["version"] and changed:
                problems.append(f"{target}: {changed} changed with no new version (still {cur['version']})")
        if target in stored and stored[target] != cases[-1]["version"]:
            problems.append(f"{target}: stored version {stored[target]}, last announced {cases[-1]['version']}")
    return problems

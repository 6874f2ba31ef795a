"""What every load-under-fault scenario shares: run steady load, break something, wait for
recovery, stop, then gather the figures and the broken guarantees in one place."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from checks import (
    Delivery,
    FeedReport,
    ReadySampler,
    counter_drift,
    feed_vs_rows,
    last_offset,
    lost_writes,
    read_history,
    settle,
    summary,
    unanswered,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from conftest import Rig
    from load import Load, Outcome

STEADY_S = 2.0
"""Load before the fault and after recovery."""
READY_WITHIN_S = 10.0
"""Readiness must be back this long after the service is (the reconnect backoff caps at 5 s)."""


@dataclass
class Window:
    """When the fault began (``down``) and when the service was back (``up``), epoch seconds."""

    down: float = 0.0
    up: float = 0.0


@dataclass
class Run:
    """Everything a scenario measured; ``figures()`` is what the owner wants printed."""

    name: str
    window: Window
    load: Load
    sampler: ReadySampler
    ready_s: dict[str, float | None] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    feed: FeedReport = field(default_factory=FeedReport)
    lost: list[str] = field(default_factory=list)
    drift: list[Any] = field(default_factory=list)
    joined: dict[str, int] = field(default_factory=dict)
    """Per channel: history entries that hold several events."""

    @property
    def outcomes(self) -> list[Outcome]:
        return self.load.outcomes

    def first_ack_after_up_s(self) -> float | None:
        """Seconds from the service's return to the first acknowledged command sent after it (any writer)."""
        return min((s for s in self.writers_back_s().values() if s is not None), default=None)

    def writers_back_s(self) -> dict[str, float | None]:
        """Per writer: seconds from the service's return to its first acknowledged command sent after it."""
        back: dict[str, float | None] = {}
        for w in self.load.writers:
            times = [o.answered for o in w.client.outcomes
                     if o.kind == "ack" and o.answered is not None and o.sent >= self.window.up]
            back[w.client.name] = round(min(times) - self.window.up, 2) if times else None
        return back

    def unready_during(self) -> dict[str, bool]:
        return {g: self.sampler.unready_between(g, self.window.down, self.window.up + 0.5)
                for g in self.sampler.samples}

    def figures(self, **extra: Any) -> dict[str, Any]:
        return {
            "scenario": self.name, "down_s": round(self.window.up - self.window.down, 2),
            "ready_recovery_s": self.ready_s, "unready_during_fault": self.unready_during(),
            "first_ack_after_up_s": self.first_ack_after_up_s(), "commands": summary(self.outcomes),
            "gaps": sum(d.gaps for d in self.deliveries), "excused_misses": sum(d.excused for d in self.deliveries),
            "unanswered": len(unanswered(self.outcomes)), **extra,
        }

    def report(self, **extra: Any) -> None:
        print(json.dumps(self.figures(**extra), sort_keys=True))


async def run_under_load(rig: Rig, name: str, fault: Callable[[Window], Awaitable[None]],
                         feed_since_down: bool = False) -> Run:
    """Start 2 gateways + a worker and the load; run ``fault`` (it sets the window); check afterwards."""
    await rig.start(gateways=2, workers=1)
    load = await rig.load()
    baselines = {c: await last_offset(rig.redis.url, rig.prefix, c) for c in ("feed", f"vybe:{load.seed}")}
    sampler = ReadySampler(rig.gateways).start()
    window = Window()
    load.start()
    try:
        await asyncio.sleep(STEADY_S)
        await fault(window)
        ready_s = await sampler.wait_ready(window.up, READY_WITHIN_S + 5)
        await asyncio.sleep(STEADY_S)
    finally:
        await load.finish()
        await sampler.stop()
    result = Run(name, window, load, sampler, ready_s)
    result.deliveries = await settle(load.readers, rig.redis.url, rig.prefix, baselines)
    result.feed = await feed_vs_rows(rig.dsn, rig.redis.url, rig.prefix, window.down if feed_since_down else None)
    result.lost = await lost_writes(rig.dsn, load.outcomes)
    result.drift = await counter_drift(rig.dsn)
    for channel in baselines:
        history = await read_history(rig.redis.url, rig.prefix, channel)
        result.joined[channel] = len({h.offset for h in history if h.joined})
    return result


def few(outcomes: list[Outcome], n: int = 3) -> str:
    """A short listing of some outcomes for a failure message."""
    return "; ".join(o.brief() for o in outcomes[:n]) + (f"; ... ({len(outcomes)} in all)" if len(outcomes) > n else "")


def loss_problems(r: Run) -> list[str]:
    """Every command answered; no acked write lost; history complete; subscribers complete; counters exact."""
    problems = []
    if silent := unanswered(r.outcomes):
        problems.append(f"{len(silent)} command attempts got no answer: {few(silent)}")
    if r.lost:
        problems.append(f"acknowledged writes missing from PostgreSQL: {r.lost[:5]}")
    if not r.feed.ok:
        problems.append(f"feed history vs committed rows: {len(r.feed.missing)} committed vybes never announced "
                        f"{r.feed.missing[:3]}, duplicates {r.feed.duplicates[:3]}, phantoms {r.feed.phantoms[:3]}")
    for d in r.deliveries:
        if not d.ok:
            problems.append(f"{d.reader} on {d.channel}: {len(d.missing)} events missed without a gap notice "
                            f"(e.g. {[(m.event, m.offset) for m in d.missing[:2]]}), duplicates {d.duplicates[:2]}")
    if r.drift:
        problems.append(f"counter drift: {r.drift[:5]}")
    if joined := {c: n for c, n in r.joined.items() if n}:
        problems.append(f"history entries holding several events (0x1E-joined) per channel: {joined}")
    garbled = [c for c in r.load.readers + [w.client for w in r.load.writers] if c.malformed]
    if garbled:
        problems.append(f"frames that were not JSON, per client: {({c.name: len(c.malformed) for c in garbled})}, "
                        f"e.g. {garbled[0].malformed[0][:200]!r}")
    return problems


def ready_problems(r: Run, require_unready: bool) -> list[str]:
    """/readyz went red during the fault (when required) and is 200 again within READY_WITHIN_S."""
    problems = []
    if require_unready and (quiet := [g for g, red in r.unready_during().items() if not red]):
        problems.append(f"/readyz stayed 200 during the fault on {quiet}")
    if late := {g: s for g, s in r.ready_s.items() if s is None or s > READY_WITHIN_S}:
        problems.append(f"/readyz not 200 within {READY_WITHIN_S} s of the service's return: {late}")
    return problems


def assert_none(problems: list[str]) -> None:
    """One failure listing every broken guarantee (not just the first)."""
    assert not problems, "broken guarantees:\n- " + "\n- ".join(problems)


async def wait_until(pred: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.1) -> float | None:
    """Poll ``pred`` until true; the seconds it took (None: timed out)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if await pred():
            return round(time.monotonic() - start, 2)
        await asyncio.sleep(every)
    return None

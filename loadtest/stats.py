"""Counters and latency histograms with O(1) recording (no per-sample allocation).

Latencies go into log-spaced buckets: 32 per doubling (about 2.2 % wide) from
1 microsecond to 2^27 us (134 s). One histogram for the whole run per series, and
one per second of the run for the over-time plot.
"""

from __future__ import annotations

import math
import resource
import time
from array import array
from typing import Any

PER_OCTAVE = 32
NBUCKETS = PER_OCTAVE * 27
_log2 = math.log2


def bucket(lat_s: float) -> int:
    us = lat_s * 1e6
    if us < 1.0:
        return 0
    i = int(_log2(us) * PER_OCTAVE)
    return i if i < NBUCKETS else NBUCKETS - 1


def bucket_value_ms(i: int) -> float:
    """Representative latency of bucket ``i`` (its geometric middle), milliseconds."""
    return (2 ** ((i + 0.5) / PER_OCTAVE)) / 1000.0 if i else 0.0005


class Hist:
    """A latency histogram; exact count, sum and max, percentiles to the bucket (~2 %)."""

    __slots__ = ("counts", "max", "n", "total")

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * NBUCKETS))
        self.n = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, lat_s: float) -> None:
        self.counts[bucket(lat_s)] += 1
        self.n += 1
        self.total += lat_s
        self.max = max(self.max, lat_s)

    def merge(self, other: Hist) -> None:
        c = self.counts
        for i, v in enumerate(other.counts):
            if v:
                c[i] += v
        self.n += other.n
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile_ms(self, q: float) -> float | None:
        if not self.n:
            return None
        target = q * self.n
        acc = 0
        for i, v in enumerate(self.counts):
            acc += v
            if acc >= target and v:
                return min(bucket_value_ms(i), self.max * 1000)
        return self.max * 1000

    def summary(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 2)

        return {
            "count": self.n,
            "p50_ms": r(self.quantile_ms(0.50)), "p95_ms": r(self.quantile_ms(0.95)),
            "p99_ms": r(self.quantile_ms(0.99)), "max_ms": r(self.max * 1000) if self.n else None,
            "mean_ms": r(self.total / self.n * 1000) if self.n else None,
        }


def cpu_s() -> float:
    """CPU seconds (user + system) used by this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Stats:
    """Everything the simulated users observed; shared by every connection of the run."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.delivered = 0
        """Items delivered (an event, or each item a digest counts)."""
        self.digests = 0
        """Coalesced frames (``<namespace>.digest``) received."""
        self.latency = Hist()
        self.per_sec: list[Hist] = []  # index: whole seconds since t0
        self.acks: dict[str, Hist] = {}
        self.commands: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.error_samples: list[str] = []
        self.notices: dict[str, int] = {}
        self.closes: dict[str, int] = {}
        self.conn_opened = 0
        self.conn_failed = 0
        self.conn_failure_samples: list[str] = []
        self.reconnects = 0
        self.resumes = 0
        self.resumes_recovered = 0
        self.resumes_not_recovered = 0
        self.resumed_events = 0
        self.timeline: list[dict[str, Any]] = []  # one sample per second, see runner.sample()

    def sec_hist(self, now: float) -> Hist:
        s = int(now - self.t0)
        ps = self.per_sec
        while len(ps) <= s:
            ps.append(Hist())
        return ps[max(s, 0)]

    def command_sent(self, kind: str) -> None:
        self.commands[kind] = self.commands.get(kind, 0) + 1

    def ack(self, kind: str, lat_s: float) -> None:
        h = self.acks.get(kind)
        if h is None:
            h = self.acks[kind] = Hist()
        h.add(lat_s)

    def error(self, code: str, sample: str = "") -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if sample and len(self.error_samples) < 20:
            self.error_samples.append(sample[:300])

    def close(self, code: int | str) -> None:
        k = str(code)
        self.closes[k] = self.closes.get(k, 0) + 1

    def connect_failed(self, why: str) -> None:
        self.conn_failed += 1
        if len(self.conn_failure_samples) < 10:
            self.conn_failure_samples.append(why[:200])

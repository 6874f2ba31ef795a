"""One load test run: connect the simulated users, drive them, drain, check, report."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import random
import socket
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loadtest.stats import Stats, cpu_s
from loadtest.texts import FRIENDLY, VYBE_TYPES
from loadtest.tokens import mint_token
from loadtest.users import ROLES, Ledger, Moderator, Poster, Reactor, Reader, User

if TYPE_CHECKING:
    import argparse


class RunError(Exception):
    """The run cannot start (bad option, no gateway reachable)."""


def parse_url(url: str) -> tuple[str, int, str, str]:
    """ws://host:port/path -> (host, port, path, http base)."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    if parts.scheme not in ("ws", "http"):
        raise RunError(f"--url {url!r}: only ws:// (or http://) URLs are supported; put TLS in front of the "
                       f"gateway's plain port for load tests")
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return host, port, path, f"http://{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return all(str(ai[4][0]).startswith("127.") for ai in socket.getaddrinfo(host, None, socket.AF_INET))
    except OSError:
        return False


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = args.run_id or f"lt{int(time.time()) % 10**8}{os.getpid() % 1000}"
        urls = [u for raw in args.url for u in raw.split(",") if u.strip()]
        if not urls:
            raise RunError("no --url given")
        parsed = [parse_url(u.strip()) for u in urls]
        self.urls = urls
        self.targets = [(h, p, path) for h, p, path, _ in parsed]
        self.http = [base for *_, base in parsed]
        secret = args.jwt_secret or os.environ.get("VYBE_JWT_SECRET")
        if not secret:
            raise RunError("--jwt-secret (or VYBE_JWT_SECRET) is required to mint the simulated users' tokens")
        self._secret = secret
        loopback = all(_is_loopback(h) for h, _, _ in self.targets)
        self.sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)] if loopback and args.sources else []
        self.stats = Stats()
        self.ledger = Ledger(args.hot_vybes, args.hot_share)
        self.handshakes = asyncio.Semaphore(args.connect_concurrency)
        self.stopping = False
        self.writes_done = False
        self.users: list[User] = []
        self.phase = "starting"
        self.t_start = self.t_steady = self.t_writes_end = 0.0
        self.cpu_samples: list[tuple[float, float]] = []  # (time, cpu %) per second
        self.peak_open = 0
        self.correctness: dict[str, Any] = {}

    def token(self, uid: str, role: str) -> str:
        return mint_token(self._secret, uid, role, ttl_s=max(3600, int(self.args.duration * 4 + 3600)))

    def open_sockets(self) -> int:
        return sum(1 for u in self.users if u.conn is not None and u.conn.alive)

    # -- the run ----------------------------------------------------------------------

    async def execute(self, display: Any = None) -> dict[str, Any]:
        a = self.args
        self.t_start = time.time()
        self.stats.t0 = self.t_start
        sampler = asyncio.create_task(self._sample(display))
        try:
            await self._seed()
            mods = [Moderator(self, f"{self.run_id}-m{i}", i, ["mod:flagged"]) for i in range(a.moderators)]
            self.users.extend(mods)
            self.phase = "connecting moderators"
            ok = await asyncio.gather(*(m.connect() for m in mods))
            for m, good in zip(mods, ok, strict=True):
                if not good:
                    self._retry_later(m)
                m.task = asyncio.create_task(m.behave())
            others = self._make_users()
            self.users.extend(others)
            self.phase = "ramping up"
            ramp = max(0.0, a.ramp_up)
            starters = [asyncio.create_task(self._start_user(u, i * ramp / max(1, len(others))))
                        for i, u in enumerate(others)]
            churn = asyncio.create_task(self._churn()) if a.churn > 0 else None
            await asyncio.sleep(ramp)
            await asyncio.gather(*starters)
            self.t_steady = time.time()
            self.phase = "steady"
            end = self.t_start + ramp + a.duration
            if end > time.time():
                await asyncio.sleep(end - time.time())
            self.t_writes_end = time.time()
            self.writes_done = True
            if churn is not None:
                churn.cancel()
            self.phase = "draining"
            await self._drain()
            await self._wait_moderation()
            self.phase = "checking counters"
            self.stopping = True
            await self._check_counters()
        finally:
            self.stopping = True
            self.writes_done = True
            t_end = time.time()
            sampler.cancel()
            for u in self.users:
                if u.task is not None:
                    u.task.cancel()
                if u.conn is not None:
                    u.conn.abort()
            await asyncio.sleep(0)
        return self._report(t_end)

    async def _seed(self) -> None:
        """The hot-spot vybes that reactions and comments concentrate on (and readers watch)."""
        self.phase = "seeding"
        seeder = Poster(self, f"{self.run_id}-seed", 0, [])
        self.seeder = seeder
        if not await seeder.connect():
            raise RunError(f"cannot connect to {self.urls[0]}: {self.stats.conn_failure_samples[-1:]}")
        done = asyncio.get_running_loop().create_future()
        left = [self.args.hot_vybes]

        def posted(result: Any, code: str | None) -> None:
            if code is None:
                self.ledger.add_vybe(result["id"], False)
            else:
                self.stats.error(code, "seed post_vybe")
            left[0] -= 1
            if left[0] <= 0 and not done.done():
                done.set_result(None)

        for i in range(self.args.hot_vybes):
            seeder.send("post_vybe", {"content": f"{FRIENDLY[i % len(FRIENDLY)]} (hot spot {i + 1})",
                                      "vybe_type": VYBE_TYPES[i % len(VYBE_TYPES)]}, posted)
        if self.args.hot_vybes:
            await asyncio.wait_for(done, 30)
        if not self.ledger.targets and (self.args.reactors or self.args.posters):
            raise RunError("could not create the hot-spot vybes (see errors)")
        seeder.reconnecting = True  # its work is done: no reconnect after this close
        conn, seeder.conn = seeder.conn, None
        if conn is not None:
            conn.abort()
        seeder.pending.clear()

    def _make_users(self) -> list[User]:
        a = self.args
        rnd = random.Random(self.run_id)
        hot = self.ledger.targets[: a.hot_vybes]
        looprooms = [f"looproom:{_uuid(rnd)}" for _ in range(a.looprooms)]
        groups: list[list[User]] = []
        readers: list[User] = []
        for i in range(a.readers):
            chans = ["feed"] + [f"vybe:{v}" for v in rnd.sample(hot, min(a.reader_vybes, len(hot)))]
            chans += rnd.sample(looprooms, min(a.reader_looprooms, len(looprooms)))
            readers.append(Reader(self, f"{self.run_id}-r{i}", i, chans))
        groups.append(readers)
        groups.append([Poster(self, f"{self.run_id}-p{i}", i, []) for i in range(a.posters)])
        groups.append([Reactor(self, f"{self.run_id}-x{i}", i, []) for i in range(a.reactors)])
        # Interleave the roles so the ramp brings each in proportionally.
        total = sum(len(g) for g in groups)
        keyed = [((j + 0.5) / len(g), k, u) for k, g in enumerate(groups) for j, u in enumerate(g)]
        keyed.sort(key=lambda x: (x[0], x[1]))
        out = [u for _, _, u in keyed]
        if len(out) != total:
            raise RuntimeError(f"interleaving {total} users gave {len(out)}")
        return out

    async def _start_user(self, u: User, at: float) -> None:
        await asyncio.sleep(at)
        if self.writes_done:
            return
        if not await u.connect():
            self._retry_later(u)
        if type(u).behave is not User.behave:
            u.task = asyncio.create_task(u.behave())

    def _retry_later(self, u: User) -> None:
        if not u.reconnecting:
            u.reconnecting = True
            asyncio.get_running_loop().create_task(u.reconnect())

    async def _churn(self) -> None:
        """Drop ``--churn`` random reader sockets per second; each reconnects and resumes."""
        rnd = random.Random(f"{self.run_id}-churn")
        readers = [u for u in self.users if isinstance(u, Reader)]
        while not self.writes_done:
            await asyncio.sleep(1.0)
            live = [(u, u.conn) for u in readers if u.conn is not None and u.conn.alive]
            for u, conn in rnd.sample(live, min(len(live), int(self.args.churn))):
                u.churned = True
                conn.abort()

    async def _drain(self) -> None:
        """Let the behaviours stop, then wait for the answers to every write."""
        await asyncio.sleep(0.2)
        for u in self.users:
            if u.task is not None and not isinstance(u, Moderator):
                u.task.cancel()
        deadline = time.time() + self.args.drain_timeout

        def unanswered() -> bool:
            return any(p.retry for u in self.users for p in u.pending.values() if not isinstance(u, Moderator))

        while time.time() < deadline and unanswered():  # noqa: ASYNC110 - bounded poll of every user's writes
            await asyncio.sleep(0.1)

    async def _wait_moderation(self) -> None:
        a = self.args
        if a.skip_moderation_check or not a.moderators:
            return
        self.phase = "waiting for moderation"
        led = self.ledger
        deadline = time.time() + a.moderation_timeout
        while time.time() < deadline and any(t not in led.flagged for t in led.toxic):  # noqa: ASYNC110 - bounded poll of the flags seen
            await asyncio.sleep(0.2)
        # Let the moderators finish what they claimed (bounded).
        end = time.time() + min(10.0, a.moderation_timeout)
        mods = [u for u in self.users if isinstance(u, Moderator)]
        while time.time() < end and any(m.busy or not m.queue.empty() for m in mods):  # noqa: ASYNC110 - bounded poll of every moderator
            await asyncio.sleep(0.1)

    async def _check_counters(self) -> None:
        a = self.args
        led = self.ledger
        for u in [*self.users, self.seeder]:
            for p in u.pending.values():
                if p.vybe is not None and p.vybe in led.vybes:
                    led.vybes[p.vybe].uncertain = True
        if a.skip_counter_check:
            self.correctness["counters"] = {"checked": False, "passed": None, "why": "--skip-counter-check"}
            return
        ids = [vid for vid, b in led.vybes.items() if not b.toxic]
        uncertain = [vid for vid in ids if led.vybes[vid].uncertain]
        ids = [vid for vid in ids if not led.vybes[vid].uncertain][: a.check_max]
        token = self.seeder.token
        fetchers = 8
        sem = asyncio.Semaphore(fetchers)
        mismatches: list[dict[str, Any]] = []
        failures: list[str] = []

        async def one(vid: str) -> None:
            async with sem:
                try:
                    body = await asyncio.get_running_loop().run_in_executor(
                        pool, _get_json, f"{self.http[0]}/api/vybes/{vid}", token)
                except Exception as err:  # noqa: BLE001 - reported, fails the check
                    failures.append(f"{vid}: {type(err).__name__}: {err}"[:200])
                    return
            v = body.get("vybe", body)
            b = led.vybes[vid]
            exp_r, exp_c = len(b.reactions), b.comments
            if v.get("reaction_count") != exp_r or v.get("comment_count") != exp_c:
                mismatches.append({"vybe": vid, "reaction_count": v.get("reaction_count"), "expected_reactions": exp_r,
                                   "comment_count": v.get("comment_count"), "expected_comments": exp_c})

        # Our own threads, not the loop's default executor (min(32, CPUs + 4) threads): a
        # gateway in this process (the tests) needs that executor to answer, and eight
        # blocking fetches on a 2-CPU machine filled it, so every fetch timed out.
        with concurrent.futures.ThreadPoolExecutor(fetchers, thread_name_prefix="loadtest-fetch") as pool:
            await asyncio.gather(*(one(v) for v in ids))
        self.correctness["counters"] = {
            "checked": True, "passed": not mismatches and not failures, "vybes_checked": len(ids) - len(failures),
            "reactions_expected": sum(len(led.vybes[v].reactions) for v in ids),
            "comments_expected": sum(led.vybes[v].comments for v in ids),
            "skipped_uncertain": len(uncertain), "mismatches": mismatches[:50], "mismatch_count": len(mismatches),
            "fetch_failures": failures[:10],
        }

    async def _sample(self, display: Any) -> None:
        stats = self.stats
        last_t, last_cpu = time.time(), cpu_s()
        last_del, last_cmd, last_err = 0, 0, 0
        while True:
            await asyncio.sleep(1.0)
            now, cpu = time.time(), cpu_s()
            dt = max(now - last_t, 1e-6)
            pct = 100 * (cpu - last_cpu) / dt
            self.cpu_samples.append((now, pct))
            sec = int(now - stats.t0) - 1
            h = stats.per_sec[sec] if 0 <= sec < len(stats.per_sec) else None
            cmds = sum(stats.commands.values())
            errs = sum(stats.errors.values())
            open_ = self.open_sockets()
            self.peak_open = max(self.peak_open, open_)
            stats.timeline.append({
                "t": round(now - stats.t0, 1), "phase": self.phase, "open": open_,
                "delivered_per_s": round((stats.delivered - last_del) / dt),
                "commands_per_s": round((cmds - last_cmd) / dt),
                "errors": errs - last_err, "p50_ms": _r(h.quantile_ms(0.5)) if h else None,
                "p99_ms": _r(h.quantile_ms(0.99)) if h else None, "generator_cpu_pct": round(pct, 1),
            })
            last_t, last_cpu, last_del, last_cmd, last_err = now, cpu, stats.delivered, cmds, errs
            if display is not None:
                display.update(self)

    # -- the report -------------------------------------------------------------------

    def _report(self, t_end: float) -> dict[str, Any]:
        a, s, led = self.args, self.stats, self.ledger
        steady0 = self.t_steady or self.t_start
        steady1 = self.t_writes_end or t_end
        steady_s = max(1e-6, steady1 - steady0)
        in_steady = [p for t, p in self.cpu_samples if steady0 < t <= steady1 + 0.5] or [p for _, p in self.cpu_samples]
        cpu_mean = round(sum(in_steady) / len(in_steady), 1) if in_steady else 0.0
        cpu_max = round(max(in_steady), 1) if in_steady else 0.0
        gen_bound = cpu_mean > 90
        steady_rows = [r for r in s.timeline if steady0 - s.t0 < r["t"] <= steady1 - s.t0 + 0.5]
        delivered_steady = sum(r["delivered_per_s"] for r in steady_rows)
        commands_total = sum(s.commands.values())
        errors_total = sum(s.errors.values())
        error_rate = errors_total / commands_total if commands_total else 0.0
        lat = s.latency.summary()

        toxic_total = len(led.toxic)
        missed = [t for t in led.toxic if t not in led.flagged]
        mod_check: dict[str, Any]
        if a.skip_moderation_check:
            mod_check = {"checked": False, "passed": None, "why": "--skip-moderation-check"}
        elif not a.moderators:
            mod_check = {"checked": False, "passed": None, "why": "no moderators (--moderators 0)"}
        else:
            mod_check = {"checked": True, "passed": not missed, "toxic_posts": toxic_total,
                         "reached_moderators": toxic_total - len(missed), "missed": missed[:50],
                         "timeout_s": a.moderation_timeout}
        self.correctness["moderation"] = mod_check
        counters = self.correctness.get("counters", {"checked": False, "passed": None, "why": "run aborted"})
        checks = [c["passed"] for c in (counters, mod_check) if c.get("checked")]
        correct = all(checks) if checks else None

        slo: dict[str, Any] = {}
        if a.slo_p99_ms is not None:
            actual = lat["p99_ms"]
            slo["p99_ms"] = {"limit": a.slo_p99_ms, "actual": actual,
                             "passed": actual is not None and actual <= a.slo_p99_ms}
        if a.slo_error_rate is not None:
            slo["error_rate"] = {"limit": a.slo_error_rate, "actual": round(error_rate, 6),
                                 "passed": error_rate <= a.slo_error_rate}
        if a.slo_connect_failures is not None:
            slo["connect_failures"] = {"limit": a.slo_connect_failures, "actual": s.conn_failed,
                                       "passed": s.conn_failed <= a.slo_connect_failures}
        slo["correctness"] = {"passed": correct is not False, "checked": correct is not None}
        slo["passed"] = all(v["passed"] for v in slo.values() if isinstance(v, dict))

        led.settle()
        flag_lat = sorted(led.flag_latency)
        return {
            "tool": "vybe loadtest", "version": 1, "run_id": self.run_id,
            "started_at": round(self.t_start, 3), "duration_s": round(t_end - self.t_start, 2),
            "steady_s": round(steady_s, 2), "urls": self.urls,
            "params": {k: v for k, v in vars(a).items() if k not in ("jwt_secret", "url")},
            "users": {"readers": a.readers, "posters": a.posters, "reactors": a.reactors, "moderators": a.moderators,
                      "total": len(self.users)},
            "connections": {
                "target": len(self.users), "opened": s.conn_opened, "failed": s.conn_failed,
                "peak_open": self.peak_open, "open_at_end": sum(1 for u in self.users if u.up.is_set()),
                "reconnects": s.reconnects, "closes_by_code": s.closes, "failure_samples": s.conn_failure_samples,
            },
            "deliveries": {"total": s.delivered, "digests": s.digests,
                           "per_s_steady": round(delivered_steady / steady_s, 1),
                           "per_s_peak": max((r["delivered_per_s"] for r in s.timeline), default=0)},
            "latency_ms": lat,
            "ack_latency_ms": {k: h.summary() for k, h in sorted(s.acks.items())},
            "commands": {"by_type": dict(sorted(s.commands.items())), "total": commands_total},
            "errors": {"by_code": dict(sorted(s.errors.items())), "total": errors_total,
                       "rate": round(error_rate, 6), "samples": s.error_samples[:10]},
            "notices": s.notices,
            "resume": {"resubscribes_with_since": s.resumes, "recovered": s.resumes_recovered,
                       "not_recovered": s.resumes_not_recovered, "replayed_events": s.resumed_events},
            "writes": {"vybes": led.vybes_posted, "toxic_vybes": led.toxic_vybes, "comments": led.comments_posted,
                       "toxic_comments": led.toxic_comments, "reactions_applied": led.reactions_applied,
                       "unreactions_applied": led.unreactions_applied, "hot_vybes": len(led.targets[: a.hot_vybes])},
            "moderation": {"flagged_seen": len(led.flagged), "false_positives": len(led.false_positives),
                           "claims": led.claims, "resolves": led.resolves,
                           "post_to_flagged_ms": {
                               "count": len(flag_lat),
                               "p50": _r(flag_lat[len(flag_lat) // 2] * 1000) if flag_lat else None,
                               "p99": _r(flag_lat[min(len(flag_lat) - 1, int(0.99 * len(flag_lat)))] * 1000)
                               if flag_lat else None,
                               "max": _r(flag_lat[-1] * 1000) if flag_lat else None}},
            "correctness": {"passed": correct, "counters": counters, "moderation": mod_check},
            "generator": {
                "cpu_pct_mean": cpu_mean, "cpu_pct_max": cpu_max, "pinned_cpu": a.cpu,
                "source_addresses": self.sources, "bottleneck": gen_bound,
                "note": ("the load generator used more than 90% of its core: figures measure the generator, "
                         "not the gateway; run more generator processes (--cpu) or fewer users")
                if gen_bound
                else f"generator CPU averaged {cpu_mean}% of one core (max {cpu_max}%): not the bottleneck",
            },
            "slo": slo,
            "timeline": s.timeline,
            "latency_per_second": [
                {"t": i, "count": h.n, "p50_ms": _r(h.quantile_ms(0.5)), "p95_ms": _r(h.quantile_ms(0.95)),
                 "p99_ms": _r(h.quantile_ms(0.99)), "max_ms": _r(h.max * 1000) if h.n else None}
                for i, h in enumerate(s.per_sec)],
            "latency_histogram": {"bucket_ms": [], "count": []},  # filled by report.finish
        }


def _uuid(rnd: random.Random) -> str:
    h = f"{rnd.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


def _get_json(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"HTTP {err.code}: {err.read()[:200]!r}") from err


__all__ = ["ROLES", "Reactor", "Run", "RunError"]

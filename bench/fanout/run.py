"""Fan-out benchmark: our gateway vs Litestar ChannelsPlugin vs websockets.broadcast.

    python -m bench.fanout [--quick] [--sockets 1000,5000,10000] [--rates 1,5,20] [--seconds 5]

Each server runs alone on core 0 (``taskset -c 0``); this process (load generator
and publisher) pins itself to core 1. For each (server, N): start a fresh server,
read its RSS, open N sockets subscribed to one channel, read RSS again (idle cost
per connection), time "one event to all N sockets" ``--probes`` times, then publish
~200-byte events through Redis at increasing rates for ``--seconds`` each, measuring
deliveries, loss, latency from the publish timestamp, server CPU and generator CPU.
Prints one JSON report on stdout; progress goes to stderr. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if __package__ in (None, ""):  # run as a script: python bench/fanout/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fanout.loadgen import Generator
from bench.fanout.native import NativeReader, build

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent
SERVERS = ("vybe", "socketify", "litestar", "websockets")
EVENT_BYTES = 200
_enc = msgspec.json.Encoder()


def log(msg: str) -> None:
    print(f"[fanout {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- /proc helpers ---------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a multi-process gateway's supervisor and its processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{entry}/stat") as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants, plus its children that exited (cutime,
    cstime), so a restarted process's CPU is not lost."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)
            if p == pid:
                total += (int(fields[13]) + int(fields[14])) / _TICK  # cutime, cstime (fields 16, 17)
    return total


def proc_rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    return total


def cpu_list(spec: str) -> set[int]:
    """A taskset CPU list (``0,2-4``) as a set."""
    cpus: set[int] = set()
    for part in filter(None, spec.split(",")):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (SO_REUSEPORT: one per gateway process)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            rows += [line.split() for line in f.readlines()[1:]]
    return sum(1 for r in rows if r[3] == "0A" and int(r[1].rsplit(":", 1)[1], 16) == port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- servers ---------------------------------------------------------------------


class Server:
    """One server under test: how to start it, how clients join, how to publish to it."""

    name = ""
    path = "/ws"
    ready_id: bytes | None = None

    def __init__(self, ctx: Context, port: int) -> None:
        self.ctx, self.port = ctx, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.logfile = ctx.workdir / f"{self.name}-{port}.log"

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def init_for(self, i: int) -> list[bytes]:
        return []

    async def publish(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    cores = ""
    """The CPUs it runs on (``taskset -c``); default the server core."""

    def _spawn(self, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self.logfile, "wb") as out:
            return subprocess.Popen(["taskset", "-c", self.cores or str(self.ctx.server_core), *cmd], cwd=ROOT,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        cmd, extra = self.command()
        env = {**os.environ, **extra, "PYTHONPATH": str(ROOT)}
        if self.ctx.args.server_gc:  # what-if experiment: GC thresholds of the server process
            env["PYTHONPATH"] = f"{Path(__file__).parent / '_gc_tuning'}:{ROOT}"
            env["BENCH_GC"] = self.ctx.args.server_gc
        self.proc = await asyncio.to_thread(self._spawn, cmd, env)  # open() and fork/exec off the loop
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}: {self.log_tail()}")
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on {self.port}: {self.log_tail()}")

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        for _ in range(150):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self.proc.kill()
        self.proc.wait()

    def log_tail(self, n: int = 1500) -> str:
        try:
            return self.logfile.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


class VybeServer(Server):
    """Our gateway; ``vybe:N`` is N processes on N cores (``VYBE_PROCESSES``, SO_REUSEPORT)."""

    name = "vybe"
    ready_id = b'"id":"2"'
    processes = 1

    def __init__(self, ctx: Context, port: int) -> None:
        super().__init__(ctx, port)
        from common.bus import Publisher
        from common.settings import load_settings
        from gateway.auth import mint_token

        self.settings = load_settings({}, jwt_secret=ctx.jwt_secret)
        self._mint = mint_token
        self.publisher = Publisher(ctx.redis, ctx.prefix, 1000)
        self._sub = _enc.encode({"type": "subscribe", "id": "2", "channel": "feed"})

    def command(self) -> tuple[list[str], dict[str, str]]:
        env = {
            "VYBE_DATABASE_URL": self.ctx.database_url, "VYBE_REDIS_URL": self.ctx.redis_url,
            "VYBE_REDIS_PREFIX": self.ctx.prefix, "VYBE_JWT_SECRET": self.ctx.jwt_secret,
            "VYBE_HOST": "127.0.0.1", "VYBE_PORT": str(self.port), "VYBE_LOG_LEVEL": "WARNING",
            "VYBE_NODE_ID": f"bench-{self.port}", "VYBE_PROCESSES": str(self.processes),
        }
        return [str(VENV / "vybe"), "gateway"], env

    async def start(self) -> None:
        await super().start()
        deadline = time.monotonic() + 60  # every process listening, or the first one takes every socket
        while listeners(self.port) < self.processes:
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise RuntimeError(f"{self.name}: {listeners(self.port)} of {self.processes} processes listening: "
                                   f"{self.log_tail()}")
            await asyncio.sleep(0.2)
        if self.processes > 1 and self.proc is not None:
            # A process listens before its app has started (pool, Redis): wait until all are idle, so
            # their start-up is not counted as the sockets' RSS and CPU.
            last = proc_cpu_s(self.proc.pid)
            for _ in range(100):
                await asyncio.sleep(0.3)
                now = proc_cpu_s(self.proc.pid)
                if now - last < 0.02 * self.processes:
                    break
                last = now

    def init_for(self, i: int) -> list[bytes]:
        from bench.fanout.loadgen import client_frame

        token = self._mint(self.settings, f"bench-{i}", ttl_s=6 * 3600)
        auth = _enc.encode({"type": "auth", "id": "1", "token": token})
        return [client_frame(1, auth), client_frame(1, self._sub)]

    async def publish(self, data: dict[str, Any]) -> None:
        await self.publisher.publish("feed", "bench.tick", data)


class LitestarServer(Server):
    name = "litestar"

    def __init__(self, ctx: Context, port: int) -> None:
        super().__init__(ctx, port)
        from litestar.channels.backends.redis import RedisChannelsPubSubBackend

        self.backend = RedisChannelsPubSubBackend(redis=ctx.redis)
        self.channel = f"{ctx.prefix}feed"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ([str(VENV / "python"), "-m", "uvicorn", "bench.fanout.peer_litestar:app",
                 "--host", "127.0.0.1", "--port", str(self.port),
                 "--ws-ping-interval", "20", "--ws-ping-timeout", "20",
                 "--log-level", "warning", "--no-access-log"],
                {"BENCH_CHANNEL": self.channel, "BENCH_REDIS_URL": self.ctx.redis_url})

    async def publish(self, data: dict[str, Any]) -> None:
        await self.backend.publish(peer_message(data), [self.channel])


class WebsocketsServer(Server):
    """A peer process relaying a Redis pub/sub channel (``module``): here ``websockets.broadcast``."""

    name = "websockets"
    module = "bench.fanout.peer_websockets"

    def __init__(self, ctx: Context, port: int) -> None:
        super().__init__(ctx, port)
        self.channel = f"{ctx.prefix}{self.name}-feed"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ([str(VENV / "python"), "-m", self.module],
                {"BENCH_CHANNEL": self.channel, "BENCH_REDIS_URL": self.ctx.redis_url,
                 "BENCH_PORT": str(self.port)})

    async def publish(self, data: dict[str, Any]) -> None:
        await self.ctx.redis.publish(self.channel, peer_message(data))


class SocketifyServer(WebsocketsServer):
    """socketify.py (uWebSockets): Redis pub/sub relayed with uWebSockets' native publish."""

    name = "socketify"
    module = "bench.fanout.peer_socketify"


class FloorServer(WebsocketsServer):
    """Not a peer: one ``send()`` per socket in a bare loop, the floor under any one-event figure."""

    name = "floor"
    module = "bench.fanout.peer_floor"


def peer_message(data: dict[str, Any]) -> bytes:
    """The same client-visible bytes our gateway sends for one event (offset faked)."""
    return _enc.encode({"type": "event", "channel": "feed", "offset": "1700000000000000-1700000000000-0",
                        "event": "bench.tick", "ts": time.time(), "data": data})


def make_server(ctx: Context, name: str, port: int) -> Server:
    """``name`` as ``--servers`` spells it; ``vybe:N`` runs N gateway processes on the first N cores
    other than the generator's (``--server-cores`` to choose them)."""
    base, _, count = name.partition(":")
    server = SERVER_CLASSES[base](ctx, port)
    if count:
        if not isinstance(server, VybeServer) or not count.isdigit() or int(count) < 1:
            raise SystemExit(f"--servers: {name!r}: only vybe takes a process count (vybe:N)")
        server.processes = int(count)
        server.name = name
        if ctx.args.server_cores:
            server.cores = ctx.args.server_cores
        else:
            # The CPUs this process could use before it pinned itself to the generator's core.
            others = [c for c in ctx.args.cpus if c != ctx.args.generator_core]
            chosen = [*others, ctx.args.generator_core][:server.processes]  # shares the generator's core if need be
            server.cores = ",".join(map(str, chosen))
        server.logfile = ctx.workdir / f"{server.name.replace(':', '-')}-{port}.log"
    return server


SERVER_CLASSES: dict[str, type[Server]] = {"vybe": VybeServer, "socketify": SocketifyServer,
                                           "litestar": LitestarServer, "websockets": WebsocketsServer,
                                           "floor": FloorServer}


# -- context, database -----------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        import redis.asyncio as aioredis

        self.args = args
        self.run_id = f"{int(time.time())}{os.getpid()}"
        self.prefix = f"benchfan{self.run_id}:"
        self.redis_url = args.redis_url
        self.redis = aioredis.Redis.from_url(args.redis_url)
        self.database_url = args.database_url
        self.jwt_secret = secrets.token_urlsafe(36)
        self.server_core = args.server_core
        self.workdir = Path(args.workdir) / self.run_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sources = [f"127.0.0.{i}" for i in range(2, 2 + args.sources)]
        self.pad = ""

    def data(self, seq: int) -> dict[str, Any]:
        return {"seq": seq, "pad": self.pad}

    async def close(self) -> None:
        """Delete this run's scratch keys (its own prefix) and close the Redis client."""
        with contextlib.suppress(Exception):
            keys = [k async for k in self.redis.scan_iter(match=f"{self.prefix}*", count=1000)]
            if keys:
                await self.redis.delete(*keys)
        await self.redis.aclose()


async def prepare_database(url: str) -> None:
    """Create the scratch database if needed and apply migrations (recreate it if they fail)."""
    import asyncpg

    from db.migrate import migrate

    name = url.rsplit("/", 1)[1].split("?")[0]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"

    async def ensure(drop: bool) -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            if drop:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    try:
        await ensure(drop=False)
    except Exception as err:  # noqa: BLE001 - a stale scratch database: start it over
        log(f"migrating {name} failed ({err}); recreating it")
        await ensure(drop=True)


# -- measurement -----------------------------------------------------------------


async def wait_count(window: Any, target: int, timeout: float, quiet: float | None = None) -> None:
    """Until ``window.count >= target``, ``timeout`` passes, or (with ``quiet``) nothing arrived for that long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = window.count, loop.time()
    while window.count < target and loop.time() < deadline:
        await asyncio.sleep(0.01 if quiet is None else 0.05)
        if window.count != last:
            last, since = window.count, loop.time()
        elif quiet is not None and loop.time() - since > quiet:
            return


async def probe(server: Server, gen: Generator | NativeReader, ctx: Context, count: int) -> dict[str, Any]:
    """Publish one event at a time; time until every socket has it."""
    runs = []
    for k in range(count):
        n = gen.alive()
        w = gen.stats.reset(time.time())
        await server.publish(ctx.data(-1 - k))
        await wait_count(w, n, timeout=10.0)
        p = w.percentiles()
        runs.append({"received": w.count, "sockets": n, **p})
        await asyncio.sleep(0.2)
    complete = [r for r in runs if r["received"] >= r["sockets"]]
    p99s = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
    maxes = [r["max_ms"] for r in runs if r["max_ms"] is not None]
    return {
        "repeats": count, "complete": len(complete),
        "p99_ms_median": round(statistics.median(p99s), 2) if p99s else None,
        "p99_ms_worst": max(p99s) if p99s else None,
        "all_sockets_ms_median": round(statistics.median(maxes), 2) if maxes else None,
        "all_sockets_ms_max": max(maxes) if maxes else None,
        "p50_ms_median": round(statistics.median([r["p50_ms"] for r in runs if r["p50_ms"] is not None]), 2)
        if p99s else None,
        "runs": runs,
    }


async def publish_at(rate: float, seconds: float, publish: Callable[[int], Awaitable[None]]) -> tuple[int, float]:
    """Publish ``rate`` events/s for ``seconds`` on an absolute schedule; (published, elapsed)."""
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * seconds))
    t0 = loop.time()
    for i in range(total):
        delay = t0 + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await publish(i)
    # The step lasts its full period even when the last event went out early.
    end = t0 + total / rate
    if end > loop.time():
        await asyncio.sleep(end - loop.time())
    return total, loop.time() - t0


async def step(server: Server, gen: Generator | NativeReader, ctx: Context, n: int, rate: float) -> dict[str, Any]:
    seconds = ctx.args.seconds
    pid = server.proc.pid  # type: ignore[union-attr]
    alive0 = gen.alive()
    closes0 = dict(gen.stats.close_codes)
    w = gen.stats.reset(time.time())
    c0, g0, t0 = proc_cpu_s(pid), gen.cpu_s(), time.monotonic()
    published, _ = await publish_at(rate, seconds, lambda i: server.publish(ctx.data(i)))
    c1, g1, t1 = proc_cpu_s(pid), gen.cpu_s(), time.monotonic()
    expected = published * alive0
    await wait_count(w, expected, timeout=max(5.0, seconds), quiet=1.0)
    t2 = time.monotonic()
    received, last, pct = w.result()
    span = max(t1 - t0, 1e-9)
    # Delivered rate: received over the publishing period, stretched to the last receipt
    # when the tail arrived after publishing stopped (a server that lags is not credited).
    delivered_span = max(span, last - w.start) if received else span
    loss = expected - received
    server_cpu = 100 * (c1 - c0) / span
    gen_cpu = 100 * (g1 - g0) / span
    closes = {str(k): v - closes0.get(k, 0) for k, v in gen.stats.close_codes.items() if v - closes0.get(k, 0)}
    result = {
        "rate_eps": rate, "published": published, "offered_eps": round(published / span, 2),
        "expected_deliveries_per_s": round(expected / span), "delivered_per_s": round(received / delivered_span),
        "expected": expected, "received": received, "loss": loss,
        "loss_ratio": round(loss / expected, 5) if expected else 0,
        **pct, "server_cpu_pct": round(server_cpu, 1), "gen_cpu_pct": round(gen_cpu, 1),
        "server_rss_kb": proc_rss_kb(pid), "sockets_alive": gen.alive(), "sockets_closed_by_server": closes,
        "drain_s": round(t2 - t1, 2),
    }
    result["kept_up"] = kept_up(result, alive0)
    result["generator_bound"] = gen_cpu > 90
    return result


def kept_up(r: dict[str, Any], sockets: int) -> bool:
    """No loss (<= 0.1%), p99 under 1 s, no socket dropped, and no backlog building up
    (delivered within 5% of what was offered during the step)."""
    return bool(r["loss"] <= max(1, 0.001 * r["expected"]) and r["p99_ms"] is not None and r["p99_ms"] < 1000
                and r["sockets_alive"] >= sockets
                and r["delivered_per_s"] >= 0.95 * r["expected_deliveries_per_s"])


def best_of(out: dict[str, Any]) -> None:
    steps = out.get("steps", [])
    ok = [s for s in steps if s["kept_up"]]
    best = max(ok, key=lambda s: s["delivered_per_s"]) if ok else None
    out["kept_up_deliveries_per_s"] = best["delivered_per_s"] if best else 0
    out["kept_up_p99_ms"] = best["p99_ms"] if best else None
    out["kept_up_server_cpu_pct"] = best["server_cpu_pct"] if best else None
    out["deliveries_per_cpu_s_at_best"] = (round(best["delivered_per_s"] / (best["server_cpu_pct"] / 100))
                                           if best and best["server_cpu_pct"] else None)
    out["max_delivered_per_s"] = max((s["delivered_per_s"] for s in steps), default=0)
    out["generator_bound_steps"] = [s["rate_eps"] for s in steps if s["generator_bound"]]


async def bench_server(ctx: Context, name: str, n: int, rates: list[float]) -> dict[str, Any]:
    server = make_server(ctx, name, free_port())
    out: dict[str, Any] = {"server": name, "sockets": n}
    reader: NativeReader | None = None
    if server.cores:
        out["cores"] = server.cores
        out["shares_generator_core"] = ctx.args.generator_core in cpu_list(server.cores)
    log(f"{name} N={n}: starting on port {server.port}" + (f", cores {server.cores}" if server.cores else ""))
    try:
        await server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        await asyncio.sleep(1.5)
        rss0 = proc_rss_kb(pid)
        gen = Generator("127.0.0.1", server.port, server.path, ctx.sources)
        init = server.init_for if server.init_for.__func__ is not Server.init_for else None  # type: ignore[attr-defined]
        c0 = proc_cpu_s(pid)
        connect_s = await gen.connect(n, init, server.ready_id)
        connect_cpu = proc_cpu_s(pid) - c0
        log(f"{name} N={n}: {len(gen.clients)} sockets in {connect_s:.1f}s "
            f"({len(gen.connect_failures)} failed)")
        await asyncio.sleep(2.0)
        rss1 = proc_rss_kb(pid)
        connected = len(gen.clients)
        out.update({
            "connected": connected, "connect_failures": len(gen.connect_failures),
            "connect_failure_samples": gen.connect_failures[:3], "connect_s": round(connect_s, 2),
            "connect_server_cpu_s": round(connect_cpu, 2),
            "rss_before_kb": rss0, "rss_idle_kb": rss1,
            "rss_per_conn_kb": round((rss1 - rss0) / connected, 2) if connected else None,
        })
        if not connected:
            raise RuntimeError(f"no socket connected: {gen.connect_failures[:3]}")
        # Warm-up: make sure every socket receives (the peers subscribe after accepting).
        for _ in range(5):
            w = gen.stats.reset(time.time())
            await server.publish(ctx.data(-1000))
            await wait_count(w, gen.alive(), timeout=5.0)
            if w.count >= gen.alive():
                break
        if ctx.args.native_reader:  # from here on the sockets are read in C (bench/fanout/native.py)
            reader = NativeReader(gen, build(ctx.workdir), ctx.workdir, ctx.args.generator_core)
            out["receive_side"] = "native"
            w = reader.reset(time.time())  # one event read by it before anything is measured
            await server.publish(ctx.data(-999))
            await wait_count(w, reader.alive(), timeout=5.0)
        spy = start_py_spy(ctx, name, n, pid)
        log(f"{name} N={n}: probing one event to all sockets x{ctx.args.probes}")
        out["one_event_to_all"] = await probe(server, reader or gen, ctx, ctx.args.probes)
        steps: list[dict[str, Any]] = []
        bad = 0
        for rate in rates:
            r = await step(server, reader or gen, ctx, n, rate)
            steps.append(r)
            log(f"{name} N={n} rate={rate}/s: delivered {r['delivered_per_s']}/s of {r['expected_deliveries_per_s']}"
                f" loss {r['loss']} p99 {r['p99_ms']} ms cpu {r['server_cpu_pct']}% gen {r['gen_cpu_pct']}%")
            bad = 0 if r["kept_up"] else bad + 1
            if bad >= 2 or r["loss_ratio"] > 0.05 or (r["p99_ms"] or 0) > 3000 or r["sockets_alive"] < connected * 0.95:
                skipped = [x for x in rates if x > rate]
                if skipped:
                    out["skipped_rates"] = skipped
                    out["skipped_why"] = "server saturated at the previous rate"
                break
            await asyncio.sleep(0.5)
        out["steps"] = steps
        if spy is not None:
            out["profile"] = await stop_py_spy(*spy)
        best_of(out)
        out["errors_seen"] = [e.decode("utf-8", "replace") for e in gen.stats.errors[:3]]
        if reader is not None:
            reader.close()  # first: the sockets stay open while the reader holds them
        gen.close_all()
    except Exception as err:  # noqa: BLE001 - report and go on with the next server
        log(f"{name} N={n}: FAILED {type(err).__name__}: {err}")
        out["error"] = f"{type(err).__name__}: {err}"
        out["server_log_tail"] = server.log_tail()
    finally:
        if reader is not None:
            reader.close()
        with contextlib.suppress(Exception):
            gen.close_all()  # type: ignore[possibly-undefined]
        await server.stop()
        await asyncio.sleep(1.0)
    return out


def start_py_spy(ctx: Context, name: str, n: int, pid: int) -> tuple[subprocess.Popen[bytes], Path] | None:
    """With --py-spy: sample the server (probes and steps) into folded stacks."""
    if not ctx.args.py_spy or name not in ctx.args.profile_servers.split(","):
        return None
    path = ctx.workdir / f"{name}-{n}.folded"
    proc = subprocess.Popen([ctx.args.py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
                             "--nonblocking", "--output", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, path


async def stop_py_spy(proc: subprocess.Popen[bytes], path: Path) -> dict[str, Any]:
    proc.send_signal(signal.SIGINT)
    for _ in range(100):
        if proc.poll() is not None:
            break
        await asyncio.sleep(0.1)
    else:
        proc.kill()
    return {"folded": str(path), "top_self": top_self(path)}


def top_self(path: Path, limit: int = 25) -> list[tuple[str, float]]:
    """Share of samples per innermost frame (self time) in a py-spy raw (folded) profile."""
    counts: dict[str, int] = {}
    total = 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            stack, _, num = line.rpartition(" ")
            if not num.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            counts[leaf] = counts.get(leaf, 0) + int(num)
            total += int(num)
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:limit]
    return [(k, round(100 * v / total, 1)) for k, v in ranked] if total else []


def default_rates(n: int, quick: bool) -> list[float]:
    targets = [10_000, 40_000, 160_000] if quick else [5_000, 10_000, 20_000, 40_000, 80_000, 160_000, 320_000, 640_000]
    return [round(t / n, 2) for t in targets]


def summarize(results: list[dict[str, Any]], servers: list[str], sizes: list[int]) -> dict[str, Any]:
    by = {(r["server"], r["sockets"]): r for r in results}
    table = []
    for n in sizes:
        row: dict[str, Any] = {"sockets": n}
        for s in servers:
            r = by.get((s, n), {})
            probe_ = r.get("one_event_to_all") or {}
            row[s] = {
                "kept_up_deliveries_per_s_per_core": r.get("kept_up_deliveries_per_s"),
                "max_delivered_per_s": r.get("max_delivered_per_s"),
                "kept_up_p99_ms": r.get("kept_up_p99_ms"),
                "one_event_p99_ms": probe_.get("p99_ms_median"),
                "one_event_all_sockets_ms": probe_.get("all_sockets_ms_median"),
                "rss_per_conn_kb": r.get("rss_per_conn_kb"),
                "error": r.get("error"),
            }
        mine = row.get("vybe")
        for peer in servers:
            if peer.partition(":")[0] == "vybe" or not mine:
                continue
            theirs = row[peer]

            def ratio(key: str, m: dict[str, Any] = mine, d: dict[str, Any] = theirs) -> float | None:
                a, b = m.get(key), d.get(key)
                return round(a / b, 2) if a and b else None

            row[f"vybe_over_{peer}"] = {
                "deliveries_per_s_per_core": ratio("kept_up_deliveries_per_s_per_core"),
                "one_event_p99": ratio("one_event_p99_ms"),
                "rss_per_conn": ratio("rss_per_conn_kb"),
            }
        for s in servers:  # vybe:N against one process, same sockets
            if s.startswith("vybe:") and mine and row[s].get("one_event_p99_ms"):
                theirs = row[s]
                row[f"{s}_over_vybe"] = {
                    "kept_up_deliveries_per_s": round(theirs["kept_up_deliveries_per_s_per_core"] /
                                                      mine["kept_up_deliveries_per_s_per_core"], 2)
                    if theirs.get("kept_up_deliveries_per_s_per_core") and mine.get("kept_up_deliveries_per_s_per_core")
                    else None,
                    "one_event_p99": round(theirs["one_event_p99_ms"] / mine["one_event_p99_ms"], 2)
                    if mine.get("one_event_p99_ms") else None,
                }
        floor = (row.get("floor") or {}).get("one_event_p99_ms")
        if floor:  # how far each server is above the least one send() per socket costs
            row["one_event_p99_over_floor"] = {
                s: round(row[s]["one_event_p99_ms"] / floor, 2) for s in servers
                if s != "floor" and row[s].get("one_event_p99_ms")}
        table.append(row)
    targets = {}
    if "vybe" in servers:
        for n in sizes:
            r = by.get(("vybe", n), {})
            lit = by.get(("litestar", n), {})
            probe_ = r.get("one_event_to_all") or {}
            mine, theirs = r.get("kept_up_deliveries_per_s"), lit.get("kept_up_deliveries_per_s")
            targets[str(n)] = {
                "deliveries_10x_channelsplugin": (mine / theirs >= 10) if mine and theirs else None,
                "one_event_p99_le_30ms": (probe_["p99_ms_median"] <= 30) if probe_.get("p99_ms_median") else None,
                "rss_per_conn_le_12kb": (r["rss_per_conn_kb"] <= 12) if r.get("rss_per_conn_kb") else None,
            }
    return {"table": table, "targets": targets}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    ctx = Context(args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    sizes = [int(x) for x in args.sockets.split(",")]
    # Pad events so our gateway's client element is ~EVENT_BYTES (the peers send the same shape).
    probe_el = peer_message({"seq": 123456, "pad": ""})
    ctx.pad = "x" * max(0, EVENT_BYTES - len(probe_el) - 12)
    if any(s.partition(":")[0] == "vybe" for s in servers):
        await prepare_database(args.database_url)
    await ctx.redis.ping()
    results = []
    started = time.time()
    for n in sizes:
        rates = [float(x) for x in args.rates.split(",")] if args.rates else default_rates(n, args.quick)
        for name in servers:
            results.append(await bench_server(ctx, name, n, rates))
    await ctx.close()
    gen_cpu_max = max((s["gen_cpu_pct"] for r in results for s in r.get("steps", [])), default=0)
    return {
        "benchmark": "fanout", "run_id": ctx.run_id, "started": started, "duration_s": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "server_core": args.server_core,
                    "generator_core": args.generator_core},
        "params": {"server_gc": args.server_gc or "default", "servers": servers, "sockets": sizes,
                   "seconds_per_step": args.seconds, "probes": args.probes,
                   "event_bytes": len(peer_message(ctx.data(123456))), "rates": args.rates or "auto",
                   "source_addresses": ctx.sources},
        "generator_note": ("generator CPU exceeded 90% in some step: those steps measure the generator, "
                           "not the server" if gen_cpu_max > 90 else f"generator CPU peaked at {gen_cpu_max}%"),
        "summary": summarize(results, servers, sizes),
        "results": results,
    }


def resummarize(path: str) -> dict[str, Any]:
    """Recompute kept-up figures and the summary of a saved report (after changing the criteria)."""
    report = json.loads(Path(path).read_text())
    for r in report["results"]:
        for st in r.get("steps", []):
            st["kept_up"] = kept_up(st, r.get("connected", 0))
        best_of(r)
    report["summary"] = summarize(report["results"], report["params"]["servers"], report["params"]["sockets"])
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", default="1000", help="comma-separated socket counts (default 1000)")
    p.add_argument("--rates", default="", help="events/s per step, comma-separated (default: a ladder of "
                                                "deliveries/s targets divided by N)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per rate step (default 5)")
    p.add_argument("--probes", type=int, default=20, help="one-event-to-all-sockets repeats (default 20)")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="vybe,socketify,litestar,websockets,floor; vybe:N for N gateway processes")
    p.add_argument("--quick", action="store_true", help="1000 sockets, 3 rates, 5 s each, 10 probes")
    p.add_argument("--sources", type=int, default=8, help="client source addresses 127.0.0.2.. (default 8)")
    p.add_argument("--native-reader", action="store_true",
                   help="after connecting, read the sockets in C (bench/fanout/reader.c, built with gcc): the "
                        "Python receive side caps deliveries/s near 300-450k/s on one core")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--server-cores", default="", help="taskset CPU list for vybe:N (default: the first N cores "
                                                       "other than the generator's)")
    p.add_argument("--generator-core", type=int, default=1)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/vybe_bench_fanout"))
    p.add_argument("--workdir", default="/tmp/bench-fanout", help="server logs go here")
    p.add_argument("--py-spy", default="", help="path to a py-spy binary: profile the servers in --profile-servers")
    p.add_argument("--profile-servers", default="vybe", help="servers to profile with --py-spy (default vybe)")
    p.add_argument("--server-gc", default="",
                   help="what-if: server GC thresholds 'a,b,c' or 'off' (default: untouched)")
    p.add_argument("--resummarize", default="", help="recompute the summary of a saved JSON report and print it")
    p.add_argument("--output", default="", help="also write the JSON report to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.sockets = "1000" if args.sockets == "1000" else args.sockets
        args.probes = min(args.probes, 10)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.resummarize:
        print(json.dumps(resummarize(args.resummarize), indent=2))
        return 0
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Both this process and the servers (which inherit it) hold one fd per socket (the floor two).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.cpus = sorted(os.sched_getaffinity(0))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.generator_core})
    need = max(int(x) for x in args.sockets.split(",")) * (2 if "floor" in args.servers else 1) + 512
    if need > hard:
        log(f"warning: RLIMIT_NOFILE hard limit {hard} < {need}: raise it (ulimit -Hn) for this many sockets")
    try:
        import uvloop

        report = uvloop.run(amain(args))
    except ImportError:
        report = asyncio.run(amain(args))
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

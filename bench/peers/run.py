"""Fan-out against the servers a team would pick instead of ours, under identical load.

    python -m bench.peers [--quick] [--sockets 10000] [--servers vybe,litestar,python-socketio,node-socketio]

N sockets on one channel receive events published through Redis:

* ``vybe``: ``vybe gateway`` (auth + ``subscribe feed``; published with our Lua publish).
* ``litestar``: Litestar ChannelsPlugin + its Redis pub/sub backend (bench/fanout/peer_litestar.py).
* ``python-socketio``: python-socketio AsyncServer + AsyncRedisManager under uvicorn (peer_python_socketio.py),
  published with ``AsyncRedisManager(write_only=True).emit(room="feed")``.
* ``node-socketio``: Node.js socket.io + @socket.io/redis-adapter (node/server.js), published in the
  redis-emitter format (msgpack on ``socket.io#/#``).

The socket.io clients speak Engine.IO v4 / Socket.IO v5 over the websocket transport
(``/socket.io/?EIO=4&transport=websocket``: ``0{..}`` open, ``40`` connect, ``42[..]`` events, ``2``/``3`` pings).
Each server runs alone on core 0 (taskset); this process (generator + publisher) on core 1, with
source addresses 127.0.0.2.. . The measurement is bench/fanout's (probes, a ladder of rates, kept-up
criteria), plus one step at half the kept-up rate for the p99 at half load. Prints a table on stderr
and the JSON report on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.fanout import run as fan
from bench.fanout.loadgen import Client, Generator, client_frame

ROOT = fan.ROOT
NODE_DIR = Path(__file__).resolve().parent / "node"
SERVERS = ("vybe", "litestar", "python-socketio", "node-socketio")
PREVIOUS = {"node-socketio": (30_000, 267), "litestar": (20_000, 1500), "python-socketio": (6_000, 2500)}
GOALS = {"litestar": 10, "python-socketio": 5, "node-socketio": 2}
log = fan.log


# -- Socket.IO v5 / Engine.IO v4 client on the lean generator ---------------------------

class SioClient(Client):
    """Answers the Engine.IO open with a Socket.IO connect, pings with pongs; ready at the connect ack."""

    def _control(self, payload: bytes) -> None:
        if payload == b"2":
            self.transport.write(client_frame(1, b"3"))  # type: ignore[union-attr]
        elif payload[:2] == b"0{":
            self.transport.write(client_frame(1, b"40"))  # type: ignore[union-attr]
        elif payload[:2] == b"40" and not self.ready.done():
            self.ready.set_result(None)
        elif payload[:2] == b"44" and not self.ready.done():  # connect error
            self.ready.set_exception(ConnectionError(payload[:300].decode("utf-8", "replace")))


class SioGenerator(Generator):
    async def connect(self, n: int, init_for: Any, ready_id: bytes | None, concurrency: int = 200,
                      timeout: float = 60.0) -> float:
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()

        async def one(i: int) -> None:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
            async with sem:
                for attempt in range(3):
                    fut: asyncio.Future[None] = loop.create_future()
                    client = SioClient(self.stats, request, [], None, fut)
                    src = self.sources[(i + attempt) % len(self.sources)]
                    try:
                        await asyncio.wait_for(loop.create_connection(
                            lambda c=client: c, self.host, self.port, local_addr=(src, 0)), timeout)
                        await asyncio.wait_for(fut, timeout)
                    except (TimeoutError, OSError, ConnectionError) as err:
                        client.abort()
                        if attempt == 2:
                            self.connect_failures.append(f"{type(err).__name__}: {err}"[:200])
                        await asyncio.sleep(0.2)
                        continue
                    self.clients.append(client)
                    return

        await asyncio.gather(*(one(i) for i in range(n)))
        return time.monotonic() - t0


def sio_data(data: dict[str, Any]) -> dict[str, Any]:
    # "ts" first: the generator reads the number up to the next comma.
    return {"ts": time.time(), "event": "bench.tick", "channel": "feed", "data": data}


class PySioServer(fan.Server):
    name = "python-socketio"
    path = "/socket.io/?EIO=4&transport=websocket"
    generator = SioGenerator

    def __init__(self, ctx: fan.Context, port: int) -> None:
        super().__init__(ctx, port)
        import socketio

        self.channel = f"{ctx.prefix}socketio"
        self.mgr = socketio.AsyncRedisManager(ctx.redis_url, channel=self.channel, write_only=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ([str(fan.VENV / "python"), "-m", "uvicorn", "bench.peers.peer_python_socketio:app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
                {"BENCH_SIO_CHANNEL": self.channel, "BENCH_REDIS_URL": self.ctx.redis_url})

    async def publish(self, data: dict[str, Any]) -> None:
        await self.mgr.emit("tick", sio_data(data), room="feed", namespace="/")


class NodeSioServer(fan.Server):
    name = "node-socketio"
    path = "/socket.io/?EIO=4&transport=websocket"
    generator = SioGenerator

    def __init__(self, ctx: fan.Context, port: int) -> None:
        super().__init__(ctx, port)
        self.key = f"{ctx.prefix}sio"
        self.channel = f"{self.key}#/#"

    def command(self) -> tuple[list[str], dict[str, str]]:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        if not (NODE_DIR / "node_modules" / "socket.io").exists():
            log("installing the Node peer's packages (npm ci)")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                           stdout=subprocess.DEVNULL)
        return ([node, str(NODE_DIR / "server.js")],
                {"BENCH_PORT": str(self.port), "BENCH_REDIS_URL": self.ctx.redis_url, "BENCH_KEY": self.key})

    async def publish(self, data: dict[str, Any]) -> None:
        # @socket.io/redis-emitter's message: msgpack [uid, packet, opts] (packet type 2 = EVENT).
        msg = msgspec.msgpack.encode(["bench-emitter", {"type": 2, "data": ["tick", sio_data(data)], "nsp": "/"},
                                      {"rooms": ["feed"], "except": [], "flags": {}}])
        await self.ctx.redis.publish(self.channel, msg)


CLASSES: dict[str, type[fan.Server]] = {"vybe": fan.VybeServer, "litestar": fan.LitestarServer,
                                        "python-socketio": PySioServer, "node-socketio": NodeSioServer}


async def bench_server(ctx: fan.Context, name: str, n: int, rates: list[float]) -> dict[str, Any]:
    server = CLASSES[name](ctx, fan.free_port())
    out: dict[str, Any] = {"server": name, "sockets": n}
    gen: Generator | None = None
    log(f"{name} N={n}: starting on port {server.port}")
    try:
        await server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        await asyncio.sleep(1.5)
        rss0 = fan.proc_rss_kb(pid)
        gen = getattr(server, "generator", Generator)("127.0.0.1", server.port, server.path, ctx.sources)
        init = server.init_for if type(server).init_for is not fan.Server.init_for else None
        connect_s = await gen.connect(n, init, server.ready_id)
        await asyncio.sleep(2.0)
        rss1 = fan.proc_rss_kb(pid)
        connected = len(gen.clients)
        log(f"{name} N={n}: {connected} sockets in {connect_s:.1f}s ({len(gen.connect_failures)} failed)")
        out.update({"connected": connected, "connect_failures": len(gen.connect_failures),
                    "connect_failure_samples": gen.connect_failures[:3], "connect_s": round(connect_s, 2),
                    "rss_before_kb": rss0, "rss_idle_kb": rss1,
                    "rss_per_conn_kb": round((rss1 - rss0) / connected, 2) if connected else None})
        if not connected:
            raise RuntimeError(f"no socket connected: {gen.connect_failures[:3]}")
        for _ in range(5):  # warm-up: every socket receives
            w = gen.stats.reset(time.time())
            await server.publish(ctx.data(-1000))
            await fan.wait_count(w, gen.alive(), timeout=5.0)
            if w.count >= gen.alive():
                break
        out["one_event_to_all"] = await fan.probe(server, gen, ctx, ctx.args.probes)
        steps: list[dict[str, Any]] = []
        bad = 0
        for rate in rates:
            r = await fan.step(server, gen, ctx, n, rate)
            steps.append(r)
            log(f"{name} N={n} rate={rate}/s: delivered {r['delivered_per_s']}/s of {r['expected_deliveries_per_s']}"
                f" loss {r['loss']} p99 {r['p99_ms']} ms cpu {r['server_cpu_pct']}% gen {r['gen_cpu_pct']}%")
            bad = 0 if r["kept_up"] else bad + 1
            if bad >= 2 or r["loss_ratio"] > 0.05 or (r["p99_ms"] or 0) > 3000 or r["sockets_alive"] < connected * 0.95:
                break
            await asyncio.sleep(0.5)
        out["steps"] = steps
        fan.best_of(out)
        ok = [s for s in steps if s["kept_up"]]
        best = max(ok, key=lambda s: s["delivered_per_s"]) if ok else min(steps, key=lambda s: s["rate_eps"])
        half_rate = round(best["rate_eps"] / 2, 2)
        # Let a saturated server drain its backlog first (until nothing arrives for 2 s, at most 60 s).
        last, quiet_since, t_end = gen.stats.total, time.monotonic(), time.monotonic() + 60
        while time.monotonic() - quiet_since < 2.0 and time.monotonic() < t_end:
            await asyncio.sleep(0.25)
            if gen.stats.total != last:
                last, quiet_since = gen.stats.total, time.monotonic()
        half = await fan.step(server, gen, ctx, n, half_rate)
        out["half_load"] = half
        log(f"{name} N={n} half load rate={half_rate}/s: p99 {half['p99_ms']} ms")
        out["errors_seen"] = [e.decode("utf-8", "replace") for e in gen.stats.errors[:3]]
    except Exception as err:  # noqa: BLE001 - report and go on with the next server
        log(f"{name} N={n}: FAILED {type(err).__name__}: {err}")
        out["error"] = f"{type(err).__name__}: {err}"
        out["server_log_tail"] = server.log_tail()
    finally:
        if gen is not None:
            gen.close_all()
        await server.stop()
        await asyncio.sleep(1.0)
    return out


def table(results: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    rows = []
    mine = next((r for r in results if r["server"] == "vybe"), {})
    for r in results:
        row = {"server": r["server"], "sockets": r["sockets"],
               "deliveries_per_s_per_core": r.get("kept_up_deliveries_per_s"),
               "p99_ms_half_load": (r.get("half_load") or {}).get("p99_ms"),
               "one_event_p99_ms": (r.get("one_event_to_all") or {}).get("p99_ms_median"),
               "rss_per_conn_kb": r.get("rss_per_conn_kb"), "error": r.get("error")}
        if r["server"] != "vybe":
            a, b = mine.get("kept_up_deliveries_per_s"), r.get("kept_up_deliveries_per_s")
            row["ours_over_theirs"] = round(a / b, 2) if a and b else None
            row["goal"] = GOALS.get(r["server"])
            ratio, goal = row["ours_over_theirs"], row["goal"]
            row["goal_met"] = (ratio >= goal) if ratio and goal else None
            prev = PREVIOUS.get(r["server"])
            row["previously_measured_10k"] = (
                {"deliveries_per_s": prev[0], "p99_ms_half_load": prev[1]} if prev else None)
        rows.append(row)
    head = (f"{'server':<16}{'N':>7}{'deliv/s/core':>14}{'p99@half ms':>13}{'1-event p99':>13}{'RSS/conn KB':>13}"
            f"{'ours/x':>8}{'goal':>6}")
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['server']:<16}{row['sockets']:>7}{_s(row['deliveries_per_s_per_core']):>14}"
                     f"{_s(row['p99_ms_half_load']):>13}{_s(row['one_event_p99_ms']):>13}{_s(row['rss_per_conn_kb']):>13}"
                     f"{_s(row.get('ours_over_theirs')):>8}{_s(row.get('goal')):>6}"
                     + (f"  ERROR {row['error'][:60]}" if row["error"] else ""))
    return rows, "\n".join(lines)


def _s(x: Any) -> str:
    return "-" if x is None else (f"{x:,.0f}" if isinstance(x, (int, float)) and x >= 100 else str(x))


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    ctx = fan.Context(args)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    probe_el = fan.peer_message({"seq": 123456, "pad": ""})
    ctx.pad = "x" * max(0, fan.EVENT_BYTES - len(probe_el) - 12)
    if "vybe" in servers:
        await fan.prepare_database(args.database_url)
    await ctx.redis.ping()
    started = time.time()
    n = args.sockets
    rates = [float(x) for x in args.rates.split(",")] if args.rates else fan.default_rates(n, args.quick)
    results = [await bench_server(ctx, name, n, rates) for name in servers]
    with contextlib.suppress(Exception):
        keys = [k async for k in ctx.redis.scan_iter(match=f"{ctx.prefix}*", count=1000)]
        if keys:
            await ctx.redis.delete(*keys)
    await ctx.redis.aclose()
    rows, text = table(results)
    gen_cpu_max = max((s["gen_cpu_pct"] for r in results for s in r.get("steps", [])), default=0)
    return {"benchmark": "peers", "run_id": ctx.run_id, "duration_s": round(time.time() - started, 1),
            "params": {"servers": servers, "sockets": n, "rates": rates, "seconds_per_step": args.seconds,
                       "probes": args.probes, "server_core": args.server_core, "generator_core": args.generator_core,
                       "source_addresses": ctx.sources},
            "generator_note": ("generator CPU exceeded 90% in some step: those steps measure the generator"
                               if gen_cpu_max > 90 else f"generator CPU peaked at {gen_cpu_max}%"),
            "table": rows, "table_text": text, "results": results}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=10000, help="sockets per server (default 10000)")
    p.add_argument("--rates", default="", help="events/s per step, comma-separated (default: bench.fanout's ladder)")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per rate step (default 5)")
    p.add_argument("--probes", type=int, default=10, help="one-event-to-all repeats (default 10)")
    p.add_argument("--servers", default=",".join(SERVERS), help=",".join(SERVERS))
    p.add_argument("--quick", action="store_true", help="1000 sockets, 3 rates of 4 s, 5 probes (~2-3 minutes)")
    p.add_argument("--sources", type=int, default=8, help="client source addresses 127.0.0.2.. (default 8)")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--generator-core", type=int, default=1)
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--database-url", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/vybe_bench_fanout"))
    p.add_argument("--workdir", default="/tmp/bench-peers", help="server logs go here")
    p.add_argument("--output", default="", help="also write the JSON report to this file")
    args = p.parse_args(argv)
    args.server_gc = ""
    args.py_spy = ""
    if args.quick:
        args.sockets = 1000 if args.sockets == 10000 else args.sockets
        args.probes = min(args.probes, 5)
        args.seconds = min(args.seconds, 4.0)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.generator_core})
    import uvloop

    report = uvloop.run(amain(args))
    print(report["table_text"], file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

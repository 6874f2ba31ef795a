"""Reconnect storm: N sockets drop at once and come back at once, each resuming with ``since``.

    python -m bench.reconnect --sockets 10000                 # vybe and the bare websockets peer
    python -m bench.reconnect --sockets 2000 --servers vybe   # quicker

Per server (one after the other, the server pinned to core 0 and this load generator to core 1,
as ``bench.fanout`` does): start it, connect N sockets (ours: ``auth`` with a distinct user each,
``subscribe feed``), publish 3 events, drop every socket at once (RST), publish 3 more (what they
miss), and reconnect all N at once (``--in-flight`` handshakes at a time, default all): ours send
``auth`` and ``subscribe feed since=<offset before the 3 missed>``, and a socket counts when its
subscribe is acked (``recovered: true``, the missed events follow). Reported: the storm's wall
time, sockets per second, and the server's CPU time per socket (so per core: 1 / that). The peer
(``websockets``: a bare relay) does no auth, no resume and no database: it bounds what the
WebSocket handshake alone costs in Python, so the ratio is ours over a lower bound.
Prints one JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from typing import Any

from bench.fanout.loadgen import Generator, client_frame
from bench.fanout.run import (
    SERVER_CLASSES,
    Context,
    Server,
    VybeServer,
    free_port,
    log,
    prepare_database,
    proc_cpu_s,
    start_py_spy,
    stop_py_spy,
)
from bench.fanout.run import parse_args as fanout_args


class Storm(VybeServer):
    """Our gateway, whose clients resume ``feed`` from ``since`` when ``since`` is set."""

    since: str | None = None

    def init_for(self, i: int) -> list[bytes]:
        frames = super().init_for(i)
        if self.since is None:
            return frames
        sub = json.dumps({"type": "subscribe", "id": "2", "channel": "feed", "since": self.since}).encode()
        return [frames[0], client_frame(1, sub)]


async def settled(pid: int, quiet_cpu_s: float = 0.02, every_s: float = 0.3, most_s: float = 30.0) -> float:
    """Seconds until the server uses less than ``quiet_cpu_s`` of CPU per ``every_s`` (idle again)."""
    t0 = time.monotonic()
    last = proc_cpu_s(pid)
    while time.monotonic() - t0 < most_s:
        await asyncio.sleep(every_s)
        now = proc_cpu_s(pid)
        if now - last < quiet_cpu_s:
            break
        last = now
    return round(time.monotonic() - t0, 2)


async def storm(ctx: Context, name: str, n: int, in_flight: int) -> dict[str, Any]:
    server: Server = Storm(ctx, free_port()) if name == "vybe" else SERVER_CLASSES[name](ctx, free_port())
    out: dict[str, Any] = {"server": name, "sockets": n}
    try:
        await server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        await asyncio.sleep(1.0)
        init = server.init_for if server.init_for.__func__ is not Server.init_for else None  # type: ignore[attr-defined]
        gen = Generator("127.0.0.1", server.port, server.path, ctx.sources)
        out["first_connect_s"] = round(await gen.connect(n, init, server.ready_id, concurrency=200), 2)
        if len(gen.clients) < n:
            raise RuntimeError(f"only {len(gen.clients)} of {n} connected: {gen.connect_failures[:3]}")
        for seq in range(3):
            await server.publish(ctx.data(seq))
        if isinstance(server, Storm):  # the offset every socket resumes from
            server.since = await server.publisher.publish("feed", "bench.tick", ctx.data(3))
        await asyncio.sleep(1.0)
        gen.close_all()
        for seq in range(4, 7):
            await server.publish(ctx.data(seq))  # missed while away
        out["teardown_s"] = await settled(pid)  # the server done with the dropped sockets
        again = Generator("127.0.0.1", server.port, server.path, ctx.sources)
        spy = start_py_spy(ctx, name, n, pid)  # --py-spy PATH: profile the storm
        c0 = proc_cpu_s(pid)
        wall = await again.connect(n, init, server.ready_id, concurrency=in_flight, timeout=120.0)
        cpu = proc_cpu_s(pid) - c0
        if spy is not None:
            out["profile"] = await stop_py_spy(*spy)
        back = len(again.clients)
        out.update({
            "reconnected": back, "failures": len(again.connect_failures),
            "failure_samples": again.connect_failures[:3], "storm_s": round(wall, 2),
            "per_s": round(back / wall, 1) if wall else None, "server_cpu_s": round(cpu, 2),
            "server_cpu_us_per_socket": round(cpu / back * 1e6, 1) if back else None,
            "per_core_per_s": round(back / cpu, 1) if cpu else None,
        })
        log(f"{name} N={n}: {back} back in {wall:.2f}s ({out['per_s']}/s), server CPU {cpu:.2f}s "
            f"({out['per_core_per_s']}/s per core)")
        again.close_all()
    except Exception as err:  # noqa: BLE001 - report and go on with the next server
        out["error"] = f"{type(err).__name__}: {err}"
        out["server_log_tail"] = server.log_tail()
    finally:
        await server.stop()
        await asyncio.sleep(1.0)
    return out


async def amain(args: argparse.Namespace, servers: list[str], sizes: list[int], in_flight: int) -> dict[str, Any]:
    ctx = Context(args)
    if "vybe" in servers:
        await prepare_database(args.database_url)
    results = [await storm(ctx, name, n, in_flight or n) for n in sizes for name in servers]
    await ctx.close()
    ratios = {}
    for n in sizes:
        by = {r["server"]: r for r in results if r["sockets"] == n}
        ours, peer = by.get("vybe", {}), by.get("websockets", {})
        if ours.get("per_core_per_s") and peer.get("per_core_per_s"):
            ratios[str(n)] = round(ours["per_core_per_s"] / peer["per_core_per_s"], 3)
    return {"benchmark": "reconnect", "machine": {"cpus": os.cpu_count()},
            "params": {"servers": servers, "sockets": sizes, "in_flight": in_flight or "all"},
            "ratio_per_core_vybe_over_websockets": ratios, "results": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", default="10000")
    p.add_argument("--servers", default="vybe,websockets")
    p.add_argument("--in-flight", type=int, default=0, help="handshakes at once (default: all)")
    own, rest = p.parse_known_args(argv)
    args = fanout_args(rest)  # --redis-url, --database-url, --sources, cores, --workdir
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.generator_core})
    import uvloop

    report = uvloop.run(amain(args, [s for s in own.servers.split(",") if s],
                              [int(x) for x in own.sockets.split(",")], own.in_flight))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

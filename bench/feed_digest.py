"""The feed at scale: per-event delivery against digest delivery, in the same run.

    python -m bench.feed_digest --sockets 5000 --rates 5,20,80,320

Every socket subscribes ``feed`` (as every member's app does). Posts arrive on the feed at each
rate (events/s, the whole deployment's post rate) for ``--seconds``; we measure the gateway's CPU
(one core, ``taskset -c 0``, the load generator on core 1, as ``bench.fanout``) and the frames
it writes:

* ``events``: today's default, each post to each socket as it comes (bursts share a frame);
* ``digest``: ``[namespaces.feed] delivery = "digest"``, at most one ``feed.digest`` per socket per
  second carrying the count and the newest 5 posts.

Per-event delivery costs post rate x sockets (users^2 across a deployment); a digest costs
sockets / interval whatever the post rate. Prints one JSON report with the CPU share per 1,000
sockets at each rate and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

from bench.fanout.loadgen import Generator
from bench.fanout.run import Context, VybeServer, free_port, log, prepare_database, proc_cpu_s, publish_at
from bench.fanout.run import parse_args as fanout_args
from bench.reconnect import settled

DIGEST_TOML = """
[namespaces.feed]
delivery = "digest"
digest_interval_s = 1.0
digest_items = 5
digest_events = ["bench.tick"]
"""


class DigestServer(VybeServer):
    name = "vybe"

    def __init__(self, ctx: Context, port: int, namespaces: str | None) -> None:
        super().__init__(ctx, port)
        self.namespaces = namespaces

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd, env = super().command()
        env["VYBE_PROCESSES"] = "1"
        if self.namespaces:
            env["VYBE_NAMESPACES"] = self.namespaces
        return cmd, env


async def run_mode(ctx: Context, mode: str, namespaces: str | None, n: int, rates: list[float],
                   seconds: float) -> dict[str, Any]:
    server = DigestServer(ctx, free_port(), namespaces)
    out: dict[str, Any] = {"mode": mode, "sockets": n, "steps": []}
    try:
        await server.start()
        pid = server.proc.pid  # type: ignore[union-attr]
        gen = Generator("127.0.0.1", server.port, server.path, ctx.sources)
        out["connect_s"] = round(await gen.connect(n, server.init_for, server.ready_id), 2)
        await settled(pid)
        for rate in rates:
            frames0, c0, t0 = gen.stats.frames, proc_cpu_s(pid), time.monotonic()
            await publish_at(rate, seconds, lambda i: server.publish(ctx.data(i)))
            await asyncio.sleep(1.5)  # the last digest goes out
            wall, cpu = time.monotonic() - t0, proc_cpu_s(pid) - c0
            step = {"rate": rate, "server_cpu_pct": round(100 * cpu / wall, 1),
                    "cpu_pct_per_1000_sockets": round(100 * cpu / wall * 1000 / n, 3),
                    "frames_per_s": round((gen.stats.frames - frames0) / wall), "alive": gen.alive()}
            out["steps"].append(step)
            log(f"{mode} N={n} rate={rate}/s: server CPU {step['server_cpu_pct']}%, {step['frames_per_s']} frames/s")
        gen.close_all()
    except Exception as err:  # noqa: BLE001 - report it
        out["error"] = f"{type(err).__name__}: {err}"
        out["server_log_tail"] = server.log_tail()
    finally:
        await server.stop()
        await asyncio.sleep(1.0)
    return out


async def amain(args: argparse.Namespace, n: int, rates: list[float], seconds: float) -> dict[str, Any]:
    ctx = Context(args)
    await prepare_database(args.database_url)
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(DIGEST_TOML)
    try:
        events = await run_mode(ctx, "events", None, n, rates, seconds)
        digest = await run_mode(ctx, "digest", f.name, n, rates, seconds)
    finally:
        await asyncio.to_thread(os.unlink, f.name)
    await ctx.close()
    ratios = {}
    for e, d in zip(events.get("steps", []), digest.get("steps", []), strict=False):
        if d["server_cpu_pct"]:
            ratios[str(e["rate"])] = round(e["server_cpu_pct"] / d["server_cpu_pct"], 2)
    return {"benchmark": "feed_digest", "machine": {"cpus": os.cpu_count()},
            "params": {"sockets": n, "rates": rates, "seconds": seconds, "digest_interval_s": 1.0},
            "cpu_ratio_events_over_digest": ratios, "results": [events, digest]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.feed_digest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sockets", type=int, default=5000)
    p.add_argument("--rates", default="5,20,80,320")
    p.add_argument("--seconds", type=float, default=5.0)
    own, rest = p.parse_known_args(argv)
    args = fanout_args(rest)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {args.generator_core})
    import uvloop

    report = uvloop.run(amain(args, own.sockets, [float(x) for x in own.rates.split(",")], own.seconds))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

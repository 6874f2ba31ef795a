"""End-to-end moderation latency: ``python bench/moderation_e2e.py [--rate 100] [--seconds 20]``.

Measures, with the default (embedded) scorer, the time from sending
``post_vybe`` on a WebSocket to receiving its ``report.flagged`` event on
``mod:flagged`` on a moderator's socket, at a steady (open-loop) post rate.

Setup (all torn down at the end): a scratch database on the local PostgreSQL
(created, migrated with ``db.migrate.migrate``, dropped), a unique
``VYBE_REDIS_PREFIX`` on the local Redis (its keys deleted), one gateway and one
worker started as subprocesses (``python -m cli gateway|worker``).
``--thresholds toxicity=0:1`` (the default) flags every post so every post
reaches ``mod:flagged``; with a realistic policy only flagged posts are timed. The default
scorer's second opinion (MPNet) is routed by the worker's thresholds: a post flagged by
``toxicity=0`` decides nothing, so only the care signal routes any; ``--thresholds
toxicity=0.8`` (the default policy) times the flagged posts, the second opinion included.
``--worker-batch`` / ``--worker-block-ms`` take comma lists: every combination
gets its own worker and its own runs. Prints one JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.settings import load_settings
from db.migrate import migrate
from gateway.auth import mint_token
from moderation.scorers.trainset import EVAL_PATH, load_jsonl

ROOT = Path(__file__).resolve().parents[1]

if TYPE_CHECKING:
    from collections.abc import Iterator

SECRET = "e2e-bench-secret-" + "x" * 32
PER_CONNECTION_RATE = 10.0
"""Posts/s per poster socket, well under the gateway's per-connection limit (VYBE_RATE_PER_S, 20)."""


@dataclass
class Phase:
    """What one timed run records (perf_counter seconds)."""

    sent: dict[str, float] = field(default_factory=dict)  # request id -> send time
    acked: dict[str, tuple[str, float]] = field(default_factory=dict)  # request id -> (vybe id, ack time)
    flagged: dict[str, float] = field(default_factory=dict)  # vybe id -> receipt on mod:flagged
    errors: list[str] = field(default_factory=list)
    send_s: float = 0.0  # how long sending took (achieved rate = posts / send_s)


def percentiles(values: list[float]) -> dict[str, float | int]:
    """n, p50, p95, p99 and max of ``values`` in milliseconds (nearest-rank)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000, 1)

    return {"n": len(ordered), "p50_ms": rank(0.50), "p95_ms": rank(0.95), "p99_ms": rank(0.99),
            "max_ms": round(ordered[-1] * 1000, 1)}


# -- infrastructure -------------------------------------------------------------------------------

def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@asynccontextmanager
async def scratch_database(admin_dsn: str) -> Any:
    """Create, migrate, yield the DSN of, and finally drop a private database."""
    name = f"vybe_e2e_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = with_database(admin_dsn, name)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def drop_redis_keys(url: str, prefix: str) -> int:
    """Delete every key under ``prefix``; returns how many."""
    client = aioredis.Redis.from_url(url)
    deleted = 0
    try:
        async for key in client.scan_iter(match=prefix + "*", count=1000):
            deleted += await client.delete(key)
    finally:
        await client.aclose()
    return deleted


@contextmanager
def process(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m cli ARGS`` until the block exits (SIGTERM, then SIGKILL)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def service_env(args: argparse.Namespace, dsn: str, prefix: str, port: int, batch: int,
                block_ms: int) -> dict[str, str]:
    """Environment of the gateway and worker subprocesses."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(VYBE_DATABASE_URL=dsn, VYBE_REDIS_URL=args.redis, VYBE_REDIS_PREFIX=prefix,
               VYBE_JWT_SECRET=SECRET, VYBE_PORT=str(port), VYBE_LOG_LEVEL="WARNING",
               VYBE_MODERATION_THRESHOLDS=args.thresholds, VYBE_WORKER_BATCH=str(batch),
               VYBE_WORKER_BLOCK_MS=str(block_ms))
    return env


# -- WebSocket clients ----------------------------------------------------------------------------

async def open_client(port: int, user: str, role: str = "MEMBER") -> ClientConnection:
    """An authenticated socket (retries until the gateway accepts connections)."""
    token = mint_token(load_settings({}, jwt_secret=SECRET), user, role=role)
    deadline = time.monotonic() + 60
    while True:
        try:
            ws = await connect(f"ws://127.0.0.1:{port}/ws", max_size=None)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    await ws.send(json.dumps({"type": "auth", "id": "1", "token": token}))
    reply = json.loads(await ws.recv())
    if reply[0].get("type") != "ack":
        raise RuntimeError(f"auth refused: {reply}")
    return ws


async def moderator_reader(ws: ClientConnection, phase_of: list[Phase]) -> None:
    """Record the receipt time of every ``report.flagged`` into the current phase."""
    async for frame in ws:
        now = time.perf_counter()
        for msg in json.loads(frame):
            if msg.get("type") == "event" and msg.get("event") == "report.flagged":
                phase_of[0].flagged.setdefault(str(msg["data"]["target_id"]), now)


async def poster_reader(ws: ClientConnection, phase_of: list[Phase]) -> None:
    """Map each post's request id to its vybe id (from the ack) and note errors."""
    async for frame in ws:
        now = time.perf_counter()
        for msg in json.loads(frame):
            if msg.get("type") == "ack" and isinstance(msg.get("result"), dict) and "id" in msg["result"]:
                phase_of[0].acked[msg["id"]] = (str(msg["result"]["id"]), now)
            elif msg.get("type") == "error":
                phase_of[0].errors.append(str(msg.get("code")))


async def post_steadily(ws: ClientConnection, phase: Phase, rate: float, seconds: float, offset: float,
                        texts: list[str], tag: str) -> None:
    """Open-loop sender: post k is sent at start + offset + k/rate, whatever the replies."""
    start = time.perf_counter() + offset
    for k in range(int(rate * seconds)):
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rid = f"{tag}-{k}"
        phase.sent[rid] = time.perf_counter()
        await ws.send(json.dumps({"type": "post_vybe", "id": rid, "content": texts[(k * 7 + len(tag)) % len(texts)]}))


# -- phases ---------------------------------------------------------------------------------------

async def run_phase(posters: list[ClientConnection], phase_of: list[Phase], rate: float, seconds: float,
                    texts: list[str], drain_s: float) -> tuple[Phase, float, float]:
    """One timed run; returns the phase, its start and its end (wall clock, for the DB query)."""
    phase = Phase()
    phase_of[0] = phase
    wall0, t0 = time.time(), time.perf_counter()
    per = rate / len(posters)
    run = uuid.uuid4().hex[:8]  # request ids are idempotency keys: never reuse one across runs
    await asyncio.gather(*(post_steadily(ws, phase, per, seconds, i / rate, texts, f"{run}-r{rate:g}p{i}")
                           for i, ws in enumerate(posters)))
    phase.send_s = time.perf_counter() - t0
    deadline = time.perf_counter() + drain_s
    while time.perf_counter() < deadline and _pending(phase):  # noqa: ASYNC110 - bounded poll of many posts' state
        await asyncio.sleep(0.05)
    return phase, wall0, time.time()


def _pending(phase: Phase) -> int:
    """Posts not yet acked, or acked but not yet seen on mod:flagged."""
    missing_ack = len(phase.sent) - len(phase.acked)
    return missing_ack + sum(1 for vid, _ in phase.acked.values() if vid not in phase.flagged)


def summarize(phase: Phase, rate: float) -> dict[str, Any]:
    """Latency percentiles and counts of one phase."""
    e2e, ack = [], []
    for rid, (vid, acked_at) in phase.acked.items():
        ack.append(acked_at - phase.sent[rid])
        if vid in phase.flagged:
            e2e.append(phase.flagged[vid] - phase.sent[rid])
    errors = phase.errors
    return {"target_rate": rate, "achieved_post_rate": round(len(phase.sent) / max(phase.send_s, 1e-9), 1),
            "posted": len(phase.sent), "acked": len(phase.acked), "flagged_received": len(e2e),
            "errors": {code: errors.count(code) for code in sorted(set(errors))},
            "post_to_mod_flagged": percentiles(e2e), "post_to_ack": percentiles(ack)}


async def batch_sizes(dsn: str, since: float, until: float) -> dict[str, Any]:
    """Worker batch sizes: rows of moderation_scores share ``created_at`` (now() of one transaction)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT count(*) AS n FROM moderation_scores WHERE created_at >= to_timestamp($1) "
                                "AND created_at <= to_timestamp($2) GROUP BY created_at", since, until)
    finally:
        await conn.close()
    sizes = sorted(r["n"] for r in rows)
    if not sizes:
        return {"batches": 0}
    return {"batches": len(sizes), "mean": round(sum(sizes) / len(sizes), 1), "p50": sizes[len(sizes) // 2],
            "max": sizes[-1]}


WARM_UP = "warm-up post: you are a worthless pathetic idiot and everyone hates you"
"""Flagged under the default thresholds too, so ``--thresholds`` may be a realistic policy."""


async def warm_up(posters: list[ClientConnection], phase_of: list[Phase], timeout_s: float) -> float:
    """Post until the first item comes back on mod:flagged (worker loaded); returns seconds waited."""
    phase = Phase()
    phase_of[0] = phase
    t0 = time.perf_counter()
    k, run = 0, uuid.uuid4().hex[:8]
    while not phase.flagged and time.perf_counter() - t0 < timeout_s:
        phase.sent[f"warm-{run}-{k}"] = time.perf_counter()
        await posters[0].send(json.dumps({"type": "post_vybe", "id": f"warm-{run}-{k}", "content": WARM_UP}))
        k += 1
        await asyncio.sleep(1.0)
    if not phase.flagged:
        raise RuntimeError(f"nothing reached mod:flagged within {timeout_s:.0f} s (do the thresholds flag it?)")
    await asyncio.sleep(1.0)  # let the warm-up stragglers through
    return round(time.perf_counter() - t0, 1)


async def measure(args: argparse.Namespace, dsn: str, port: int, texts: list[str]) -> dict[str, Any]:
    """Warm up, then one phase per rate; the sockets stay open across phases."""
    phase_of = [Phase()]
    mod = await open_client(port, "e2e-moderator", role="MODERATOR")
    await mod.send(json.dumps({"type": "subscribe", "id": "2", "channel": "mod:flagged"}))
    await mod.recv()
    n_posters = max(1, math.ceil(max(args.rate, args.low_rate) / PER_CONNECTION_RATE))
    posters = [await open_client(port, f"e2e-poster-{i}") for i in range(n_posters)]
    readers = [asyncio.create_task(moderator_reader(mod, phase_of))]
    readers += [asyncio.create_task(poster_reader(ws, phase_of)) for ws in posters]
    out: dict[str, Any] = {"warm_up_s": await warm_up(posters, phase_of, args.warm_up_timeout),
                           "poster_sockets": n_posters}
    try:
        for rate in [r for r in (args.low_rate, args.rate) if r > 0]:
            phase, since, until = await run_phase(posters, phase_of, rate, args.seconds, texts, args.drain)
            out[f"rate_{rate:g}"] = {**summarize(phase, rate),
                                     "worker_batches": await batch_sizes(dsn, since, until)}
    finally:
        for task in readers:
            task.cancel()
        for ws in [mod, *posters]:
            await ws.close()
    return out


async def run_config(args: argparse.Namespace, dsn: str, batch: int, block_ms: int, logs: Path) -> dict[str, Any]:
    """Start a gateway and a worker with one batching configuration and measure."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}:"
    port = args.port
    env = service_env(args, dsn, prefix, port, batch, block_ms)
    texts = [r["text"] for r in load_jsonl(EVAL_PATH)]
    tag = f"b{batch}-ms{block_ms}"
    try:
        with process(["gateway"], env, logs / f"gateway-{tag}.log"), \
                process(["worker"], env, logs / f"worker-{tag}.log"):
            result = await measure(args, dsn, port, texts)
    finally:
        await drop_redis_keys(args.redis, prefix)
    return {"worker_batch": batch, "worker_block_ms": block_ms, **result}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Every batching configuration against one scratch database."""
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "seconds": args.seconds,
                              "thresholds": args.thresholds,
                              "scorer": "VYBE_SCORER of the environment (default blend)", "runs": []}
    with tempfile.TemporaryDirectory(prefix="vybe-e2e-") as tmp:
        async with scratch_database(args.postgres) as dsn:
            for batch, block_ms in itertools.product(_ints(args.worker_batch), _ints(args.worker_block_ms)):
                report["runs"].append(await run_config(args, dsn, batch, block_ms, Path(tmp)))
        if args.keep_logs:
            report["logs"] = _copy_logs(Path(tmp), Path(args.keep_logs))
    return report


def _ints(spec: str) -> list[int]:
    return [int(x) for x in spec.split(",") if x.strip()]


def _copy_logs(src: Path, dst: Path) -> str:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src.iterdir():
        (dst / path.name).write_bytes(path.read_bytes())
    return str(dst)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (see the module doc)."""
    ap = argparse.ArgumentParser(description="End-to-end moderation latency (post -> mod:flagged).")
    ap.add_argument("--rate", type=float, default=100.0, help="posts/s of the main run (default 100)")
    ap.add_argument("--low-rate", type=float, default=20.0, help="posts/s of the context run first (0: skip)")
    ap.add_argument("--seconds", type=float, default=20.0, help="duration of each run (default 20)")
    ap.add_argument("--thresholds", default="toxicity=0:1",
                    help="VYBE_MODERATION_THRESHOLDS of the worker (default flags everything; '' = policy)")
    ap.add_argument("--worker-batch", default="64", help="VYBE_WORKER_BATCH values, comma list (default 64)")
    ap.add_argument("--worker-block-ms", default="50", help="VYBE_WORKER_BLOCK_MS values, comma list (default 50)")
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--port", type=int, default=18765)
    ap.add_argument("--drain", type=float, default=15.0, help="seconds to wait for stragglers after sending")
    ap.add_argument("--warm-up-timeout", type=float, default=180.0)
    ap.add_argument("--keep-logs", default="", help="copy the gateway/worker logs to this directory")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run and print the JSON report."""
    print(json.dumps(asyncio.run(main_async(parse_args(argv))), indent=2))


if __name__ == "__main__":
    main()

"""Hot reactions: N users reacting/unreacting on ONE vybe, group commit vs a transaction each.

    python bench/hot_reactions.py --users 1000 --seconds 20 [--dsn ...] [--pool 20] [--no-fk-variant]

Creates its own database on the server named by ``--dsn`` (default
``$VYBE_BENCH_DATABASE_URL``, else postgresql://postgres@127.0.0.1:5432/postgres),
migrates it, runs each phase for ``--seconds`` and drops the database; prints
one JSON report. Both paths use the same pool size. Phases:

- ``ours``: :class:`db.writes.ReactionWriter` (group commit; counters by the 0002 triggers),
  with ``--outbox`` (default) as a gateway runs it: each batch's events written to the
  outbox in its transaction, published to Redis (``--redis-url``) by a relay, deleted in batches.
- ``naive``: one transaction per reaction, ``INSERT`` + ``UPDATE shared_vybes SET
  reaction_count = reaction_count +/- 1`` (the counter triggers on reactions are
  disabled for this phase, so the explicit UPDATE is the only counter write).
- with ``--fk-variant`` (default on): both again with a foreign key from
  reactions.reactable_id to shared_vybes (0001 has none on purpose).

Each phase ends by checking that the vybe's reaction_count equals its rows
(and, for ``ours``, that db.counters finds no drift anywhere).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.bus import Publisher
from common.events import reactions_changed
from common.tasks import cancel_and_wait
from db.counters import check_counters
from db.migrate import migrate
from db.outbox import Relay
from db.pool import create_pool
from db.writes import ReactionWriter, WriteError, post_vybe, upsert_user

TYPES = ["HEART", "CLAP", "FIRE", "PEACE", "INSPIRE", "STRENGTH", "GRATITUDE", "MINDFUL"]
_NAIVE_INSERT = """
INSERT INTO reactions (user_id, type, reactable_type, reactable_id)
VALUES ($1, $2::text::reaction_type, 'SHARED_VYBE', $3)
ON CONFLICT ON CONSTRAINT reactions_unique_key DO NOTHING RETURNING true
"""
_NAIVE_DELETE = """
DELETE FROM reactions WHERE user_id = $1 AND type = $2::text::reaction_type AND reactable_type = 'SHARED_VYBE'
   AND reactable_id = $3 RETURNING true
"""
_BUMP = "UPDATE shared_vybes SET reaction_count = reaction_count + $2 WHERE id = $1"
_TRIGGERS = ("reactions_counters_ins", "reactions_counters_del")

Op = Callable[[str, str, bool], Awaitable[None]]


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _drive(users: int, seconds: float, op: Op) -> dict[str, object]:
    """Each user toggles random reaction types for ``seconds``; latency per committed op."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def user(i: int) -> None:
        nonlocal errors
        uid = f"u{i}"
        rng = random.Random(i)
        held: set[str] = set()
        while time.perf_counter() < stop:
            rtype = rng.choice(TYPES)
            add = rtype not in held
            t0 = time.perf_counter()
            try:
                await op(uid, rtype, add)
            except WriteError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)
            held.symmetric_difference_update({rtype})

    t0 = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(users)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "ops": len(latencies), "errors": errors, "elapsed_s": round(elapsed, 2),
        "ops_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
    }


async def _reset(pool: asyncpg.Pool, vybe_id: object) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("TRUNCATE reactions")  # fires no delete trigger: counters are zeroed below
        await conn.execute("UPDATE shared_vybes SET reaction_count = 0 WHERE id = $1", vybe_id)
        await conn.execute("UPDATE user_profiles SET positive_reactions = 0")


async def _exact(pool: asyncpg.Pool, vybe_id: object, full: bool) -> bool:
    stored, rows = await pool.fetchrow(
        "SELECT reaction_count, (SELECT count(*) FROM reactions WHERE reactable_id = $1)"
        " FROM shared_vybes WHERE id = $1",
        vybe_id)
    return stored == rows and (not full or await check_counters(pool) == [])


async def _ours(pool: asyncpg.Pool, vybe_id: object, args: argparse.Namespace) -> dict[str, object]:
    """The writer as a gateway runs it: with --outbox (the default) every batch writes its
    events to the outbox and a relay publishes them to Redis and deletes them."""
    redis = aioredis.Redis.from_url(args.redis_url) if args.outbox else None
    relay = None
    tasks: list[asyncio.Task[None]] = []
    if redis is not None:
        relay = Relay(pool, Publisher(redis, f"bench{secrets.token_hex(3)}:").publish_rows)
        tasks = [asyncio.create_task(relay.run_fast_path()), asyncio.create_task(relay.run_deleter())]
    events = reactions_changed if relay is not None else None
    on_commit = relay.submit if relay is not None else None
    try:
        async with ReactionWriter(pool, batch_ms=args.batch_ms, batch_max=args.batch_max, events=events,
                                  on_commit=on_commit) as writer:
            async def op(uid: str, rtype: str, add: bool) -> None:
                call = writer.react if add else writer.unreact
                await call(uid, target_type="SHARED_VYBE", target_id=vybe_id, reaction_type=rtype)

            result = await _drive(args.users, args.seconds, op)
            result["batches"] = writer.batches
            result["avg_batch"] = round(int(result["ops"]) / max(writer.batches, 1), 1)  # type: ignore[call-overload]
    finally:
        for task in tasks:
            await cancel_and_wait(task)
        if relay is not None:
            await relay.flush()
            result["outbox_rows_published"] = relay.published
            result["outbox_rows_left"] = await pool.fetchval("SELECT count(*) FROM outbox")
        if redis is not None:
            keys = [k async for k in redis.scan_iter(match=b"bench*", count=1000)]
            if keys:
                await redis.delete(*keys)
            await redis.aclose()
    result["counters_exact"] = await _exact(pool, vybe_id, full=True)
    return result


async def _naive(pool: asyncpg.Pool, vybe_id: object, args: argparse.Namespace) -> dict[str, object]:
    async def op(uid: str, rtype: str, add: bool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            done = await conn.fetchval(_NAIVE_INSERT if add else _NAIVE_DELETE, uid, rtype, vybe_id)
            if done:
                await conn.execute(_BUMP, vybe_id, 1 if add else -1)

    async with pool.acquire() as conn:
        for trigger in _TRIGGERS:
            await conn.execute(f"ALTER TABLE reactions DISABLE TRIGGER {trigger}")
    try:
        result = await _drive(args.users, args.seconds, op)
        result["counters_exact"] = await _exact(pool, vybe_id, full=False)
    finally:
        async with pool.acquire() as conn:
            for trigger in _TRIGGERS:
                await conn.execute(f"ALTER TABLE reactions ENABLE TRIGGER {trigger}")
    return result


async def _setup(dsn: str, users: int) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO users (id) SELECT 'u' || g FROM generate_series(0, $1 - 1) g", users)
            await conn.execute("INSERT INTO user_profiles (user_id) SELECT 'u' || g FROM generate_series(0, $1 - 1) g",
                               users)
        await upsert_user(pool, "author", "CREATOR")
        return (await post_vybe(pool, "author", content="a very popular vybe")).id
    finally:
        await pool.close()


async def _phases(dsn: str, vybe_id: object, args: argparse.Namespace, report: dict[str, object]) -> None:
    pool = await create_pool(dsn, min_size=args.pool, max_size=args.pool)
    try:
        for label, fk in [("", False)] + ([("_with_fk", True)] if args.fk_variant else []):
            if fk:
                await pool.execute("ALTER TABLE reactions ADD CONSTRAINT reactions_hot_fk FOREIGN KEY (reactable_id)"
                                   " REFERENCES shared_vybes (id) ON DELETE CASCADE")
            await _reset(pool, vybe_id)
            ours = await _ours(pool, vybe_id, args)
            await _reset(pool, vybe_id)
            naive = await _naive(pool, vybe_id, args)
            report["ours" + label] = ours
            report["naive" + label] = naive
            report["ratio" + label] = round(float(ours["ops_per_s"]) / max(float(naive["ops_per_s"]), 1e-9), 1)  # type: ignore[arg-type]
            if fk:
                await pool.execute("ALTER TABLE reactions DROP CONSTRAINT reactions_hot_fk")
    finally:
        await pool.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    name = f"vybe_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(args.dsn, name)
    report: dict[str, object] = {
        "users": args.users, "seconds_per_phase": args.seconds, "pool_size": args.pool,
        "batch_ms": args.batch_ms, "batch_max": args.batch_max, "loop": args.loop, "outbox": args.outbox,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        vybe_id = await _setup(dsn, args.users)
        server = await asyncpg.connect(dsn)
        report["postgres"] = (await server.fetchval("SHOW server_version"))
        await server.close()
        await _phases(dsn, vybe_id, args, report)
    finally:
        admin = await asyncpg.connect(args.dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    report["counters_exact"] = all(
        bool(v["counters_exact"]) for k, v in report.items() if isinstance(v, dict) and "counters_exact" in v)
    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    default_dsn = os.environ.get("VYBE_BENCH_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=20.0, help="per phase")
    p.add_argument("--dsn", default=default_dsn, help="server to create the bench database on")
    p.add_argument("--pool", type=int, default=20, help="connections, the same for every phase")
    p.add_argument("--batch-ms", type=float, default=2.0)
    p.add_argument("--batch-max", type=int, default=500)
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                   help="event loop for both phases (the gateway runs on uvloop; asyncio if it is missing)")
    p.add_argument("--outbox", action=argparse.BooleanOptionalAction, default=True,
                   help="ours writes each batch's events to the outbox and publishes them to Redis, as a gateway does")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--fk-variant", action=argparse.BooleanOptionalAction, default=True,
                   help="also run both phases with an FK from reactions to the hot row")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.loop == "uvloop":
        try:
            import uvloop  # optional, as in the gateway
        except ImportError:
            args.loop = "asyncio"
        else:
            return uvloop.run(main(args))
    return asyncio.run(main(args))


if __name__ == "__main__":
    print(json.dumps(run(parse()), indent=2))

"""Fixtures of the fault suite: each test owns a fresh Redis and PostgreSQL (processes
started for it on free ports, in a temp dir) and starts gateways and workers against them.

Both start in well under a second (initdb -N on a small cluster), so every test gets
its own; nothing else on the machine is touched. When a test fails, the tails of its
process logs are printed and its temp dir (every log) is kept.

Every test here is ``slow``: ``python -m pytest -m slow tests/faults -x -s`` (``-s`` shows the
one-line JSON figures each scenario prints: recovery seconds, answers by code, gaps).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from common.settings import load_settings
from db.migrate import migrate
from gateway.auth import mint_token
from load import Client, Load, Writer
from services import PostgresProc, Proc, RedisClusterProc, RedisProc, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Generator, Iterator

JWT_SECRET = "fault-suite-secret-" + "x" * 32


class Rig:
    """One test's system: its Redis, its PostgreSQL, a database, a key prefix, and the processes it started."""

    def __init__(self, tmp: Path, redis: RedisProc | RedisClusterProc, pg: PostgresProc, database: str) -> None:
        self.tmp, self.redis, self.pg = tmp, redis, pg
        self.dsn = pg.dsn_for(database)
        self.prefix = f"vf{secrets.token_hex(3)}:"
        self.gateways: list[Proc] = []
        self.workers: list[Proc] = []
        self.clients: list[Client] = []
        self._settings = load_settings({}, jwt_secret=JWT_SECRET)
        self.extra_env: dict[str, str] = {}
        """Settings every process of this rig gets."""

    def env(self, **more: str) -> dict[str, str]:
        # Our settings only; and no tracemalloc in children (it slows them tenfold when a debugging run sets it).
        env = {k: v for k, v in os.environ.items() if not k.startswith("VYBE_") and k != "PYTHONTRACEMALLOC"}
        env["VYBE_PROCESSES"] = "1"  # the faults are per node process
        env.update(VYBE_DATABASE_URL=self.dsn, VYBE_REDIS_URL=self.redis.url, VYBE_REDIS_PREFIX=self.prefix,
                   VYBE_JWT_SECRET=JWT_SECRET, VYBE_SCORER="light", VYBE_MODERATION_MODE="flag", VYBE_LOG_LEVEL="INFO",
                   VYBE_DB_POOL_MIN="1", VYBE_DB_POOL_MAX="8")
        env.update(self.extra_env)
        env.update(more)
        return env

    async def add_gateway(self, *, wait: bool = True, **env: str) -> Proc:
        """Start ``vybe gateway`` on a free port (``env``: extra VYBE_* settings); wait for /readyz 200."""
        name, port = f"gw{len(self.gateways)}", free_port()
        gw = Proc(name, "gateway", self.env(VYBE_PORT=str(port), VYBE_NODE_ID=name, **env),
                  self.tmp / f"{name}.log", port).start()
        self.gateways.append(gw)
        if wait:
            await gw.wait_ready()
        return gw

    async def start(self, gateways: int = 2, workers: int = 1, **env: str) -> list[Proc]:
        """Start ``gateways`` (concurrently, then wait for each to be ready) and ``workers``."""
        started = [await self.add_gateway(wait=False, **env) for _ in range(gateways)]
        for _ in range(workers):
            self.add_worker(**env)
        await asyncio.gather(*(g.wait_ready() for g in started))
        return started

    def add_worker(self, script: Path | None = None, **env: str) -> Proc:
        """Start ``vybe worker`` (light scorer), or ``python SCRIPT`` (a worker with a test's own model)."""
        name = f"worker{len(self.workers)}"
        worker = Proc(name, "worker", self.env(**env), self.tmp / f"{name}.log", script=script).start()
        self.workers.append(worker)
        return worker

    def token(self, user: str, role: str = "MEMBER") -> str:
        return str(mint_token(self._settings, user, role=role, ttl_s=3600))

    async def client(self, user: str, *gateways: Proc, role: str = "MEMBER") -> Client:
        """A connected, authenticated client of the first gateway (the others: where it reconnects in turn)."""
        client = await Client(user, [g.ws for g in gateways], self.token(user, role)).start()
        self.clients.append(client)
        return client

    async def load(self, readers: int = 4, writers: int = 3, pause_s: float = 0.1) -> Load:
        """A seed vybe, ``readers`` on ``feed`` + ``vybe:{seed}`` and ``writers``, alternating over the gateways."""
        gws = self.gateways
        seeder = await self.client("seeder", gws[0])
        seed = (await seeder.ok("post_vybe", content="the seed vybe"))["id"]
        reader_clients = []
        for i in range(readers):
            c = await self.client(f"reader{i}", *_rotate(gws, i))
            await c.subscribe("feed")
            await c.subscribe(f"vybe:{seed}")
            reader_clients.append(c)
        writer_list = [Writer(await self.client(f"writer{i}", *_rotate(gws, i)), seed, pause_s)
                       for i in range(writers)]
        return Load(reader_clients, writer_list, seed)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    def logs(self) -> str:
        """Every process log concatenated (for greps such as DeadlockDetected)."""
        return "\n".join(p.log_text() for p in self.gateways + self.workers)

    async def teardown(self) -> None:
        for c in self.clients:
            await c.close()
        procs = self.gateways + self.workers
        await asyncio.gather(*(asyncio.to_thread(p.terminate, 10.0) for p in procs))


def _rotate(items: list[Proc], start: int) -> list[Proc]:
    start %= len(items)
    return items[start:] + items[:start]


@pytest.fixture
def fault_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A temp dir the unprivileged PostgreSQL user can reach (pytest's tmp_path is root-only);
    kept, with every log in it, when the test fails."""
    path = Path(tempfile.mkdtemp(prefix="vybe-faults-"))
    path.chmod(0o755)
    yield path
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\nlogs of {request.node.name} kept in {path}", file=sys.stderr)
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_proc(fault_dir: Path) -> Iterator[RedisProc]:
    proc = RedisProc(fault_dir / "redis")
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture
def pg_proc(fault_dir: Path) -> Iterator[PostgresProc]:
    proc = PostgresProc(fault_dir / "pg")
    proc.start()
    yield proc
    proc.stop("immediate")


@pytest.fixture
def redis_cluster(fault_dir: Path) -> Iterator[RedisClusterProc]:
    """Three masters and three replicas (this test's own)."""
    cluster = RedisClusterProc(fault_dir / "rcluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


@pytest.fixture
async def rig(request: pytest.FixtureRequest, fault_dir: Path, redis_proc: RedisProc,
              pg_proc: PostgresProc) -> AsyncIterator[Rig]:
    """A fresh migrated database and key prefix on this test's own services; processes stopped after."""
    async for rig in _rig(request, fault_dir, redis_proc, pg_proc):
        yield rig


@pytest.fixture
async def cluster_rig(request: pytest.FixtureRequest, fault_dir: Path, redis_cluster: RedisClusterProc,
                      pg_proc: PostgresProc) -> AsyncIterator[Rig]:
    """As ``rig``, on a Redis Cluster: every process finds out from VYBE_REDIS_URL (any node of it)."""
    async for rig in _rig(request, fault_dir, redis_cluster, pg_proc):
        rig.extra_env["VYBE_SWEEP_AFTER_S"] = "5"  # a job lost with a master is re-enqueued soon
        yield rig


async def _rig(request: pytest.FixtureRequest, fault_dir: Path, redis: RedisProc | RedisClusterProc,
               pg_proc: PostgresProc) -> AsyncIterator[Rig]:
    pg_proc.create_database("vybe_faults")
    rig = Rig(fault_dir, redis, pg_proc, "vybe_faults")
    conn = await asyncpg.connect(rig.dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        yield rig
    finally:
        await rig.teardown()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            for p in rig.gateways + rig.workers:
                print(f"\n--- {p.name} (exit {p.returncode}) {p.log} ---\n{p.tail(20)}", file=sys.stderr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep each phase's report on the item, so the ``rig`` teardown knows whether the test failed."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report

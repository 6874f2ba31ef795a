"""PostgreSQL behind PgBouncer in transaction mode (the Debian package, started here).

Each transaction may run on another server connection, so nothing may outlive one: no
statement prepared by name (asyncpg's cache), no session advisory lock. With
``VYBE_DATABASE_POOLER=pgbouncer`` the write path, group commit, the outbox relay, the
worker's sweep and the migrations run through it; without the setting the same pool fails.
PgBouncer here has 4 server connections, fewer than one pool's 10 clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
import msgspec
import pytest

from common.bus import Keys, Publisher, event
from db import outbox, writes
from db.counters import check_counters
from db.migrate import discover, migrate
from db.pool import connect, create_pool, try_advisory_lock
from moderation.policy import Policy
from moderation.scorers import load_scorer
from workers.consumer import SWEEP_LOCK, Worker

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import redis.asyncio as aioredis

    from common.settings import Settings


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.path.exists(p)), None)


pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed (apt-get install -y pgbouncer)"),
]

SERVER_CONNECTIONS = 4
"""PgBouncer's default_pool_size here: every pool below has more clients than this."""
STATEMENT_TRAP = r'prepared statement "__asyncpg_stmt_\w+__" (does not exist|already exists)'
ADVISORY_LOCKS = """SELECT pid FROM pg_locks WHERE locktype = 'advisory'
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
"""Advisory locks held in this test's database (other test runs may share the server)."""
NEVER = ",".join(f"{label}=1" for label in ("toxicity", "severe_toxicity", "obscene", "threat", "insult",
                                            "identity_attack", "sexual_explicit"))


class Bouncer(NamedTuple):
    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server(dsn: str) -> tuple[str, int, str, str | None]:
    """(host or socket directory, port, user, password) of a libpq URL."""
    parts = urlsplit(dsn)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = parts.hostname or query.get("host") or "/var/run/postgresql"
    port = parts.port or int(query.get("port", 5432))
    user = unquote(parts.username or query.get("user") or "postgres")
    password = unquote(parts.password) if parts.password else query.get("password")
    return host, port, user, password


def _os_user(host: str) -> str | None:
    """PgBouncer refuses to run as root: the user to switch to (the socket directory's owner, to reach it)."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def _listening(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def bouncer(database_url: str) -> Iterator[Bouncer]:
    """PgBouncer in transaction mode on a free port, every database name forwarded to the test server."""
    binary = pgbouncer_binary()
    assert binary is not None
    host, pg_port, user, password = _server(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="vybe-pgbouncer-"))
    workdir.chmod(0o755)  # readable after PgBouncer switches from root to another user
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    server = f"host={host} port={pg_port} user={user}" + (f" password={password}" if password else "")
    log = workdir / "pgbouncer.log"
    for _attempt in range(3):
        port = _free_port()
        (workdir / "pgbouncer.ini").write_text(f"""\
[databases]
* = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = {SERVER_CONNECTIONS}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
server_round_robin = 0
log_connections = 0
log_disconnections = 0
""")
        for f in workdir.iterdir():
            f.chmod(0o644)
        os_user = _os_user(host)
        argv = [binary, *(["-u", os_user] if os_user else []), str(workdir / "pgbouncer.ini")]
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if _listening(proc, port):
            break
        proc.kill()  # lost the port to another process, or stuck: try another
        proc.wait()
    else:
        pytest.fail(f"pgbouncer did not start: {log.read_text(errors='replace')[-2000:]}")
    try:
        yield Bouncer(port, user)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def pooled(settings: Settings, bouncer: Bouncer, database_url: str) -> Settings:
    """The test settings with VYBE_DATABASE_URL at PgBouncer and VYBE_DATABASE_POOLER=pgbouncer."""
    return msgspec.structs.replace(settings, database_url=bouncer.url(urlsplit(database_url).path.lstrip("/")),
                                   database_pooler="pgbouncer")


async def _gateway_pool(s: Settings) -> asyncpg.Pool:
    """The pool the way the gateway makes it (gateway/context.py), with the pooler setting."""
    assert s.database_url is not None
    return await create_pool(s.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max,
                             pooler=s.database_pooler)


async def _interleaved(pool: asyncpg.Pool) -> None:
    """Two clients whose transactions land on different server connections: one holds a transaction
    while the other queries, then the other queries again on the connection just freed (PgBouncer
    hands out the most recently freed one)."""
    query = "SELECT count(*) FROM users WHERE id <> $1"
    async with pool.acquire() as a, pool.acquire() as b:
        await b.fetchval(query, "x")
        async with a.transaction():
            await a.fetchval("SELECT 1")
            await b.fetchval(query, "x")
        await b.fetchval(query, "x")


async def test_without_the_setting_named_statements_break(pooled: Settings) -> None:
    """The trap: the gateway's pool through PgBouncer without the setting fails on its cached
    statements; with it the same clients pass."""
    plain = msgspec.structs.replace(pooled, database_pooler="none")
    with pytest.raises(asyncpg.PostgresError, match=STATEMENT_TRAP):  # either step may meet it first
        pool = await _gateway_pool(plain)
        try:
            for _ in range(3):
                await _interleaved(pool)
        finally:
            await pool.close()
    pool = await _gateway_pool(pooled)
    try:
        for _ in range(3):
            await _interleaved(pool)
    finally:
        await pool.close()


async def test_a_session_lock_through_the_pooler_outlives_its_unlock(pooled: Settings, pool: asyncpg.Pool) -> None:
    """Why every advisory lock here is transaction-scoped: a session lock stays on the server
    connection that took it, and the unlock runs on another one and releases nothing."""
    key = 7354999  # used by nothing else
    through = await _gateway_pool(pooled)
    try:
        async with through.acquire() as a, through.acquire() as b:
            assert await a.fetchval("SELECT pg_try_advisory_lock($1)", key)
            async with b.transaction():
                await b.fetchval("SELECT 1")  # b's transaction holds the server connection that took the lock
                unlocked = await a.fetchval("SELECT pg_advisory_unlock($1)", key)
        holders = await pool.fetch(f"{ADVISORY_LOCKS} AND objid = $1", key)
        assert (unlocked, len(holders)) == (False, 1)
        # Only that server connection can release it: pin each one in turn until the holder answers.
        async with contextlib.AsyncExitStack() as pinned:
            for _ in range(SERVER_CONNECTIONS):
                conn = await pinned.enter_async_context(through.acquire())
                await pinned.enter_async_context(conn.transaction())
                if await conn.fetchval("SELECT pg_backend_pid()") == holders[0]["pid"]:
                    assert await conn.fetchval("SELECT pg_advisory_unlock($1)", key)
                    break
            else:
                pytest.fail("the lock's server connection was not found among PgBouncer's")
        assert await pool.fetchval(f"SELECT count(*) FROM ({ADVISORY_LOCKS}) held") == 0
        # The transaction-scoped form: released by COMMIT on the connection that took it.
        async with try_advisory_lock(through, key) as held:
            assert held is not None
            async with try_advisory_lock(through, key) as other:
                assert other is None
        async with try_advisory_lock(through, key) as again:
            assert again is not None
    finally:
        await through.close()


async def test_write_path_multiplexed_on_few_server_connections(pooled: Settings, pool: asyncpg.Pool) -> None:
    """Posts (idempotent: jsonb results), comments and reactions through PgBouncer, 10 clients at once
    on 4 server connections; every counter exact."""
    through = await _gateway_pool(pooled)
    try:
        for uid in ("ann", "bob", "cat"):
            await writes.upsert_user(through, uid, "MEMBER", f"name of {uid}")
        first = await writes.post_vybe(through, "ann", content="hello through pgbouncer", request_id="r-1")
        again = await writes.post_vybe(through, "ann", content="hello through pgbouncer", request_id="r-1")
        assert (again.id, again.replayed, first.replayed) == (first.id, True, False)
        posts = await asyncio.gather(*(writes.post_vybe(through, ("ann", "bob", "cat")[n % 3], content=f"v{n}",
                                                        request_id=f"p-{n}") for n in range(30)))
        comments = await asyncio.gather(*(writes.comment(through, ("bob", "cat")[n % 2], vybe_id=first.id,
                                                         content=f"c{n}") for n in range(20)))
        reactions = await asyncio.gather(*(
            writes.react(through, uid, target_type="SHARED_VYBE", target_id=v.id, reaction_type=kind)
            for v in posts[:10] for uid in ("ann", "bob") for kind in ("HEART", "FIRE")))
        gone = await writes.unreact(through, "bob", target_type="SHARED_VYBE", target_id=posts[0].id,
                                    reaction_type="FIRE")
        assert all(r.applied for r in reactions) and gone.applied
        assert max(c.comment_count for c in comments) == 20

        async def backend() -> int:
            async with through.acquire() as conn, conn.transaction():
                return int(await conn.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))

        backends = await asyncio.gather(*(backend() for _ in range(3 * pooled.db_pool_max)))
        assert through.get_size() == pooled.db_pool_max
        assert len(set(backends)) <= SERVER_CONNECTIONS  # 10 client connections on at most 4 server ones
    finally:
        await through.close()
    assert await pool.fetchval("SELECT count(*) FROM shared_vybes") == 31
    assert await pool.fetchval("SELECT comment_count FROM shared_vybes WHERE id = $1", first.id) == 20
    assert await pool.fetchval("SELECT reaction_count FROM shared_vybes WHERE id = $1", posts[0].id) == 3
    assert await pool.fetchval("SELECT sum(reaction_count) FROM shared_vybes") == 39
    assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 31
    assert await check_counters(pool) == []


async def test_group_commit_exact_counters(pooled: Settings, pool: asyncpg.Pool) -> None:
    """ReactionWriter through PgBouncer: 300 concurrent reactions in a few transactions, counters exact."""
    through = await _gateway_pool(pooled)
    try:
        await writes.sync_users(through, [writes.Seen(f"u{n}", "MEMBER", None) for n in range(100)])
        await writes.upsert_user(through, "author", "CREATOR")
        vybes = [await writes.post_vybe(through, "author", content=f"hot {n}") for n in range(3)]
        async with writes.ReactionWriter(through, batch_ms=5.0) as writer:
            added = await asyncio.gather(*(
                writer.react(f"u{n}", target_type="SHARED_VYBE", target_id=v.id, reaction_type="HEART")
                for n in range(100) for v in vybes))
            removed = await asyncio.gather(*(
                writer.unreact(f"u{n}", target_type="SHARED_VYBE", target_id=vybes[0].id, reaction_type="HEART")
                for n in range(0, 100, 4)))
            assert all(r.applied for r in added) and all(r.applied for r in removed)
            assert writer.batches < len(added) // 10  # grouped, not one transaction per reaction
    finally:
        await through.close()
    counts = [await pool.fetchval("SELECT reaction_count FROM shared_vybes WHERE id = $1", v.id) for v in vybes]
    assert counts == [75, 100, 100]
    assert await pool.fetchval("SELECT count(*) FROM reactions") == 275
    assert await pool.fetchval("SELECT positive_reactions FROM user_profiles WHERE user_id = 'author'") == 275
    assert await check_counters(pool) == []


async def test_outbox_relay_publishes_once_and_two_relays_take_turns(
        pooled: Settings, pool: asyncpg.Pool, redis: aioredis.Redis, redis_prefix: str) -> None:
    """Rows written through PgBouncer are published in order, once; while one relay's pass holds the
    lock (its transaction), another relay's pass does nothing; then it finds the rows done."""
    first, second = await _gateway_pool(pooled), await _gateway_pool(pooled)  # two processes
    try:
        for n in range(25):
            async with first.acquire() as conn, conn.transaction():
                await outbox.write(conn, [event("feed", "test.seq", {"n": n}), event(f"vybe:{n % 3}", "t", {"n": n})])
        pub = Publisher(redis, redis_prefix)
        entered, release = asyncio.Event(), asyncio.Event()

        async def gated(rows: Sequence[outbox.Row], starts: Sequence[bool]) -> list[str]:
            entered.set()
            await release.wait()
            return await pub.publish_rows(rows, starts)

        a = outbox.Relay(first, gated, batch=20)
        b = outbox.Relay(second, pub.publish_rows, batch=20)
        task = asyncio.create_task(a.catch_up(0.0))
        try:
            await asyncio.wait_for(entered.wait(), 5)
            meanwhile = await b.catch_up(0.0)
        finally:
            release.set()
        assert (meanwhile, await task) == (0, 50)  # a's pass held the lock over three batches (transactions)
        assert await b.catch_up(0.0) == 10  # the last batch, not yet deleted by a: found done
        await a.flush()
        await b.flush()
    finally:
        await first.close()
        await second.close()
    entries = await redis.xrange(Keys(redis_prefix).stream("feed"))
    assert [int(f[b"m"].split(b'"n":')[1].split(b"}")[0]) for _, f in entries] == list(range(25))
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0
    for n, events in enumerate((9, 8, 8)):
        assert await redis.xlen(Keys(redis_prefix).stream(f"vybe:{n}")) == events


async def test_worker_sweep_through_the_pooler(pooled: Settings, pool: asyncpg.Pool, redis: aioredis.Redis,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper's lock holds across PgBouncer: contended, it does nothing; free, it enqueues the
    unscored vybe (and leaves no lock behind, though another transaction took the server connection
    meanwhile), which the worker scores through PgBouncer."""
    s = msgspec.structs.replace(pooled, sweep_after_s=0.0, worker_block_ms=10)
    # As workers/main.py makes its pool.
    through = await create_pool(s.database_url or "", min_size=1, max_size=4, pooler=s.database_pooler)
    try:
        w = Worker(s, through, redis, load_scorer("light"), Policy.from_settings("flag", NEVER), "w-pgbouncer")
        await w.ensure_group()
        await writes.upsert_user(through, "ghost", "MEMBER")
        vybe = await writes.post_vybe(through, "ghost", content="committed, never enqueued")
        async with try_advisory_lock(through, SWEEP_LOCK) as held:
            assert held is not None
            assert await w.sweep() == 0  # another sweeper holds it
        async with through.acquire() as other:
            # While the sweeper enqueues, another client's transaction takes the server connection
            # freed last: a session lock's unlock would run elsewhere and leave the lock held.
            enqueue, busy = redis.xadd, other.transaction()

            async def xadd(*args: Any, **kwargs: Any) -> Any:
                if not other.is_in_transaction():
                    await busy.start()
                    await other.execute("SELECT 1")
                return await enqueue(*args, **kwargs)

            monkeypatch.setattr(redis, "xadd", xadd)
            try:
                assert await w.sweep() == 1
            finally:
                monkeypatch.undo()
                if other.is_in_transaction():
                    await busy.commit()
        assert await pool.fetchval(f"SELECT count(*) FROM ({ADVISORY_LOCKS}) held") == 0
        jobs = await redis.xrange(w.keys.jobs)
        assert [f[b"id"] for _, f in jobs] == [str(vybe.id).encode()]
        assert await w.step() == 1
        assert await pool.fetchval("SELECT moderation_state::text FROM shared_vybes") == "approved"
        assert await w.sweep() == 0
        assert await w.rescore() == 0 and not w.rescore_pending  # its lock taken, nothing to rescore
    finally:
        await through.close()


async def test_migrations_through_the_pooler(services: tuple[str, str], bouncer: Bouncer) -> None:
    """`vybe migrate` through PgBouncer, twice at once: each version applied once (the lock is
    transaction-scoped, one transaction per migration)."""
    admin = services[0]
    name = f"vybe_pgb_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        a = await connect(bouncer.url(name), pooler="pgbouncer")
        b = await connect(bouncer.url(name), pooler="pgbouncer")
        try:
            # Bounded: with session locks this hangs (the lock is left on a server connection).
            results = await asyncio.wait_for(asyncio.gather(migrate(a), migrate(b)), 30)
            assert sorted(results[0] + results[1]) == [m.version for m in discover()]
            assert await migrate(a) == []
            assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())
        finally:
            await a.close()
            await b.close()
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


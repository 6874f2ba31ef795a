"""Migrations: ordered, recorded, idempotent, concurrent-safe, refuse a newer database."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from db.migrate import Migration, MigrationError, discover, migrate
from db.startup import NotReady, wait_until_ready

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.anyio


@pytest.fixture
async def empty_db(services: tuple[str, str]) -> AsyncIterator[str]:
    """A brand-new empty database, dropped afterwards."""
    admin = services[0]
    name = f"vybe_mig_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield urlunsplit(urlsplit(admin)._replace(path="/" + name))
    conn = await asyncpg.connect(admin)
    await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await conn.close()


async def test_applies_all_in_order_and_twice_changes_nothing(empty_db: str) -> None:
    """A second run applies nothing and leaves the recorded history as it was."""
    conn = await asyncpg.connect(empty_db)
    try:
        first = await migrate(conn)
        assert first == [m.version for m in discover()]
        history = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY 1")
        assert await migrate(conn) == []
        assert await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY 1") == history
    finally:
        await conn.close()


async def test_two_nodes_at_once_each_migration_applied_once(empty_db: str) -> None:
    """Two concurrent migrators both succeed; the advisory lock makes each version apply once."""
    a, b = await asyncpg.connect(empty_db), await asyncpg.connect(empty_db)
    try:
        results = await asyncio.gather(migrate(a), migrate(b))
        applied = sorted(results[0] + results[1])
        assert applied == [m.version for m in discover()]
        assert await a.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
    finally:
        await a.close()
        await b.close()


async def test_two_cli_processes_at_once(empty_db: str) -> None:
    """`vybe migrate` started twice at the same moment: both exit 0."""
    env = {**os.environ, "VYBE_DATABASE_URL": empty_db}
    cmd = [sys.executable, "-m", "cli", "migrate"]
    procs = [await asyncio.create_subprocess_exec(*cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=60)
    assert [p.returncode for p in procs] == [0, 0], outs
    conn = await asyncpg.connect(empty_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(discover())
    finally:
        await conn.close()


async def test_database_ahead_of_code_is_refused(empty_db: str) -> None:
    """A database migrated by newer code is refused with a message saying so."""
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
        newer = [*discover(), Migration(len(discover()) + 1, "future", "SELECT 1")]
        await migrate(conn, newer)
        with pytest.raises(MigrationError, match=r"database is at migration .* only up to"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_edited_migration_is_refused(empty_db: str) -> None:
    """Changing an applied migration's SQL is refused: migrations are forward-only."""
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in discover()]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_entirely(empty_db: str) -> None:
    """A migration that fails half-way leaves neither its tables nor a history row."""
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
        bad = Migration(len(discover()) + 1, "bad", "CREATE TABLE half (id int); SELECT 1/0;")
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, [*discover(), bad])
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == len(discover())
    finally:
        await conn.close()


def test_discover_refuses_gaps(tmp_path: Path) -> None:
    """A missing number in the sequence is an error, not a silent skip."""
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="0002 is missing"):
        discover(tmp_path)


async def test_a_process_start_waits_for_the_migration(empty_db: str) -> None:
    """A gateway or worker starting against a database nobody migrated yet waits (logging why) and goes on as soon
    as `vybe migrate` has run, instead of running on without its tables."""
    waiting = asyncio.create_task(wait_until_ready(empty_db, 30.0))
    await asyncio.sleep(1.5)
    assert not waiting.done(), "it went on without the schema"
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    assert await asyncio.wait_for(waiting, 10) == discover()[-1].version


async def test_a_process_start_gives_up_after_the_wait_with_the_reason(free_tcp_port: int) -> None:
    """Nothing answers: NotReady after VYBE_STARTUP_WAIT_S (not at once, not never), saying what it waited for."""
    started = time.monotonic()
    with pytest.raises(NotReady, match=r"does not answer .*gave up after 1.5 s \(VYBE_STARTUP_WAIT_S\)"):
        await wait_until_ready(f"postgresql://postgres@127.0.0.1:{free_tcp_port}/postgres", 1.5)
    assert 1.5 <= time.monotonic() - started < 5


async def test_a_process_start_does_not_wait_for_what_waiting_cannot_fix(services: tuple[str, str]) -> None:
    """No such database (or a refused password): NotReady at once, with PostgreSQL's reason."""
    missing = urlunsplit(urlsplit(services[0])._replace(path="/vybe_no_such_database"))
    started = time.monotonic()
    with pytest.raises(NotReady, match="does not exist"):
        await wait_until_ready(missing, 30.0)
    assert time.monotonic() - started < 5


async def test_a_process_start_refuses_a_malformed_url_or_a_changed_migration_at_once(empty_db: str) -> None:
    """What waiting cannot fix ends the wait at once: a malformed URL, a migration changed after it was applied."""
    started = time.monotonic()
    with pytest.raises(NotReady, match="cannot connect"):
        await wait_until_ready("postgresql://postgres@127.0.0.1:notaport/postgres", 30.0)
    conn = await asyncpg.connect(empty_db)
    try:
        await migrate(conn)
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    finally:
        await conn.close()
    with pytest.raises(NotReady, match="was changed after it was applied"):
        await wait_until_ready(empty_db, 30.0)
    assert time.monotonic() - started < 5


def test_a_waiting_worker_stops_on_sigterm(free_tcp_port: int) -> None:
    """SIGTERM while `vybe worker` waits for PostgreSQL: it exits at once (143), not after the wait; in a container it
    is PID 1, which SIGTERM does not stop without a handler."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VYBE_")},
           "VYBE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_tcp_port}/postgres",
           "VYBE_REDIS_URL": "redis://127.0.0.1:1/0", "VYBE_SCORER": "light", "VYBE_STARTUP_WAIT_S": "60"}
    with subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env, stderr=subprocess.PIPE, text=True) as proc:
        try:
            deadline = time.monotonic() + 30
            assert proc.stderr is not None
            while "waiting for the database" not in proc.stderr.readline():  # it is waiting
                assert time.monotonic() < deadline and proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 143
        finally:
            proc.kill()

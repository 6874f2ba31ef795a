"""Real PostgreSQL and Redis for every test.

``VYBE_TEST_DATABASE_URL`` / ``VYBE_TEST_REDIS_URL`` name servers to use (CI runs
once with this machine's services); unset, an embedded PostgreSQL 16 and Redis
6.2 are started once per session. Each session gets a fresh database and a
unique Redis key prefix; each test starts from empty tables and no keys.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from common.labels import LABELS, SIGNALS
from common.settings import Settings, load_settings
from db.embedded import EmbeddedUnavailable, embedded_postgres, embedded_redis, require
from db.migrate import migrate
from db.pool import create_pool

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

# Tables a test may write; everything else (enums, schema_migrations, the system
# moderation account) is schema and stays.
_KEEP_USERS = "'system:moderation'"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def services() -> Iterator[tuple[str, str]]:
    """(admin DSN, Redis URL) of real servers, embedded when none are configured."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vybe-test-")))
        dsn, url = os.environ.get("VYBE_TEST_DATABASE_URL"), os.environ.get("VYBE_TEST_REDIS_URL")
        try:
            require(postgres=not dsn, redis=not url)
        except EmbeddedUnavailable as err:
            # No `dev` extra and no VYBE_TEST_*: one line for the whole run, not a traceback per test.
            pytest.exit(f"{err} (for the tests: VYBE_TEST_DATABASE_URL / VYBE_TEST_REDIS_URL)", returncode=2)
        dsn = dsn or stack.enter_context(embedded_postgres(tmp))
        url = url or stack.enter_context(embedded_redis(tmp))
        yield dsn, url


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def database_url(services: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated database for this session, dropped at the end."""
    admin_dsn, _ = services
    name = f"vybe_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def setup() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(_with_database(admin_dsn, name))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    async def teardown() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(setup())
    yield _with_database(admin_dsn, name)
    asyncio.run(teardown())


@pytest.fixture(scope="session")
def redis_url(services: tuple[str, str]) -> str:
    return services[1]


@pytest.fixture
def redis_prefix() -> str:
    """Every test gets its own key and channel namespace."""
    return f"vt{secrets.token_hex(4)}:"


@pytest.fixture
def settings(database_url: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test services, with a known JWT secret."""
    return load_settings(
        {},
        database_url=database_url,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        data_dir=str(tmp_path),
        jwt_secret="test-secret-" + "x" * 32,
        scorer="light",
    )


async def _truncate(pool: asyncpg.Pool) -> None:
    tables = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
    )
    names = ", ".join(f'"{r["tablename"]}"' for r in tables if r["tablename"] != "users")
    async with pool.acquire() as conn, conn.transaction():
        if names:
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        await conn.execute(f"DELETE FROM users WHERE id NOT IN ({_KEEP_USERS})")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session database, emptied before the test."""
    p = await create_pool(database_url, min_size=1, max_size=20)
    try:
        await _truncate(p)
        yield p
    finally:
        await p.close()


@pytest.fixture
async def redis(redis_url: str, redis_prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client on the session Redis; this test's keys are removed afterwards."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=redis_prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


class KeywordScorer:
    """A deterministic scorer for routing tests (what the worker does with scores, not the model's
    quality): a text containing a key gets that key's scores, every other score is 0.01."""

    name, version, labels = "keyword", "1", LABELS

    def __init__(self, table: dict[str, dict[str, float]]) -> None:
        self.table = table

    def score(self, texts: list[str]) -> list[dict[str, float]]:
        out = []
        for text in texts:
            scores = dict.fromkeys((*LABELS, *SIGNALS), 0.01)
            for key, over in self.table.items():
                if key in text:
                    scores |= over
            out.append(scores)
        return out


@pytest.fixture
def keyword_scorer() -> type[KeywordScorer]:
    """The :class:`KeywordScorer` class: ``keyword_scorer({"key": {"threat": 0.9}})``."""
    return KeywordScorer

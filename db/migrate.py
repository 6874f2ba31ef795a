"""Forward-only SQL migrations, serialized across nodes by a transaction-scoped advisory lock.

Files ``db/migrations/NNNN_name.sql`` are applied in order, each in its own
transaction, and recorded in ``schema_migrations`` with a checksum. Two nodes may
start at once: the second waits on the lock, then finds nothing to do. Migrating
a database that has a version the code does not know is refused (it was migrated
by newer code: older migrations must not run after newer ones). Gateways and
workers of the release before still run against it (``db/startup.py``), as they
do during every rolling update, which migrates first: so a migration keeps the
release before working (it adds; what it replaces is dropped a release later).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import asyncpg

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant unique to this application: pg_advisory_xact_lock takes a bigint.
LOCK_KEY = 0x5659_4245_4D49_47  # "VYBEMIG"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The database and the code disagree about the schema."""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations shipped with the code, in order; gaps and duplicates refused."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} is missing (found {migration.version:04d})")
    return found


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply what is missing; return the versions applied by this call.

    Each migration runs in its own transaction that first takes the migration lock
    (``pg_advisory_xact_lock``: COMMIT releases it) and reads the history again, so
    concurrent migrators apply each version once, and a transaction pooler (PgBouncer in
    transaction mode) is no obstacle: nothing here depends on the session.
    """
    migrations = discover() if migrations is None else migrations
    applied: list[int] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await conn.execute(_CREATE_TABLE)
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            _check_history({r["version"]: (r["name"], r["checksum"]) for r in rows}, migrations)
            done = {r["version"] for r in rows}
            missing = [m for m in migrations if m.version not in done]
            if not missing:
                return applied
            migration = missing[0]
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version, migration.name, migration.checksum,
            )
        applied.append(migration.version)


def _check_history(recorded: dict[int, tuple[str, str]], migrations: list[Migration]) -> None:
    known = {m.version: m for m in migrations}
    ahead = sorted(v for v in recorded if v not in known)
    if ahead:
        raise MigrationError(
            f"the database is at migration {max(recorded):04d} but this code knows only up to "
            f"{max(known, default=0):04d}: deploy newer code, do not run this one against it"
        )
    for version, (name, checksum) in recorded.items():
        if known[version].checksum != checksum:
            raise MigrationError(
                f"migration {version:04d}_{name} was changed after it was applied: "
                "migrations are forward-only, add a new one instead"
            )


async def applied_version(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> int:
    """The highest applied version (0: an empty database), after checking that every applied migration this code
    knows is the one it has (MigrationError: one was changed after it was applied). Versions this code does not know
    are allowed here: a process of the release before runs on while a rolling update migrates for the next one."""
    if not await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        return 0
    known = {m.version: m for m in (discover() if migrations is None else migrations)}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    applied = {r["version"]: (r["name"], r["checksum"]) for r in rows if r["version"] in known}
    _check_history(applied, list(known.values()))
    return max((r["version"] for r in rows), default=0)

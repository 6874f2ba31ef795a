"""A gateway's or a worker's start: wait, for a while, until PostgreSQL answers with this code's schema.

Without it, a process started while PostgreSQL restarts (a deploy that restarts both), or before the migration job
has run (Kubernetes orders no Job before a Deployment), died at once with a traceback, and then stayed dead (compose)
or restarted with a growing back-off (CrashLoopBackOff); a process started against a database nobody migrated ran on,
logging "relation does not exist" for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from common.tasks import backoff
from db.migrate import MigrationError, applied_version, discover
from db.pool import UNREACHABLE, connect

log = logging.getLogger(__name__)


class NotReady(Exception):
    """PostgreSQL did not answer with this code's schema in time, or refused what waiting cannot fix."""


async def wait_until_ready(dsn: str, wait_s: float, *, pooler: str = "none") -> int:
    """Wait up to ``wait_s`` seconds until PostgreSQL at ``dsn`` answers and has every migration of this code applied,
    trying again with back-off (at most 5 s; each try at most 10 s) and logging what it waits for. Returns the schema
    version.

    Raises :class:`NotReady` after ``wait_s``, or at once when waiting cannot help: a refused password, no such
    database, a malformed URL or TLS setting, a certificate that does not verify, a migration changed after it was
    applied. (Through PgBouncer, its own refusals come as protocol errors and are waited for.) A schema ahead of this
    code is logged and accepted (``db/migrate.py``: a rolling update migrates first)."""
    need = discover()[-1].version
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        try:
            have = await asyncio.wait_for(_version(dsn, pooler), max(1.0, min(10.0, deadline - time.monotonic())))
        except (ValueError, FileNotFoundError, PermissionError) as err:  # before UNREACHABLE: TLS errors are OSErrors
            raise NotReady(f"cannot connect to PostgreSQL ({type(err).__name__}: {err})") from err
        except UNREACHABLE as err:
            reason = f"PostgreSQL does not answer ({type(err).__name__}: {err})"
        except MigrationError as err:
            raise NotReady(str(err)) from err
        except asyncpg.PostgresError as err:
            raise NotReady(f"PostgreSQL refused the connection ({type(err).__name__}: {err})") from err
        else:
            if have > need:
                log.warning("the database is at migration %04d, ahead of this code's %04d (a rolling update?)",
                            have, need)
            if have >= need:
                return have
            reason = f"the database is at migration {have:04d} and this code needs {need:04d}: run `vybe migrate`"
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReady(f"{reason}; gave up after {wait_s:g} s (VYBE_STARTUP_WAIT_S)")
        delay = min(backoff(attempt, cap=5.0, base=0.5), left)
        attempt += 1
        log.warning("waiting for the database: %s; trying again in %.1f s", reason, delay)
        await asyncio.sleep(delay)


async def _version(dsn: str, pooler: str) -> int:
    conn = await connect(dsn, pooler=pooler, timeout=5.0)
    try:
        return await applied_version(conn)
    finally:
        await conn.close()

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
from db.migrate import current_version, discover
from db.pool import UNREACHABLE, connect

log = logging.getLogger(__name__)


class NotReady(Exception):
    """PostgreSQL did not answer with this code's schema in time, or refused what waiting cannot fix."""


async def wait_until_ready(dsn: str, wait_s: float, *, pooler: str = "none") -> int:
    """Wait up to ``wait_s`` seconds until PostgreSQL at ``dsn`` answers and has every migration of this code applied,
    trying again with back-off (at most 5 s) and logging what it waits for. Returns the schema version.

    Raises :class:`NotReady` after ``wait_s``, or at once when waiting cannot help (a refused password, no such
    database). A schema ahead of this code is logged and accepted: during a rolling update the new code migrates
    first (migrations are forward-only and add before they remove), and the old processes run on meanwhile."""
    need = discover()[-1].version
    deadline = time.monotonic() + wait_s
    attempt = 0
    while True:
        try:
            conn = await connect(dsn, pooler=pooler, timeout=5.0)
            try:
                have = await current_version(conn)
            finally:
                await conn.close()
        except UNREACHABLE as err:
            reason = f"PostgreSQL does not answer ({type(err).__name__}: {err})"
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

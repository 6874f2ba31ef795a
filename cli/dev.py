"""``vybe dev``: the whole system on one machine.

Embedded PostgreSQL and Redis when ``VYBE_DATABASE_URL`` / ``VYBE_REDIS_URL`` are
unset (data kept in ``VYBE_DATA_DIR``), migrations, then one gateway and N workers
as child processes, as production runs them. Ctrl-C stops everything.

It lives with the CLI, not in the gateway: it starts workers too (each child is
``python -m cli gateway|worker``). The embedded services need the ``dev`` extra;
without it ``vybe dev`` says so in one line (see ``db.embedded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import asyncpg

from common.settings import Settings, SettingsError
from db.embedded import data_path, embedded_postgres, embedded_redis, require
from db.migrate import migrate
from gateway.auth import mint_token

if TYPE_CHECKING:
    from pathlib import Path


def _dev_secret(settings: Settings, data_dir: Path) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    path = data_dir / "jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


async def _migrate(dsn: str) -> list[int]:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(dsn), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as err:
        raise SettingsError("VYBE_DATABASE_URL", f"cannot connect ({err})") from err
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def run_dev(settings: Settings, workers: int = 1) -> int:
    data_dir = data_path(settings.data_dir)
    require(postgres=settings.database_url is None, redis=settings.redis_url is None)
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        dsn = settings.database_url or stack.enter_context(embedded_postgres(data_dir))
        redis_url = settings.redis_url or stack.enter_context(embedded_redis(data_dir))
        applied = asyncio.run(_migrate(dsn))
        secret = _dev_secret(settings, data_dir)
        keys = asyncio.run(_dev_apps(dsn, settings))
        _write_dev_file(settings, data_dir, secret, keys)
        # One gateway process unless asked (VYBE_PROCESSES): a development machine runs everything.
        env = {"VYBE_PROCESSES": "1", **os.environ, "VYBE_DATABASE_URL": dsn, "VYBE_REDIS_URL": redis_url,
               "VYBE_JWT_SECRET": secret}
        children = [_spawn("gateway", env)] + [_spawn("worker", env) for _ in range(workers)]
        stack.callback(_stop, children)
        _banner(settings, dsn, redis_url, secret, applied, time.monotonic() - started, keys, data_dir)
        return _wait(children)
    return 0


async def _dev_apps(dsn: str, settings: Settings) -> dict[str, str]:
    """An app for each one the namespaces name, plus ``dev``, each with a fresh API key (a sister app's
    example runs against ``vybe dev`` with these; earlier keys stay valid)."""
    from common import namespaces
    from db import apps
    from db.pool import create_pool

    wanted = ["dev", *sorted({n.app for n in namespaces.load(settings.namespaces) if n.app})]
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        keys = {}
        for app in wanted:
            existing = await apps.get_app(pool, app)
            keys[app] = await apps.create_key(pool, app) if existing else (await apps.create_app(pool, app))[1]
        return keys
    finally:
        await pool.close()


def _write_dev_file(settings: Settings, data_dir: Path, secret: str, keys: dict[str, str]) -> None:
    """``<data dir>/dev.json``: where examples find the gateway, the JWT secret and the apps' keys."""
    path = data_dir / "dev.json"
    path.write_text(json.dumps({
        "http": f"http://{settings.host}:{settings.port}", "ws": f"ws://{settings.host}:{settings.port}/ws",
        "jwt_secret": secret, "api_keys": keys}, indent=2))
    path.chmod(0o600)


def _spawn(role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cli", role], env=env)


def _banner(settings: Settings, dsn: str, redis_url: str, secret: str, applied: list[int], took: float,
            keys: dict[str, str], data_dir: Path) -> None:
    from msgspec.structs import replace

    s = replace(settings, jwt_secret=secret)
    base = f"http://{settings.host}:{settings.port}"
    member = mint_token(s, "dev-member", role="MEMBER", name="Dev Member", ttl_s=86400)
    member2 = mint_token(s, "dev-member-2", role="MEMBER", name="Second Member", ttl_s=86400)
    moderator = mint_token(s, "dev-moderator", role="MODERATOR", name="Dev Moderator", ttl_s=86400)
    print(f"""
Vybe Live (dev) up in {took:.1f}s; migrations applied: {applied or 'none needed'}
  PostgreSQL  {dsn}
  Redis       {redis_url}
  HTTP        {base}   (health {base}/healthz, ready {base}/readyz, API docs {base}/schema)
  WebSocket   ws://{settings.host}:{settings.port}/ws
  Member token     {member}
  Moderator token  {moderator}
  Member feed       {base}/#token={member}
  Second member     {base}/#token={member2}   (another window: see each other live)
  Moderator console {base}/mod#token={moderator}
  Server API keys   {", ".join(f"{app} {key}" for app, key in keys.items())}
                    (also in {data_dir / "dev.json"}, where the examples read them)
Ctrl-C stops everything.
""", flush=True)


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    stop = {"signal": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop["signal"]:
            for child in children:
                if child.poll() is not None:
                    print(f"vybe dev: a child process exited with {child.returncode}; stopping", file=sys.stderr)
                    return child.returncode or 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    return 0


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

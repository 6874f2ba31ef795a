"""``vybe``: one command for every process of the system.

The CLI is the process entry: it reads the settings once and hands them to the
piece it starts. It sits above every other package (gateway, workers, db,
moderation, common, loadtest) and nothing imports it; each subcommand imports
its piece lazily, so ``vybe migrate`` never loads the gateway or a model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING

import msgspec

from common.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import asyncpg

log = logging.getLogger("vybe")


def _cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from db.migrate import MigrationError, migrate

    async def run() -> list[int]:
        conn = await _connect(settings)
        try:
            return await migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except MigrationError as err:
        print(f"vybe migrate: {err}", file=sys.stderr)
        return 1
    print(f"applied: {', '.join(f'{v:04d}' for v in applied) or 'nothing (up to date)'}")
    return 0


async def _connect(settings: Settings) -> asyncpg.Connection:
    import asyncpg

    if settings.database_url is None:
        raise SettingsError("VYBE_DATABASE_URL", "is not set")
    try:
        from db.pool import connect

        return await asyncio.wait_for(connect(settings.database_url, pooler=settings.database_pooler), timeout=10)
    except (TimeoutError, OSError, asyncpg.PostgresError) as err:
        raise SettingsError("VYBE_DATABASE_URL", f"cannot connect ({type(err).__name__}: {err})") from err


def _cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.auth import mint_token

    print(mint_token(settings, args.user, role=args.role, name=args.name, ttl_s=args.ttl))
    return 0


def _wait_for_database(settings: Settings) -> bool:
    """Before a gateway or a worker starts: PostgreSQL answering with this code's schema, waited for up to
    ``VYBE_STARTUP_WAIT_S`` (``db/startup.py``). False (one line said why) when it did not come."""
    from db.startup import NotReady, wait_until_ready

    if settings.database_url is None:
        raise SettingsError("VYBE_DATABASE_URL", "is not set (vybe dev sets it)")
    with _stoppable():
        try:
            asyncio.run(wait_until_ready(settings.database_url, settings.startup_wait_s,
                                         pooler=settings.database_pooler))
        except NotReady as err:
            print(f"vybe: {err}", file=sys.stderr)
            return False
    return True


@contextlib.contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM ends what runs inside at once (exit 143). In a container this process is PID 1, which the kernel
    does not stop on SIGTERM without a handler: without one, stopping a gateway that waits took the whole grace
    period and a SIGKILL."""
    previous = signal.signal(signal.SIGTERM, _stop_waiting)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_pubsub(settings: Settings) -> None:
    """``VYBE_PUBSUB=sharded`` needs Redis 7: checked before the wait for PostgreSQL, so a wrong setting stops the
    gateway at once with one line (exit 2), not once the database answers. A Redis that does not answer now is
    checked again as the gateway starts (the sharded backend refuses to start on an older server)."""
    if settings.pubsub != "sharded" or settings.redis_url is None:  # no URL: the gateway says so as it starts
        return
    from common.redisconn import REDIS_DOWN, connect_for
    from gateway.hub.redis_sharded import require_sharded_support

    async def check() -> None:
        client = await connect_for(settings, max_connections=1)
        try:
            await require_sharded_support(client)
        finally:
            await client.aclose()

    with _stoppable(), contextlib.suppress(*REDIS_DOWN, TimeoutError):
        asyncio.run(asyncio.wait_for(check(), 10))


def _stop_waiting(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _cmd_gateway(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.auth import Verifier
    from gateway.server import serve

    Verifier(settings)  # the key settings, checked before anything starts: one line and exit 2, not a traceback
    if args.processes is not None:
        settings = msgspec.structs.replace(settings, processes=args.processes)
    _check_pubsub(settings)
    if not _wait_for_database(settings):
        return 1
    return serve(settings)


def _cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from common.tasks import Heartbeat, alive_within

    if args.alive is not None:  # a liveness probe (kept light: it runs every 30 s): has the worker's loop turned?
        if settings.worker_alive_file is None:
            raise SettingsError("VYBE_WORKER_ALIVE_FILE", "is not set: the worker keeps no alive file to check")
        return 0 if alive_within(settings.worker_alive_file, args.alive) else 1
    from workers.main import prepare, run_worker

    Heartbeat(settings.worker_alive_file).forget()  # the probe fails until this process's loop turns
    prepared = prepare(settings)  # the model and the policy first: a bad setting says so at once, not after a wait
    if not _wait_for_database(settings):
        return 1
    return run_worker(settings, prepared)


def _cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    from cli.dev import run_dev
    from db.embedded import EmbeddedError, EmbeddedUnavailable

    try:
        return run_dev(settings, workers=args.workers)
    except EmbeddedError as err:
        # A missing `dev` extra is a setup problem (exit 2, like a bad setting); a
        # service that would not start is a failure (1). Either way one line.
        print(f"vybe dev: {err}", file=sys.stderr)
        return 2 if isinstance(err, EmbeddedUnavailable) else 1


def _cmd_moderation(settings: Settings, args: argparse.Namespace) -> int:
    from cli import moderation

    return moderation.run(settings, args)


def _cmd_apps(settings: Settings, args: argparse.Namespace) -> int:
    from cli import apps

    return apps.run(settings, args)


def _cmd_check_counters(settings: Settings, args: argparse.Namespace) -> int:
    from db.counters import check_counters_command

    return asyncio.run(check_counters_command(settings, repair=args.repair))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vybe", description="Vybe Live: real-time feed and moderation.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="run everything on one machine (embedded PostgreSQL and Redis when unset)") \
        .add_argument("--workers", type=int, default=1, help="moderation workers to run (default 1)")
    sub.add_parser("gateway", help="run one gateway node (needs VYBE_DATABASE_URL, VYBE_REDIS_URL)") \
        .add_argument("--processes", type=int, default=None,
                      help="processes sharing the port (default VYBE_PROCESSES; 0: the CPUs this process may use)")
    sub.add_parser("worker", help="run one moderation worker").add_argument(
        "--alive", type=float, metavar="SECONDS",
        help="do not run: exit 0 if the running worker's loop touched VYBE_WORKER_ALIVE_FILE within SECONDS, else 1 "
             "(a liveness probe)")
    sub.add_parser("migrate", help="apply database migrations (safe to run twice, from two nodes)")
    sub.add_parser("loadtest", help="simulate concurrent users against running gateways (see vybe loadtest --help)",
                   add_help=False)
    token = sub.add_parser("token", help="mint a development JWT (HS* secret from settings)")
    token.add_argument("--user", required=True, help="user id (the `sub` claim)")
    token.add_argument("--role", default="MEMBER", choices=["MEMBER", "CREATOR", "MODERATOR", "ADMIN"])
    token.add_argument("--name", default=None, help="display name claim")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")
    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    check = db.add_parser("check-counters", help="recompute every counter from its rows; report drift")
    check.add_argument("--repair", action="store_true", help="fix the drift, in one transaction")
    from cli import moderation

    moderation.add_parser(sub)
    from cli import apps

    apps.add_parser(sub)
    return parser


_COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "dev": _cmd_dev, "gateway": _cmd_gateway, "worker": _cmd_worker,
    "migrate": _cmd_migrate, "token": _cmd_token, "check-counters": _cmd_check_counters,
    "moderation": _cmd_moderation, "apps": _cmd_apps,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:
        # A client tool with its own options; it reads no server settings.
        from loadtest import main as loadtest_main

        return loadtest_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        name = args.db_command if args.command == "db" else args.command
        return _COMMANDS[name](settings, args)
    except SettingsError as err:
        print(f"vybe: configuration error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

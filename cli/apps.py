"""``vybe apps``: the sister apps this deployment serves, and their API keys.

- ``create APP [--name N] [--webhook URL]``: a new app and its first API key (shown once);
- ``key APP``: another key (rotate: make the new one, deploy it, ``revoke`` the old one);
- ``revoke KEY_ID``; ``webhook APP [URL]`` (no URL: none); ``list``: apps, key ids and webhook
  secrets (a receiver checks ``X-Vybe-Signature`` with it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    import asyncpg

    from common.settings import Settings


def add_parser(sub: Any) -> None:
    cmd = sub.add_parser("apps", help="apps served by this deployment: API keys and webhooks") \
        .add_subparsers(dest="apps_command", required=True)
    create = cmd.add_parser("create", help="a new app and its first API key")
    create.add_argument("app", help="app id: 1-40 of a-z, 0-9, _ and -")
    create.add_argument("--name", help="a display name for moderators")
    create.add_argument("--webhook", help="where moderation outcomes are POSTed (http(s)://...)")
    cmd.add_parser("key", help="another API key for the app (rotation)").add_argument("app")
    cmd.add_parser("revoke", help="revoke an API key at once").add_argument("key_id")
    hook = cmd.add_parser("webhook", help="set (or, without URL, clear) the app's webhook")
    hook.add_argument("app")
    hook.add_argument("url", nargs="?")
    cmd.add_parser("list", help="apps, their keys (ids only) and webhook secrets")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from cli.moderation import _with_pool
    from db.writes.errors import WriteError

    command: Callable[[asyncpg.Pool], Awaitable[Any]] = {
        "create": lambda pool: _create(pool, args), "key": lambda pool: _key(pool, args.app),
        "revoke": lambda pool: _revoke(pool, args.key_id), "webhook": lambda pool: _webhook(pool, args),
        "list": _list,
    }[args.apps_command]
    try:
        result = asyncio.run(_with_pool(settings, command))
    except WriteError as err:
        print(f"vybe apps {args.apps_command}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(msgspec.to_builtins(result), indent=2, ensure_ascii=False))
    return 0


async def _create(pool: asyncpg.Pool, args: argparse.Namespace) -> dict[str, Any]:
    from db import apps

    app, key = await apps.create_app(pool, args.app, args.name, args.webhook)
    return {"app": app.id, "api_key": key, "webhook_url": app.webhook_url, "webhook_secret": app.webhook_secret}


async def _key(pool: asyncpg.Pool, app_id: str) -> dict[str, Any]:
    from db import apps

    return {"app": app_id, "api_key": await apps.create_key(pool, app_id)}


async def _revoke(pool: asyncpg.Pool, key_id: str) -> dict[str, Any]:
    from db import apps

    await apps.revoke_key(pool, key_id)
    return {"revoked": key_id}


async def _webhook(pool: asyncpg.Pool, args: argparse.Namespace) -> Any:
    from db import apps

    return await apps.set_webhook(pool, args.app, args.url)


async def _list(pool: asyncpg.Pool) -> Any:
    from db import apps

    return [{**msgspec.to_builtins(app), "keys": msgspec.to_builtins(keys)} for app, keys in await apps.list_apps(pool)]

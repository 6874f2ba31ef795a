"""``vybe moderation``: the model that learns from moderators, and how right its flags are.

- ``retrain``: train on the shipped data plus moderators' decisions, compare with the model in
  use, promote if better (``moderation.retrain``); prints the comparison as JSON.
- ``promote VERSION``: make a stored model active anyway; ``rollback``: back to the one the active
  model replaced (or the shipped heads); ``models``: every stored model.
- ``stats``: per-label precision and recall of the model's flags by moderators' decisions.
- ``prepare``: load the scorer as ``vybe worker`` does, so every model it needs is exported into the model cache
  now (an image build runs it, see ``deploy/Dockerfile``); needs no database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg

    from common.settings import Settings

WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_window(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) as seconds."""
    unit = text[-1:] if text[-1:] in WINDOW_UNITS else "s"
    number = text[:-1] if text[-1:] in WINDOW_UNITS else text
    try:
        seconds = float(number) * WINDOW_UNITS[unit]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number with s, m, h or d (e.g. 7d)") from err
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be positive")
    return seconds


def add_parser(sub: Any) -> None:
    mod = sub.add_parser("moderation", help="retrain, promote, roll back the model; flag accuracy") \
        .add_subparsers(dest="moderation_command", required=True)
    retrain = mod.add_parser("retrain", help="train on shipped data + moderators' decisions; promote if better")
    retrain.add_argument("--min-decisions", type=int, default=20, help="refuse with fewer decisions (default 20)")
    choice = retrain.add_mutually_exclusive_group()
    choice.add_argument("--dry-run", action="store_true", help="train and compare; store nothing")
    choice.add_argument("--promote", action="store_true", help="promote even if not better")
    mod.add_parser("rollback", help="return to the model the active one replaced (or the shipped heads)")
    promote = mod.add_parser("promote", help="make a stored model active")
    promote.add_argument("version")
    mod.add_parser("models", help="list stored models")
    stats = mod.add_parser("stats", help="per-label precision and recall of model flags, by moderators' decisions")
    stats.add_argument("--window", type=parse_window, default=parse_window("30d"),
                       help="how far back (90s, 30m, 24h, 7d; default 30d)")
    prepare = mod.add_parser("prepare", help="export the worker's models into the model cache now (image builds)")
    prepare.add_argument("--slim", action="store_true",
                         help="then delete the fp32 exports the int8 models were derived from (an image needs only "
                              "the int8 ones)")
    prepare.add_argument("--check", action="store_true",
                         help="exit 1 unless every model the installed extras allow loaded (ONNX encoders, the "
                              "second opinion) and, with read-only directories, nothing had to be exported")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Dispatch ``vybe moderation ...``; exit 1 with one line on a refusal."""
    from db.writes.errors import WriteError
    from moderation.retrain import RetrainError
    from moderation.scorers import ScorerError

    if args.moderation_command == "prepare":
        try:
            result = prepare(settings, slim=args.slim)
        except ScorerError as err:
            print(f"vybe moderation prepare: {err}", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=2, ensure_ascii=False))
        for problem in result["problems"] if args.check else ():
            print(f"vybe moderation prepare --check: {problem}", file=sys.stderr)
        return 1 if args.check and result["problems"] else 0
    command: Callable[[asyncpg.Pool], Awaitable[Any]] = {
        "retrain": lambda pool: _retrain(settings, pool, args),
        "rollback": _rollback, "promote": lambda pool: _promote(pool, args.version), "models": _models,
        "stats": lambda pool: _stats(pool, args.window),
    }[args.moderation_command]
    try:
        result = asyncio.run(_with_pool(settings, command))
    except (RetrainError, WriteError) as err:
        print(f"vybe moderation {args.moderation_command}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(msgspec.to_builtins(result), indent=2, ensure_ascii=False))
    return 0


def prepare(settings: Settings, slim: bool = False) -> dict[str, Any]:
    """Load the scorer exactly as ``vybe worker`` does (which exports what the first directory of
    ``VYBE_MODEL_CACHE`` lacks); report the scorer, the warnings a worker would log, and the cache's files.
    ``slim``: delete the fp32 exports whose int8 model is there (loading reads only the int8 one)."""
    import logging

    from moderation.scorers.onnx_encoder import cache_dirs
    from moderation.scorers.onnx_int8 import int8_path
    from workers.main import build_scorer

    class _Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    collect, logger = _Collect(), logging.getLogger("moderation")
    directory, read_only = cache_dirs(settings.model_cache)
    before = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    logger.addHandler(collect)
    try:
        scorer = build_scorer(settings)
    finally:
        logger.removeHandler(collect)
    removed = []
    if slim and directory.is_dir():
        for path in sorted(directory.glob("*.onnx")):
            if int8_path(path).is_file():
                path.unlink()
                removed.append(path.name)
    files = sorted(directory.iterdir()) if directory.is_dir() else []
    written = sorted(p.name for p in files if p.name not in before)
    return {"scorer": scorer.name, "version": scorer.version,
            "second_opinion": hasattr(scorer, "routed"), "warnings": collect.messages,
            "cache": str(directory), "read_only": [str(d) for d in read_only],
            "files": {p.name: round(_size(p) / 2**20, 1) for p in files if not p.name.startswith(".")},
            "removed": removed, "problems": _problems(settings, scorer, bool(read_only), written)}


def _problems(settings: Settings, scorer: Any, made_ahead: bool, written: list[str]) -> list[str]:
    """What ``--check`` fails on: a model the installed extras allow that did not load as a worker needs it, or
    (with read-only directories) anything exported into the writable one."""
    import importlib.util

    from moderation.active import encoder_of
    from moderation.scorers import ScorerUnavailableError, mpnet, shipped_bundle

    out = []
    if settings.scorer in ("blend", "embedded") and all(importlib.util.find_spec(m) for m in ("torch", "onnxruntime")):
        encoder = encoder_of(scorer)
        if getattr(encoder, "backend", None) != "onnx":
            out.append(f"the {settings.scorer} scorer did not load its ONNX encoder (got {scorer.name})")
    if settings.scorer == "blend" and settings.second_opinion_band != 0 and "second" in shipped_bundle():
        try:
            installed = bool(os.environ.get(mpnet.DIR_ENV)) or bool(mpnet._parts())
        except ScorerUnavailableError:
            installed = False
        if installed and not hasattr(scorer, "routed"):
            out.append("the second opinion is installed but did not load")
    if made_ahead and written:
        out.append(f"exported {written} although read-only model directories were given: not made ahead")
    return out


def _size(path: Any) -> int:
    """Bytes in a file, or in every file under a directory."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _with_pool(settings: Settings, command: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    from common.settings import SettingsError
    from db.pool import create_pool

    if settings.database_url is None:
        raise SettingsError("VYBE_DATABASE_URL", "is not set")
    pool = await create_pool(settings.database_url, min_size=1, max_size=2, pooler=settings.database_pooler)
    try:
        return await command(pool)
    finally:
        await pool.close()


async def _retrain(settings: Settings, pool: asyncpg.Pool, args: argparse.Namespace) -> dict[str, Any]:
    from db import learning
    from moderation.active import load_active
    from moderation.retrain import retrain
    from workers.main import build_policy

    current = await load_active(pool, settings.scorer, await learning.active_version(pool),
                                backend=settings.embedded_backend, cache_dir=settings.model_cache,
                                second_band=settings.second_opinion_band)
    return await retrain(pool, current, settings.scorer, build_policy(settings, current),
                         min_decisions=args.min_decisions, promote=True if args.promote else None,
                         store=not args.dry_run, model_cache=settings.model_cache,
                         second_band=settings.second_opinion_band)


async def _rollback(pool: asyncpg.Pool) -> dict[str, Any]:
    from db import learning

    was, now = await learning.rollback(pool)
    return {"rolled_back": was, "active": now or "shipped heads"}


async def _promote(pool: asyncpg.Pool, version: str) -> Any:
    from db import learning

    return await learning.promote(pool, version)


async def _models(pool: asyncpg.Pool) -> Any:
    from db import learning

    return [{k: v for k, v in msgspec.to_builtins(m).items() if k != "report"} | {"why": m.report.get("why")}
            for m in await learning.list_models(pool)]


async def _stats(pool: asyncpg.Pool, window_s: float) -> Any:
    from db import learning

    return await learning.label_stats(pool, window_s)

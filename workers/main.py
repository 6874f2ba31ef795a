"""``vybe worker``: one moderation consumer process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING

from common import redisconn
from common.settings import SettingsError
from db.pool import create_pool
from moderation.policy import Policy, PolicyError
from moderation.scorers import ScorerError, load_scorer
from workers.consumer import Worker

if TYPE_CHECKING:
    from common.settings import Settings
    from moderation.scorers import Scorer

log = logging.getLogger(__name__)


def build_policy(settings: Settings, scorer: Scorer) -> Policy:
    """The policy the settings ask for, with ``auto`` resolved for ``scorer``."""
    try:
        return Policy.from_settings(resolve_mode(settings.moderation_mode, scorer), settings.moderation_thresholds,
                                    settings.care_threshold)
    except PolicyError as err:
        raise SettingsError("VYBE_MODERATION_THRESHOLDS", str(err)) from err


def resolve_mode(mode: str, scorer: Scorer) -> str:
    """``auto`` is ``flag``, with every scorer. (The light fallback ran in ``shadow`` under ``auto``
    while it flagged 10.7 % of short friendly messages written apart from its training data,
    heads 2026.12.3-.4, over the 5 % a fallback may flag; 2026.12.5 flags 3.6 % there, 1.1 % leaving
    one writer out: see moderation/data/written/ind1.README.md, the first independent set's.)"""
    if mode != "auto":
        return mode
    if scorer.name.startswith("vybe-light"):
        log.info("the light fallback scorer flags (VYBE_MODERATION_MODE=shadow to only record its scores; "
                 "install the ml extra for the embedded scorer)")
    return "flag"


def build_scorer(settings: Settings) -> Scorer:
    """The scorer the settings ask for (``vybe moderation prepare`` builds the same one to export its models)."""
    return load_scorer(settings.scorer, detoxify_checkpoint=settings.detoxify_checkpoint,
                       detoxify_hf_dir=settings.detoxify_hf_dir, embedded_backend=settings.embedded_backend,
                       model_cache=settings.model_cache, second_band=settings.second_opinion_band)


def prepare(settings: Settings) -> tuple[Scorer, Policy]:
    """The worker's model and policy, from the settings alone (no database): before the worker waits for
    PostgreSQL, so a bad setting or a model that cannot load stops it with one line at once."""
    if settings.database_url is None or settings.redis_url is None:
        raise SettingsError("VYBE_DATABASE_URL", "the worker needs VYBE_DATABASE_URL and VYBE_REDIS_URL")
    try:
        scorer = build_scorer(settings)
    except ScorerError as err:
        raise SettingsError("VYBE_SCORER", str(err)) from err
    policy = build_policy(settings, scorer)
    log.info("scorer %s %s, mode %s", scorer.name, scorer.version, policy.mode)
    return scorer, policy


async def _main(settings: Settings, dsn: str, scorer: Scorer, policy: Policy) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=4, pooler=settings.database_pooler)
    redis = await redisconn.connect_for(settings, max_connections=16)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    name = f"{socket.gethostname()}-{os.getpid()}"
    try:
        await Worker(settings, pool, redis, scorer, policy, name).run(stop)
    finally:
        await redis.aclose()
        await pool.close()


def run_worker(settings: Settings, prepared: tuple[Scorer, Policy] | None = None) -> int:
    """Run one worker (``prepared``: what :func:`prepare` returned, if it ran already)."""
    scorer, policy = prepared or prepare(settings)
    asyncio.run(_main(settings, settings.database_url or "", scorer, policy))  # prepare() refused an unset URL
    return 0

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
    """``auto`` is ``flag``, except with the light scorer: on text written apart from its training
    data it flags 10.7 % of short friendly messages (heads 2026.12.3 and .4; 89 % before 2026.12.2; see
    moderation/data/independent/README.md), over the 5 % a fallback may flag, and a fallback that
    floods the queue is worse than none, so it only records its scores (``shadow``)."""
    if mode != "auto":
        return mode
    if scorer.name.startswith("vybe-light"):
        log.warning("the light fallback scorer runs in shadow mode: it scores and records, and flags "
                    "nothing (VYBE_MODERATION_MODE=flag to let it flag; install the ml extra for the "
                    "embedded scorer)")
        return "shadow"
    return "flag"


async def _main(settings: Settings) -> None:
    if settings.database_url is None or settings.redis_url is None:
        raise SettingsError("VYBE_DATABASE_URL", "the worker needs VYBE_DATABASE_URL and VYBE_REDIS_URL")
    try:
        scorer = load_scorer(settings.scorer, detoxify_checkpoint=settings.detoxify_checkpoint,
                             detoxify_hf_dir=settings.detoxify_hf_dir, embedded_backend=settings.embedded_backend,
                             model_cache=settings.model_cache)
    except ScorerError as err:
        raise SettingsError("VYBE_SCORER", str(err)) from err
    policy = build_policy(settings, scorer)
    log.info("scorer %s %s, mode %s", scorer.name, scorer.version, policy.mode)
    pool = await create_pool(settings.database_url, min_size=1, max_size=4, pooler=settings.database_pooler)
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


def run_worker(settings: Settings) -> int:
    asyncio.run(_main(settings))
    return 0

"""The sister apps' examples (``examples/``) against a live gateway: the examples' own namespaces file, the four
apps with their API keys, and a moderation worker in-process running the default scorer (``blend``: the one
``vybe dev`` runs; it loads in about 2 s, once per session)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from db import apps
from examples.common import Config
from moderation.policy import Policy
from moderation.scorers import load_scorer
from tests.gateway.conftest import connect, live, start_gateway  # noqa: F401 - fixtures
from workers.consumer import Worker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from moderation.scorers import Scorer
    from tests.gateway.conftest import Live

NAMESPACES = str(Path(__file__).resolve().parents[2] / "examples" / "namespaces.toml")
APPS = ("miel", "soulseer", "opencircle", "vibeup")


@dataclass
class ExampleEnv:
    live: Live
    config: Config
    """What the example gets: this gateway's URLs, its JWT secret, the apps' API keys."""


@pytest.fixture(scope="session")
def blend_scorer() -> Scorer:
    return load_scorer("blend")


@pytest.fixture
async def example_env(start_gateway: Callable[..., Awaitable[Live]], pool: Any,  # noqa: F811 - the fixture
                      blend_scorer: Scorer) -> AsyncIterator[Callable[..., Awaitable[ExampleEnv]]]:
    """``await example_env(mode)``: a gateway with ``examples/namespaces.toml`` (presence every 0.2 s), the four
    apps, and a worker scoring with ``blend`` under ``Policy.from_settings(mode, "")`` (default thresholds;
    ``flag`` is what ``vybe dev``'s ``auto`` resolves to for this scorer). The worker stops after the test."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(mode: str = "flag", **overrides: Any) -> ExampleEnv:
        live_ = await start_gateway(namespaces=NAMESPACES, presence_interval_s=0.2, **overrides)
        keys = {app: (await apps.create_app(pool, app))[1] for app in APPS}
        gw = live_.gateway
        settings = msgspec.structs.replace(gw.settings, worker_block_ms=10)
        worker = Worker(settings, gw.pool, gw.redis, blend_scorer, Policy.from_settings(mode, ""), "examples-w")
        await worker.ensure_group()
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(worker.run(stop))))
        config = Config(http=live_.http, ws=live_.url, jwt_secret=str(live_.settings.jwt_secret), api_keys=keys,
                        wait_s=8.0)
        return ExampleEnv(live_, config)

    yield start
    for stop, _ in running:
        stop.set()
    for _, task in running:
        await asyncio.wait_for(task, timeout=10)

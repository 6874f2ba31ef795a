"""A `vybe gateway` process on the test's services (for tests that need a real process)."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from collections.abc import Callable

    from common.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    """The environment of a `vybe gateway` process on the test's services."""
    return {**os.environ, "VYBE_DATABASE_URL": settings.database_url or "", "VYBE_REDIS_URL": settings.redis_url or "",
            "VYBE_REDIS_PREFIX": settings.redis_prefix, "VYBE_JWT_SECRET": settings.jwt_secret or "",
            "VYBE_PORT": str(port), "VYBE_LOG_LEVEL": "WARNING", "VYBE_PROCESSES": "1", **extra}


async def wait_ready(port: int, alive: Callable[[], bool] = lambda: True, timeout: float = 15.0) -> None:
    """Until the gateway on ``port`` answers /readyz 200 (fails if ``alive()`` turns false)."""
    async with httpx.AsyncClient() as http:
        for _ in range(int(timeout / 0.05)):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert alive(), "the gateway process exited early"
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway never became ready")

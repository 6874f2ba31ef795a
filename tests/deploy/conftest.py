"""Fixtures for the deployment tests (helpers live in deploy_support.py)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_support import Peer


@pytest.fixture
async def peers() -> Any:
    """Open reconnecting clients (``await open_(url, token)``); all closed after the test."""
    opened: list[Peer] = []

    async def open_(url: str, token: str, **kw: Any) -> Peer:
        peer = await Peer(url, token, **kw).start()
        opened.append(peer)
        return peer

    yield open_
    for p in opened:
        await p.close()

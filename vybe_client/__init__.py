"""Python client SDK of Vybe Live: ``VybeClient`` (the WebSocket protocol, asyncio) and
``VybeServer`` (the server API for trusted backends, over httpx)."""

from __future__ import annotations

from vybe_client.client import VybeClient, new_id
from vybe_client.errors import AuthLost, ClientStopped, CommandError, ServerError, VybeError
from vybe_client.models import ConnectionState, Event, Notice, PublishResult, SubscribeResult
from vybe_client.server import (
    HistoryAnswer,
    ModerationAnswer,
    PresenceAnswer,
    PublishAnswer,
    VybeServer,
    verify_webhook,
)

__version__ = "0.1.0"

__all__ = [
    "AuthLost",
    "ClientStopped",
    "CommandError",
    "ConnectionState",
    "Event",
    "HistoryAnswer",
    "ModerationAnswer",
    "Notice",
    "PresenceAnswer",
    "PublishAnswer",
    "PublishResult",
    "ServerError",
    "SubscribeResult",
    "VybeClient",
    "VybeError",
    "VybeServer",
    "__version__",
    "new_id",
    "verify_webhook",
]

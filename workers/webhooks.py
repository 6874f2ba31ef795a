"""Webhook deliveries: POST each app's moderation outcomes, signed, retried until answered.

Deliveries are rows (``webhook_deliveries``) written in the transaction of what they announce, so
none is lost to a crash; any worker may send them (each claims a batch for a minute with
``SKIP LOCKED``). A 2xx answer delivers; anything else (an error status, a timeout, a refused
connection) is retried 5 s later, then 10 s, 20 s... up to ``db.apps.WEBHOOK_ATTEMPTS`` attempts.
The body is ``{"event", "app", "data"}``; ``X-Vybe-Signature: t=<unix time>,v1=<hex>`` is the
HMAC-SHA256 of ``"<t>.<body>"`` with the app's webhook secret (``vybe_client.verify_webhook`` checks it), and
``X-Vybe-Delivery`` the delivery's id (the same on every retry: deduplicate by it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import asyncpg
import httpx
import msgspec

from db import apps
from db.pool import UNREACHABLE

if TYPE_CHECKING:
    from common.settings import Settings

log = logging.getLogger(__name__)


async def deliver_once(pool: asyncpg.Pool, http: httpx.AsyncClient, settings: Settings) -> int:
    """Send every delivery due now (concurrently); returns how many were attempted."""
    due = await apps.due_webhooks(pool)
    await asyncio.gather(*(_send(pool, http, d, settings.webhook_timeout_s) for d in due))
    return len(due)


async def _send(pool: asyncpg.Pool, http: httpx.AsyncClient, delivery: apps.Delivery, timeout: float) -> None:
    body = msgspec.json.encode(delivery.body)
    headers = {"content-type": "application/json", "x-vybe-event": delivery.event,
               "x-vybe-delivery": str(delivery.id), "x-vybe-signature": apps.sign(delivery.secret, body)}
    error: str | None = None
    try:
        response = await http.post(delivery.url, content=body, headers=headers, timeout=timeout)
        if not 200 <= response.status_code < 300:
            error = f"HTTP {response.status_code}"
    except httpx.HTTPError as err:
        error = f"{type(err).__name__}: {err}"
    if error is not None:
        log.info("webhook %d to %s failed (attempt %d): %s", delivery.id, delivery.app_id, delivery.attempts + 1,
                 error)
    await apps.webhook_done(pool, delivery, error)


PRUNE_EVERY_S = 600.0


async def run(pool: asyncpg.Pool, settings: Settings, interval_s: float = 0.5) -> None:
    """The worker's webhook loop (supervised beside the consumer); every ``PRUNE_EVERY_S`` it also
    deletes expired idempotency keys and old deliveries (``db.apps.prune``: idempotent, so several
    workers doing it is harmless)."""
    next_prune = 0.0
    async with httpx.AsyncClient(follow_redirects=False) as http:
        while True:
            try:
                sent = await deliver_once(pool, http, settings)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    pruned = await apps.prune(pool)
                    if any(pruned.values()):
                        log.info("pruned %s", pruned)
            except (*UNREACHABLE, asyncpg.PostgresError) as err:
                log.warning("webhook pass failed: %s", err)
                sent = 0
            if not sent:
                await asyncio.sleep(interval_s)

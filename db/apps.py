"""Apps served by this deployment: API keys, app items (moderation as a service), idempotent
server requests, and webhook deliveries.

An *app item* is a text moderated for an app: one its backend sent (``POST /api/server/moderate``)
or a client publication on a moderated namespace. It is a moderation target like a vybe or a
comment (``target_type = 'app_item'``): scored by the workers, cased, decided in the same console.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from common import events
from db.writes._tx import in_transaction
from db.writes.errors import Conflict, NotFound, WriteError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import LiteralString

    from common.bus import Event
    from db.outbox import Announcement

OWN_APP = "vybe"
"""The app of client publications on namespaces that name none (the gateway's own)."""


class App(msgspec.Struct, frozen=True):
    id: str
    name: str
    webhook_url: str | None
    webhook_secret: str
    created_at: dt.datetime


class ApiKey(msgspec.Struct, frozen=True):
    id: str
    app_id: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None


class ItemView(msgspec.Struct, frozen=True, kw_only=True):
    """An app item as its app reads it back (``GET /api/server/moderation/{item_id}``)."""

    item_id: uuid.UUID
    app: str
    content_type: str
    content_id: str
    author_id: str
    state: str
    """``pending`` (not scored yet), ``approved``, ``flagged`` (a case is open), ``hidden`` or ``removed``."""
    decision: str | None = None
    """The model's: ``approve``, ``shadow`` (recorded only), ``flag`` or ``hide``; None until scored."""
    scores: dict[str, float] | None = None
    reasons: list[str] = []
    model_version: str | None = None
    case_id: uuid.UUID | None = None
    resolution: str | None = None
    """A moderator's decision, once made: ``remove``, ``hide``, ``restore`` or ``dismiss``."""
    channel: str | None = None
    held: bool = False
    created_at: dt.datetime


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def create_app(pool: asyncpg.Pool, app_id: str, name: str | None = None,
                     webhook_url: str | None = None) -> tuple[App, str]:
    """A new app and its first API key (the key is shown once: only its hash is kept)."""
    if app_id == OWN_APP:
        raise WriteError(f"{OWN_APP!r} names this gateway's own content: pick another app id", "invalid_value")
    try:
        row = await pool.fetchrow(
            "INSERT INTO apps (id, name, webhook_url, webhook_secret) VALUES ($1, $2, $3, $4) RETURNING *",
            app_id, name or app_id, webhook_url, "whsec_" + secrets.token_urlsafe(24))
    except asyncpg.UniqueViolationError as err:
        raise Conflict(f"app {app_id!r} exists") from err
    except asyncpg.CheckViolationError as err:
        raise WriteError(f"app id {app_id!r}: 1-40 of a-z, 0-9, _ and -; webhook URL http(s)://",
                         "invalid_value") from err
    return App(**dict(row)), await create_key(pool, app_id)


async def set_webhook(pool: asyncpg.Pool, app_id: str, url: str | None) -> App:
    row = await pool.fetchrow("UPDATE apps SET webhook_url = $2 WHERE id = $1 RETURNING *", app_id, url)
    if row is None:
        raise NotFound(f"no app {app_id!r}")
    return App(**dict(row))


async def create_key(pool: asyncpg.Pool, app_id: str) -> str:
    """A new API key for ``app_id`` (``vk_<id>.<secret>``); the app's other keys stay valid."""
    key_id, secret = "vk_" + secrets.token_hex(6), secrets.token_urlsafe(32)
    inserted = await pool.fetchval(
        "INSERT INTO api_keys (id, app_id, secret_hash) SELECT $1, id, $3 FROM apps WHERE id = $2 RETURNING true",
        key_id, app_id, _hash(secret))
    if not inserted:
        raise NotFound(f"no app {app_id!r}")
    return f"{key_id}.{secret}"


async def revoke_key(pool: asyncpg.Pool, key_id: str) -> None:
    done = await pool.fetchval(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING true", key_id)
    if not done:
        raise NotFound(f"no active key {key_id!r}")


async def list_apps(pool: asyncpg.Pool) -> list[tuple[App, list[ApiKey]]]:
    apps = [App(**dict(r)) for r in await pool.fetch("SELECT * FROM apps ORDER BY id")]
    keys = [ApiKey(**dict(r)) for r in await pool.fetch(
        "SELECT id, app_id, created_at, revoked_at, last_used_at FROM api_keys ORDER BY created_at")]
    return [(a, [k for k in keys if k.app_id == a.id]) for a in apps]


async def authenticate(pool: asyncpg.Pool, key: str) -> str | None:
    """The app of a valid, unrevoked API key, else None (compared in constant time)."""
    key_id, _, secret = key.partition(".")
    row = await pool.fetchrow(
        """UPDATE api_keys SET last_used_at = now()
            WHERE id = $1 AND revoked_at IS NULL
              AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        RETURNING app_id, secret_hash""", key_id) or await pool.fetchrow(
        "SELECT app_id, secret_hash FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id)
    if row is None or not secret or not hmac.compare_digest(bytes(row["secret_hash"]), _hash(secret)):
        return None
    app_id: str = row["app_id"]
    return app_id


async def get_app(conn: asyncpg.Connection | asyncpg.Pool, app_id: str) -> App | None:
    row = await conn.fetchrow("SELECT * FROM apps WHERE id = $1", app_id)
    return None if row is None else App(**dict(row))


# -- app items ------------------------------------------------------------------

async def submit_item(conn: asyncpg.Connection, app_id: str, *, content_type: str, content_id: str, user_id: str,
                      text: str, channel: str | None = None, payload: object = None,
                      held: bool = False, item_id: uuid.UUID | None = None) -> tuple[uuid.UUID, bool]:
    """Store an item to moderate (in the caller's transaction); returns (id, created). The same
    (app, content type, content id) again is the same item: a retry, unless its text differs
    (``conflict``: an edited text is a new content id)."""
    row = await conn.fetchrow(
        """INSERT INTO app_items (id, app_id, content_type, content_id, user_id, content, channel, payload, held)
           VALUES (coalesce($1, gen_random_uuid()), $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT ON CONSTRAINT app_items_once DO NOTHING RETURNING id""",
        item_id, app_id, content_type, content_id, user_id, text, channel,
        None if payload is None else json.loads(msgspec.json.encode(payload)), held)
    if row is not None:
        return row["id"], True
    old = await conn.fetchrow(
        "SELECT id, content FROM app_items WHERE app_id = $1 AND content_type = $2 AND content_id = $3",
        app_id, content_type, content_id)
    if old["content"] != text:
        raise Conflict(f"{content_type} {content_id!r} was submitted with another text; an edit is a new content_id")
    return old["id"], False


_VIEW: LiteralString = """
SELECT i.id AS item_id, i.app_id AS app, i.content_type, i.content_id, i.user_id AS author_id,
       i.moderation_state::text AS state, s.decision, s.scores, coalesce(s.reasons, '{}') AS reasons,
       s.model_version, c.id AS case_id, c.resolution, i.channel, i.held, i.created_at
  FROM app_items i
  LEFT JOIN LATERAL (SELECT decision, scores, reasons, model_version FROM moderation_scores
                      WHERE target_type = 'app_item' AND target_id = i.id ORDER BY created_at DESC LIMIT 1) s ON true
  LEFT JOIN moderation_cases c ON c.target_type = 'app_item' AND c.target_id = i.id::text
 WHERE i.id = $1
"""


async def item_view(conn: asyncpg.Connection | asyncpg.Pool, item_id: uuid.UUID | str,
                    app_id: str | None = None) -> ItemView:
    """The item as its app sees it; NotFound for another app's item."""
    try:
        row = await conn.fetchrow(_VIEW, uuid.UUID(str(item_id)))
    except ValueError as err:
        raise NotFound("no such item") from err
    if row is None or (app_id is not None and row["app"] != app_id):
        raise NotFound("no such item")
    return msgspec.convert(dict(row), ItemView)


class ItemRow(msgspec.Struct, frozen=True):
    """What scoring and deciding an app item need of it."""

    id: uuid.UUID
    app_id: str
    user_id: str
    channel: str | None
    payload: Any
    held: bool


async def item_row(conn: asyncpg.Connection, item_id: uuid.UUID) -> ItemRow | None:
    row = await conn.fetchrow("SELECT id, app_id, user_id, channel, payload, held FROM app_items WHERE id = $1",
                              item_id)
    return None if row is None else ItemRow(**dict(row))


async def release(conn: asyncpg.Connection, item: ItemRow) -> list[Event]:
    """A held publication goes out (the model approved it, or a moderator did), once."""
    if item.channel is None or not item.held:
        return []
    await conn.execute("UPDATE app_items SET held = false, updated_at = now() WHERE id = $1", item.id)
    return [events.publication(item.channel, item.id, item.user_id, item.payload)]


async def scored_events(conn: asyncpg.Connection, item: ItemRow, action: str, care: bool) -> list[Event]:
    """In the scoring's transaction: a held publication the model approves goes out; a delivered one
    it hides is taken back (``publication.hidden``); the app's webhook hears ``moderation.scored``."""
    out: list[Event] = []
    if action in ("approve", "shadow"):
        out += await release(conn, item)
    elif action == "hide" and item.channel is not None and not item.held:
        out.append(events.publication_state(item.channel, item.id, "hidden"))
    elif action == "flag":
        out += _waits_for_moderator(item)
    view = await item_view(conn, item.id)
    await enqueue_webhook(conn, item.app_id, "moderation.scored", {**msgspec.to_builtins(view), "care": care})
    return out


async def unscored_events(conn: asyncpg.Connection, item: ItemRow) -> list[Event]:
    """In the transaction that gave moderators a case for an item the model could not score
    (``db.moderation.record_failure``): a held publication's author hears it waits for a moderator; the app's
    webhook hears ``moderation.unscored`` (the item still ``pending``, with its ``case_id``)."""
    view = await item_view(conn, item.id)
    await enqueue_webhook(conn, item.app_id, "moderation.unscored", msgspec.to_builtins(view))
    return _waits_for_moderator(item)


def _waits_for_moderator(item: ItemRow) -> list[Event]:
    """A held publication now waits for a moderator: its author hears so (the ack said `held`; now they know why
    it waits)."""
    if item.channel is None or not item.held:
        return []
    held = {"id": str(item.id), "channel": item.channel, "waiting_for": "moderator"}
    return [events.outcome(item.user_id, held, "publication.held")]


_VISIBLE_AFTER = {"remove": "removed", "hide": "hidden", "restore": "restored", "dismiss": "restored",
                  "reopen": "restored"}


async def decided_events(conn: asyncpg.Connection, item_id: uuid.UUID, action: str) -> list[Event]:
    """In a moderator's resolution: a held publication restored or dismissed goes out; a delivered one
    hidden or removed is taken back (and returned by a later restore, or a ``reopen``: under review
    again, as before a decision; a held one stays held); the webhook hears ``moderation.decided``
    (``moderation.reopened``)."""
    item = await item_row(conn, item_id)
    if item is None:
        return []
    out: list[Event] = []
    if action in ("restore", "dismiss") and item.held:
        out += await release(conn, item)
    elif item.channel is not None and not item.held:
        out.append(events.publication_state(item.channel, item.id, _VISIBLE_AFTER[action]))
    view = await item_view(conn, item.id)
    name = "moderation.reopened" if action == "reopen" else "moderation.decided"
    await enqueue_webhook(conn, item.app_id, name, msgspec.to_builtins(view))
    return out


# -- idempotent server requests -------------------------------------------------

async def once(pool: asyncpg.Pool, app_id: str, request_id: str | None, operation: str,
               body: Callable[[asyncpg.Connection], Awaitable[dict[str, Any]]],
               announce: Announcement | None = None) -> tuple[dict[str, Any], bool]:
    """``body`` in a transaction, at most once per (app, request id) in 24 h: a retry returns the
    first result and True (replayed). Concurrent retries wait for the first to commit. ``announce``
    is built from ``(result, replayed)`` in the same transaction (a replay announces nothing)."""
    if request_id is None:
        async def plain(conn: asyncpg.Connection) -> tuple[dict[str, Any], bool]:
            return await body(conn), False

        return await in_transaction(pool, plain, announce)

    async def run(conn: asyncpg.Connection) -> tuple[dict[str, Any], bool]:
        claimed = await conn.fetchval(
            """INSERT INTO app_requests AS k (app_id, request_id, operation, result) VALUES ($1, $2, $3, 'null')
               ON CONFLICT (app_id, request_id) DO UPDATE
                  SET operation = EXCLUDED.operation, result = EXCLUDED.result, created_at = now()
                WHERE k.created_at < now() - interval '24 hours'
            RETURNING true""", app_id, request_id, operation)
        if not claimed:
            row = await conn.fetchrow(
                "SELECT operation, result FROM app_requests WHERE app_id = $1 AND request_id = $2", app_id, request_id)
            if row["operation"] != operation:
                raise Conflict(f"idempotency key {request_id!r} was used for another operation")
            return dict(row["result"]), True
        result = await body(conn)
        await conn.execute("UPDATE app_requests SET result = $3 WHERE app_id = $1 AND request_id = $2",
                           app_id, request_id, result)
        return result, False

    return await in_transaction(pool, run, announce)


# -- webhooks -------------------------------------------------------------------

WEBHOOK_ATTEMPTS = 12
"""Deliveries are tried this many times, 5 s after the first failure and doubling (about 3 h in all)."""


async def enqueue_webhook(conn: asyncpg.Connection, app_id: str, event: str, data: dict[str, Any]) -> bool:
    """In the caller's transaction: a delivery of ``event`` to the app's webhook, if it has one."""
    done = await conn.fetchval(
        """INSERT INTO webhook_deliveries (app_id, event, body)
           SELECT id, $2, $3 FROM apps WHERE id = $1 AND webhook_url IS NOT NULL RETURNING true""",
        app_id, event, {"event": event, "app": app_id, "data": json.loads(msgspec.json.encode(data))})
    return bool(done)


class Delivery(msgspec.Struct, frozen=True):
    id: int
    app_id: str
    event: str
    body: dict[str, Any]
    attempts: int
    url: str
    secret: str


async def due_webhooks(pool: asyncpg.Pool, limit: int = 20) -> list[Delivery]:
    """Deliveries due now, claimed for a minute (so two workers do not post the same one at once).
    Those of an app whose webhook was removed since are given up (with the reason)."""
    await pool.execute(
        """UPDATE webhook_deliveries d SET failed_at = now(), last_error = 'the app has no webhook URL now'
             FROM apps a
            WHERE a.id = d.app_id AND a.webhook_url IS NULL AND d.delivered_at IS NULL AND d.failed_at IS NULL""")
    rows = await pool.fetch(
        """UPDATE webhook_deliveries d SET next_at = now() + interval '1 minute'
             FROM apps a
            WHERE a.id = d.app_id AND d.id IN (
                  SELECT id FROM webhook_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL
                     AND next_at <= now() ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING d.id, d.app_id, d.event, d.body, d.attempts, a.webhook_url AS url, a.webhook_secret AS secret""",
        limit)
    return [Delivery(**dict(r)) for r in rows if r["url"]]


async def webhook_done(pool: asyncpg.Pool, delivery: Delivery, error: str | None) -> None:
    """Record an attempt: delivered, or retried later with backoff, or given up after the last."""
    if error is None:
        await pool.execute("UPDATE webhook_deliveries SET delivered_at = now(), attempts = attempts + 1, "
                           "last_error = NULL WHERE id = $1", delivery.id)
        return
    attempts = delivery.attempts + 1
    await pool.execute(
        """UPDATE webhook_deliveries SET attempts = $2::int, last_error = $3,
                  next_at = now() + make_interval(secs => $4::float8),
                  failed_at = CASE WHEN $2::int >= $5::int THEN now() END
            WHERE id = $1""",
        delivery.id, attempts, error[:500], 5.0 * 2 ** (attempts - 1), WEBHOOK_ATTEMPTS)


KEEP_DELIVERIES_S = 7 * 86_400.0
"""Delivered or given-up webhook deliveries are kept this long (to look into), then deleted."""


async def prune(pool: asyncpg.Pool) -> dict[str, int]:
    """Delete what has served its purpose: idempotency keys (clients' and apps') past their 24 h
    retry window, and webhook deliveries finished more than ``KEEP_DELIVERIES_S`` ago."""
    done = {}
    for name, sql in (
        ("idempotency_keys", "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"),
        ("app_requests", "DELETE FROM app_requests WHERE created_at < now() - interval '24 hours'"),
        ("webhook_deliveries", "DELETE FROM webhook_deliveries WHERE coalesce(delivered_at, failed_at) "
                               "< now() - make_interval(secs => $1)"),
    ):
        status = await (pool.execute(sql, KEEP_DELIVERIES_S) if "$1" in sql else pool.execute(sql))
        done[name] = int(status.split()[-1])
    return done


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Vybe-Signature`` header: ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``.
    A receiver recomputes it with the app's webhook secret and refuses old timestamps (replays):
    ``vybe_client.verify_webhook``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


"""Process settings: read once from ``VYBE_*`` environment variables at entry.

Every process (gateway, worker, migrate, dev) calls :func:`load_settings` once and
passes the frozen result down; nothing else reads the environment. An invalid
value raises :class:`SettingsError` whose message is one line naming the
variable, which the CLI prints before exiting with status 2.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import msgspec

if TYPE_CHECKING:
    from collections.abc import Mapping

PREFIX = "VYBE_"


class SettingsError(Exception):
    """A configuration value is missing or invalid; ``str()`` is one line."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """All configuration. Field ``x`` is read from ``VYBE_X``; see the README table."""

    database_url: str | None = None
    """PostgreSQL DSN. Unset: ``vybe dev`` starts an embedded PostgreSQL 16."""
    database_pooler: str = "none"
    """none | pgbouncer: VYBE_DATABASE_URL is PgBouncer (or another pooler) in transaction mode, so the pools
    prepare nothing by name and skip the session reset (docs/pgbouncer.md)."""
    redis_url: str | None = None
    """Redis URL (redis://, rediss://, unix://). Unset: ``vybe dev`` starts an embedded Redis."""
    redis_cluster: str = "auto"
    """auto | yes | no: whether VYBE_REDIS_URL names a Redis Cluster (auto: ask it, ``INFO cluster``).
    On a cluster every process uses cluster clients and pub/sub is sharded (common/redisconn.py)."""
    pubsub: str = "classic"
    """classic (PUBLISH/SUBSCRIBE, any Redis) | sharded (SPUBLISH/SSUBSCRIBE, Redis >= 7; always on a Cluster)."""
    redis_prefix: str = "vybe:"
    """Prefix of every Redis key and pub/sub channel (several deployments or test runs can share one Redis)."""
    data_dir: str = ".vybe"
    """Where embedded services keep their data (survives restarts)."""
    host: str = "127.0.0.1"
    port: int = 8000
    node_id: str = ""
    """Name of this gateway node in metrics and presence; empty: hostname-pid."""
    processes: int = 0
    """Gateway processes sharing the port (SO_REUSEPORT), each with its own hub; 0: the CPUs this process
    may use (its affinity, capped by a cgroup CPU quota). 1: one process (one per pod)."""
    admin_port: int = 0
    """With several processes, process i also listens on ``admin_port + i`` (every route: scrape each
    one's /metrics there); 0: none."""
    process_index: int = -1
    """Internal: set by ``vybe gateway`` on each process it starts."""
    db_pool_min: int = 2
    db_pool_max: int = 10
    redis_pool_max: int = 64
    """Redis connections per gateway process (pub/sub aside); more requests wait for one (5 s at most; on a
    Redis Cluster: per node, and a request finding none free fails at once as Redis unavailable)."""
    redis_replica_wait_ms: int = 100
    """Redis Cluster: before the outbox forgets an event, wait up to this long for a replica of its master
    to hold it (WAIT 1), so a master lost then cannot take it along. 0: do not wait."""

    jwt_algorithms: str = "HS256"
    """Comma-separated allow-list; never ``none``."""
    jwt_secret: str | None = None
    """HS* shared secret (development). Unset in ``vybe dev``: one is made and kept in data_dir."""
    jwt_public_key: str | None = None
    """RS*/ES* public key: PEM text or a path to a PEM file (production)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = 30.0

    auth_timeout_s: float = 5.0
    max_frame_bytes: int = 0
    """Largest client frame; 0 (default): follows the content limits, so the longest vybe fits even
    written entirely as JSON escapes of surrogate pairs (12 bytes per code point) plus 4 KiB."""
    max_vybe_chars: int = 5_000
    max_comment_chars: int = 2_000
    rate_per_s: float = 20.0
    rate_burst: int = 40
    max_subscriptions: int = 64
    send_queue_bytes: int = 1_048_576
    history_len: int = 1_000
    """Events kept per channel for resume (Redis stream MAXLEN, approximate)."""
    history_ttl_s: int = 172_800
    """A channel's history (and epoch) expires this long after its last event."""
    heartbeat_s: float = 20.0
    """WebSocket ping interval; a peer that misses a pong for this long is dropped."""
    presence_interval_s: float = 2.0
    """How often each node reports looproom viewer counts (dead nodes expire after 3x)."""
    token_warn_s: float = 60.0
    """Warn a client this long before its token expires."""
    write_batch_ms: float = 2.0
    """Group-commit window for reactions."""
    write_batch_max: int = 500

    scorer: str = "blend"
    """blend (the embedded and light heads stacked, with the MPNet second opinion) | embedded | light | detoxify."""
    second_opinion_band: float | None = None
    """The blend's second opinion re-scores texts within this of a cut-off (calibrated logits); unset: the heads'
    own (1.5), 0: off (MPNet is not even loaded)."""
    embedded_backend: str = "auto"
    """auto (ONNX Runtime, else PyTorch) | onnx | torch: how the embedded scorer runs MiniLM."""
    model_cache: str | None = None
    """Where the scorers keep their one-time ONNX exports; unset: ~/.cache/vybe/models. A list like PATH: the first
    directory is written, the others (models made ahead, e.g. the image's) only read."""
    detoxify_checkpoint: str | None = None
    detoxify_hf_dir: str | None = None
    moderation_mode: str = "auto"
    """auto | off | shadow | flag | hide. auto: flag, with every scorer (the light fallback shadowed until
    heads 2026.12.5, while it flagged too many short friendly messages on the first independent set, now
    moderation/data/written/ind1_*)."""
    moderation_thresholds: str = ""
    """Overrides, ``label=flag[:hide],...``; e.g. ``toxicity=0.8:0.97,threat=0.6``."""
    care_threshold: float = 0.5
    """``self_harm_risk`` score at which a post reads as its author's own self-harm disclosure: the author
    gets the care message and the post a care case for moderators; it is never hidden for it.
    Above 1 turns the care route off."""
    care_message: str = (
        "It sounds like things are really hard right now. You are not alone, and you don't have to carry "
        "this by yourself. If you are in danger, please call your local emergency number now.")
    """The caring notice sent to the author (``care.notice``), in the app's own words."""
    care_resources: str = (
        "Find a helpline in your country|https://findahelpline.com;"
        "International Association for Suicide Prevention|https://www.iasp.info/crisis-centres-helplines/")
    """Resources listed with the notice: ``title|url`` items separated by ``;``."""
    model_poll_s: float = 5.0
    """How often a worker checks which model is active (a promoted model is picked up without a restart)."""
    rescore_window_s: float = 86_400.0
    """On promotion, items scored this recently (and every open case) are rescored by the new model."""
    premoderation: bool = False
    """Hold new vybes out of the feed until scored."""
    namespaces: str | None = None
    """A TOML file of channel namespaces (``common/namespaces.py``, README "For app developers"): who may
    subscribe, whether clients may publish and how that is moderated, history, presence. Unset: the
    built-in namespaces only."""
    webhook_timeout_s: float = 5.0
    """How long a webhook delivery may take before it counts as failed (and is retried)."""
    moderate_wait_s: float = 5.0
    """How long ``POST /api/server/moderate`` with ``wait`` waits for the score before answering ``pending``."""
    report_flag_threshold: int = 3
    """Distinct reporters that flag a target."""
    claim_lease_s: float = 300.0
    care_claim_lease_s: float = 1800.0
    """How long "I'm reaching out" holds a care case: reaching a member in distress takes longer than a decision."""
    worker_batch: int = 64
    worker_block_ms: int = 50
    worker_claim_idle_ms: int = 30_000
    worker_max_attempts: int = 3
    sweep_after_s: float = 60.0
    worker_alive_file: str | None = None
    """A file the worker's consumer loop touches at least every few seconds while it turns (outages included), for a
    liveness probe: ``vybe worker --alive SECONDS`` fails when it is older. Unset: none."""
    startup_wait_s: float = 60.0
    """How long a gateway or a worker waits at its start for PostgreSQL to answer with this code's schema (every
    migration applied) before it exits with one line saying what it waited for (``db/startup.py``)."""

    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check_url("VYBE_DATABASE_URL", self.database_url, ("postgres", "postgresql"))
        _check_url("VYBE_REDIS_URL", self.redis_url, ("redis", "rediss", "unix"))
        _check_choice("VYBE_SCORER", self.scorer, ("blend", "embedded", "light", "detoxify"))
        _check_choice("VYBE_PUBSUB", self.pubsub, ("classic", "sharded"))
        _check_choice("VYBE_REDIS_CLUSTER", self.redis_cluster, ("auto", "yes", "no"))
        _check_choice("VYBE_DATABASE_POOLER", self.database_pooler, ("none", "pgbouncer"))
        _check_choice("VYBE_EMBEDDED_BACKEND", self.embedded_backend, ("auto", "onnx", "torch"))
        _check_choice("VYBE_MODERATION_MODE", self.moderation_mode, ("auto", "off", "shadow", "flag", "hide"))
        if self.processes < 0 or not 0 <= self.admin_port < 65536:
            raise SettingsError("VYBE_PROCESSES", "processes must be 0 (the CPUs) or more; admin_port a TCP port")
        if not 0 < self.port < 65536:
            raise SettingsError("VYBE_PORT", f"{self.port} is not a TCP port (1-65535)")
        algorithms = self.algorithms
        if not algorithms or any(a.lower() == "none" for a in algorithms):
            raise SettingsError("VYBE_JWT_ALGORITHMS", "must list signing algorithms, and never 'none'")
        # The database's CHECK constraints (migration 0001) bound the content limits.
        for name, most in (("max_vybe_chars", 5000), ("max_comment_chars", 2000)):
            if not 1 <= getattr(self, name) <= most:
                raise SettingsError(PREFIX + name.upper(), f"must be 1 to {most} (the database's limit)")
        if self.second_opinion_band is not None and not self.second_opinion_band >= 0.0:
            raise SettingsError("VYBE_SECOND_OPINION_BAND", "must be 0 (off) or more")
        if not self.care_threshold >= 0.0:
            raise SettingsError("VYBE_CARE_THRESHOLD", "must be 0 or more (above 1: the care route is off)")
        try:
            self.care_links  # noqa: B018 - parses the setting, raising ValueError
        except ValueError as err:
            raise SettingsError("VYBE_CARE_RESOURCES", str(err)) from err
        if not self.startup_wait_s >= 0:
            raise SettingsError("VYBE_STARTUP_WAIT_S", "must be 0 (do not wait) or more")
        if self.model_poll_s <= 0 or self.rescore_window_s < 0:
            raise SettingsError("VYBE_MODEL_POLL_S", "the poll interval must be positive, the rescore window >= 0")
        if self.namespaces:
            from common import namespaces

            namespaces.load(self.namespaces)  # raises SettingsError naming the file and the key
        if self.max_frame_bytes < 0:
            raise SettingsError("VYBE_MAX_FRAME_BYTES", "must be 0 (follow the content limits) or positive")
        for name in ("redis_pool_max", "rate_burst", "max_subscriptions", "send_queue_bytes",
                     "history_len", "history_ttl_s", "worker_batch", "write_batch_max", "report_flag_threshold",
                     "claim_lease_s", "care_claim_lease_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(PREFIX + name.upper(), "must be a positive number")

    @property
    def frame_limit(self) -> int:
        """The largest client frame accepted (``max_frame_bytes``, or what the content limits need)."""
        return self.max_frame_bytes or 12 * max(self.max_vybe_chars, self.max_comment_chars) + 4096

    @property
    def care_links(self) -> list[dict[str, str]]:
        """``care_resources`` as ``[{"title", "url"}]``; ValueError on an item without both."""
        links = []
        for item in filter(None, (x.strip() for x in self.care_resources.split(";"))):
            title, sep, url = item.partition("|")
            if not sep or not title.strip() or not url.strip().startswith(("https://", "http://", "tel:")):
                raise ValueError(f"{item!r}: expected title|url (https://, http:// or tel:)")
            links.append({"title": title.strip(), "url": url.strip()})
        return links

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.jwt_algorithms.split(",") if a.strip())


def _check_url(variable: str, value: str | None, schemes: tuple[str, ...]) -> None:
    if value is None:
        return
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise SettingsError(variable, f"unparseable URL ({err})") from err
    if parts.scheme not in schemes:
        raise SettingsError(variable, f"URL scheme must be one of {', '.join(schemes)}; got {value!r}")


def _check_choice(variable: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SettingsError(variable, f"must be one of {', '.join(choices)}; got {value!r}")


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build :class:`Settings` from ``VYBE_*`` variables (and explicit overrides)."""
    env = os.environ if environ is None else environ
    fields = {f.name for f in msgspec.structs.fields(Settings)}
    raw: dict[str, object] = {}
    for key, value in env.items():
        if key.startswith(PREFIX) and key[len(PREFIX):].lower() in fields:
            raw[key[len(PREFIX):].lower()] = value if value != "" else None
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None or _nullable(k)}
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as err:
        raise SettingsError(_variable_of(str(err)), _problem_of(str(err))) from err


_NULLABLE = {"namespaces", "database_url", "redis_url", "model_cache", "jwt_secret", "jwt_public_key", "jwt_issuer",
             "jwt_audience", "detoxify_checkpoint", "detoxify_hf_dir", "second_opinion_band"}


def _nullable(name: str) -> bool:
    return name in _NULLABLE


def _variable_of(message: str) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.port`".
    if "at `$." in message:
        return PREFIX + message.rsplit("at `$.", 1)[1].rstrip("`").upper()
    return "VYBE_*"


def _problem_of(message: str) -> str:
    return message.split(" - at `$.", 1)[0]

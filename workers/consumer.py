"""The moderation worker: score batches from ``moderation:jobs`` and act on them.

Reads through a Redis consumer group, scores a batch in a thread, and in ONE
transaction stores the scores and applies the decisions; it acknowledges (and
deletes) the jobs only after COMMIT, then publishes. Entries a dead worker left pending are reclaimed
after ``worker_claim_idle_ms``; one that failed ``worker_max_attempts`` times goes
to the dead-letter stream with its last error (unless the last one failed for an outage of PostgreSQL or Redis:
:data:`OUTAGE`). Scoring is idempotent (one
result per item and model version), so a redelivery never double-acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
from redis.exceptions import ResponseError

from common import events, namespaces, redisconn
from common.bus import Event, Keys, Publisher, stream_id_key
from common.labels import SELF_HARM_RISK
from common.redisconn import REDIS_DOWN, REDIS_UNREACHABLE, Script
from common.tasks import Heartbeat, Supervisor, backoff, cancelled_meanwhile
from db import apps, learning, outbox, writes
from db import moderation as mdb
from db.outbox import Announcement
from db.pool import UNREACHABLE, try_advisory_lock
from db.writes._tx import in_transaction
from moderation import active
from moderation.policy import route_by_policy
from moderation.scorers import ScorerError
from workers import webhooks

if TYPE_CHECKING:
    from common.settings import Settings
    from moderation.policy import Policy
    from moderation.scorers import Scorer

log = logging.getLogger(__name__)
GROUP = "scorers"
# Advisory lock keys (transaction-scoped, db.pool.try_advisory_lock): one sweeper, one rescoring pass at a time.
SWEEP_LOCK = 7354001
RESCORE_LOCK = 7354003
Entry = tuple[str, dict[bytes, bytes]]
DONE = """
local deleted = 0
for i = 2, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  deleted = deleted + redis.call('XDEL', KEYS[1], ARGV[i])
end
return deleted
"""
"""XACK and XDEL of the same jobs, atomically (one key: a cluster runs it on that key's shard). A job stays in the
stream until it is done and leaves it then: acknowledged entries are otherwise kept, and the stream would grow
by one entry per post and comment for as long as Redis runs."""
TRIM_SLICE = 10_000
"""Entries one XTRIM of :meth:`Worker.trim` may delete (about 0.1 ms of Redis's time)."""
MAX_SEQ = 2**64 - 1
"""The largest sequence part of a stream id."""
_STREAM_ID = re.compile(rb"(\d+)-(\d+)")
_JOB_KIND = {"shared_vybe": "vybe", "comment": "comment", "app_item": "app_item"}
OUTAGE = ":outage"
"""The hash (after the job stream's key) marking the jobs whose last attempt failed because PostgreSQL or Redis was
unreachable. A job out of attempts whose mark is there gets a fresh count instead of a dead letter
(:meth:`Worker.reclaim`), up to :data:`OUTAGE_GIVES_UP_S` after it was enqueued; every new delivery deletes the mark,
so a worker that dies on the job still counts. Before, an outage longer than the attempts (90 s by default)
dead-lettered every job in flight, and where PostgreSQL was back when the dead letter was recorded, its item waited
out the sweeper's first retry, ten minutes."""
OUTAGE_GIVES_UP_S = 3600.0
"""How long after it was enqueued a job still gets fresh counts after outages."""
RETRY_FIRST_S, RETRY_LONGEST_S = 600.0, 86_400.0
"""When the sweeper retries an item whose job was dead-lettered: 10 minutes after the first dead letter, twice as
long after each further one, at most a day (``db.moderation.record_failure``)."""


class ModelError(RuntimeError):
    """The model failed on a batch: counted against its jobs' attempts, whatever it raised (an ``OSError`` from a
    model is not an outage of PostgreSQL or Redis)."""


class Worker:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: redisconn.Client, scorer: Scorer,
                 policy: Policy, name: str) -> None:
        self.settings, self.pool, self.redis = settings, pool, redis
        self.scorer, self.policy, self.name = scorer, policy, name
        route_by_policy(scorer, policy)
        self.model: str | None = None
        """The stored model in use (``moderation_models``); None: the heads shipped in the package."""
        self.rescore_pending = True
        """Set at start and by each model change, cleared when a rescoring pass finds nothing left."""
        self.keys = Keys(settings.redis_prefix)
        self.namespaces = namespaces.load(settings.namespaces, history_len=settings.history_len,
                                          history_ttl_s=settings.history_ttl_s)
        self.publisher = Publisher(redis, settings.redis_prefix, settings.history_len,
                                   sharded=redisconn.sharded_pubsub(settings, redis),
                                   history_ttl_s=settings.history_ttl_s, history=self.namespaces.history_of,
                                   replica_wait_ms=settings.redis_replica_wait_ms)
        self.relay = outbox.Relay(pool, self.publisher.publish_rows)
        self.supervisor = Supervisor()
        self.scored = 0
        self._done = Script(redis, DONE)
        self.alive = Heartbeat(settings.worker_alive_file)
        """The consumer loop's sign of life (``vybe worker --alive``): beaten between batches and reclaimed jobs."""

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def trim(self) -> int:
        """Delete the jobs that are done but still in the stream: those a version before c767fbb acknowledged
        without deleting them (:data:`DONE`), at an upgrade or from an old worker still running in a rolling
        update. Every entry older than the oldest one not yet acknowledged goes: the oldest pending entry, or the
        first not yet delivered. (So this stream must have no consumer group but ours.) The bulk goes in slices
        of :data:`TRIM_SLICE` entries, as one XTRIM of months of jobs would hold Redis for seconds (about 10 ms
        per million entries). Runs with each sweep; returns the entries deleted."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.keys.jobs)
        except ResponseError as err:
            if "no such key" in str(err).lower():
                return 0  # no stream yet (or Redis lost it): nothing to trim
            raise
        mine = [g for g in groups if _s(g["name"]) == GROUP]
        if not mine:
            return 0
        # The delivery point first: entries delivered after it are at or past it, so the bound stays safe.
        ms, seq = stream_id_key(_s(mine[0]["last-delivered-id"]))
        keep = (ms + 1, 0) if seq == MAX_SEQ else (ms, seq + 1)
        pending: Any = await self.redis.xpending(self.keys.jobs, GROUP)
        if pending["pending"]:
            keep = min(keep, stream_id_key(_s(pending["min"])))
        minid, deleted = f"{keep[0]}-{keep[1]}", 0
        while sliced := int(await self.redis.xtrim(self.keys.jobs, minid=minid, approximate=True, limit=TRIM_SLICE)):
            deleted += sliced  # whole nodes of the stream at a time, other clients served in between
        deleted += int(await self.redis.xtrim(self.keys.jobs, minid=minid, approximate=False))
        for records in (self.keys.jobs + ":errors", self.keys.jobs + OUTAGE):  # and records of jobs done since
            stale: list[bytes] = []
            async for field, _ in self.redis.hscan_iter(records, count=1000):
                if _older(field, keep):
                    stale.append(field)
                if len(stale) == TRIM_SLICE:
                    await self.redis.hdel(records, *stale)
                    stale = []
            if stale:
                await self.redis.hdel(records, *stale)
        return deleted

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set; the batch in hand is finished first. The sweeper and
        the outbox loops run supervised beside it."""
        sup = self.supervisor
        with contextlib.suppress(*UNREACHABLE, asyncpg.PostgresError):
            await self.sync_model()  # before the first batch, so nothing is scored by a superseded model
        with contextlib.suppress(*REDIS_DOWN):
            await self.ensure_group()  # a fresh Redis has no group yet (the loop retries if this fails)
        sup.add("models", self._model_loop)
        sup.add("sweeper", self._sweep_loop)
        sup.add("webhooks", lambda: webhooks.run(self.pool, self.settings))
        sup.add("outbox-deleter", self.relay.run_deleter)
        attempt = 0
        try:
            while not stop.is_set():
                self.alive.beat()
                try:
                    if attempt:
                        await self.ensure_group()  # the stream may be gone with a Redis that lost its data
                    await self.step()
                    attempt = 0
                except Exception as err:  # noqa: BLE001 - the consumer loop must outlive any outage
                    cancelled_meanwhile(err)
                    attempt += 1
                    log.warning("worker step failed (%s: %s); retrying", type(err).__name__, err)
                    await asyncio.sleep(backoff(attempt))
        finally:
            with contextlib.suppress(*UNREACHABLE, *REDIS_DOWN, asyncpg.PostgresError):
                await asyncio.wait_for(self.relay.flush(), 2.0)
            await sup.stop()

    async def step(self) -> int:
        """One read-score-store-ack round; returns entries handled."""
        reply: Any = await self.redis.xreadgroup(GROUP, self.name, {self.keys.jobs: ">"},
                                            count=self.settings.worker_batch, block=self.settings.worker_block_ms)
        entries: list[Entry] = [(_s(i), f) for _, batch in reply for i, f in batch] if reply else []
        if entries:
            await self._attempt(entries)
            return len(entries)
        return await self.reclaim()

    async def _attempt(self, entries: list[Entry]) -> None:
        """Process ``entries``; a failure is recorded against them, except an outage's (:data:`OUTAGE`)."""
        try:
            await self.process(entries)
        except Exception as err:
            cancelled_meanwhile(err)
            if _is_outage(err):
                # Not the items' failure: marked, so that :meth:`reclaim` gives the jobs a fresh count if their
                # attempts run out this way. Raised on, for the consumer loop's backoff. (Redis down: the mark cannot
                # be written, and a job whose last attempt that was counts as usual.)
                with contextlib.suppress(*REDIS_DOWN):
                    await self.redis.hset(self.keys.jobs + OUTAGE, mapping={i: repr(err)[:500] for i, _ in entries})
                raise
            log.warning("batch of %d failed: %s", len(entries), err)
            await self.redis.hset(self.keys.jobs + ":errors", mapping={i: repr(err)[:500] for i, _ in entries})

    async def process(self, entries: list[Entry]) -> None:
        vybes, comments, app_items = _ids(entries)
        items = await mdb.fetch_items(self.pool, vybes, comments, app_items)
        if items and self.policy.mode != "off":
            scorer = self.scorer  # the model may be swapped while this batch is scored
            try:
                scores = await asyncio.to_thread(scorer.score, [i.content for i in items])
            except Exception as err:  # what the model raises is the items' failure, never an outage
                raise ModelError(f"{type(err).__name__}: {err}") from err
            announce = await self._store(items, scores, (scorer.name, scorer.version), _retried(entries))
        elif app_items:  # moderation off: held publications go out unscored
            announce = Announcement(self._release)
            await in_transaction(self.pool, lambda conn: _nothing(app_items), announce)
        else:
            announce = None
        # Acknowledge after COMMIT: a crash before this line redelivers, and the
        # unique (item, model version) key makes the redelivery a no-op. The events
        # are in the outbox already: the relay publishes them if we die before we do.
        await self.done([i for i, _ in entries])
        if announce is not None:
            await self.relay.publish_now(announce.rows)
        if app_items:  # a server API request may be waiting for these scores (``wait``)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for item_id in app_items:
                        pipe.lpush(f"{self.keys.prefix}scored:{item_id}", 1)
                        pipe.expire(f"{self.keys.prefix}scored:{item_id}", 60)
                    await pipe.execute()
            except REDIS_DOWN as err:  # the batch is done (not to be retried); such a wait ends at its timeout
                log.warning("scored app items not signalled: %s", err)

    async def _store(self, items: list[mdb.Item], scores: list[dict[str, float]],
                     model: tuple[str, str], retried_ids: frozenset[uuid.UUID] = frozenset()) -> Announcement:
        """Scores, decisions, cases and their events in ONE transaction. Items are handled in
        id order (targets, then their cases: the lock order every writer keeps). ``retried_ids``: items enqueued
        again by the sweeper or a rescoring pass, whose failure records (if any) go."""
        scored = sorted(zip(items, scores, strict=True), key=lambda pair: (pair[0].kind, pair[0].id))
        retried = [item for item, _ in scored if item.id in retried_ids]
        announce = Announcement(self._outcome_events)

        async def body(conn: asyncpg.Connection) -> list[Outcome]:
            outcomes: list[Outcome] = []
            for item, score in scored:
                decision = self.policy.decide(score)
                before = await mdb.record_score(conn, item, model, score, decision.action, decision.reasons,
                                                self.settings.premoderation)
                if before is None:
                    continue
                care = cleared = None
                if decision.care:
                    care = await learning.open_care(conn, item.kind, item.id, item.user_id,
                                                    score.get(SELF_HARM_RISK, 0.0), model[1])
                if not decision.reasons:  # under every threshold: a newer model may clear an open case
                    cleared = await learning.mark_cleared(conn, item.kind, item.id, model[1])
                elif decision.action == "shadow":  # recorded only: an open unscored case now shows this score
                    cleared = await learning.mark_scored(conn, item.kind, item.id)
                outcomes.append(Outcome(item, decision.action, care, cleared, before))
            self.scored += len(outcomes)
            if retried:  # only a job the sweeper or a rescoring pass enqueued can follow a dead letter
                await mdb.forget_failures(conn, [_JOB_KIND[i.kind] for i in retried], [i.id for i in retried])
            return outcomes

        await in_transaction(self.pool, body, announce)
        return announce

    async def _outcome_events(self, conn: asyncpg.Connection, outcomes: list[Outcome]) -> list[Event]:
        """What the decisions announce, read in the same transaction (consistent case snapshots)."""
        out: list[Event] = []
        for item, action, care, cleared, before in outcomes:
            # First scored now: under premoderation a vybe was held, never shown, until this score.
            first, held = before == "pending", self.settings.premoderation and item.kind == "shared_vybe"
            app_item = await apps.item_row(conn, item.id) if item.kind == "app_item" else None
            member = app_item is None or app_item.channel is not None  # the author is one of our members
            if care is not None:
                care_events = events.care_opened(care, self.settings.care_message, self.settings.care_links)
                out += care_events if member else care_events[1:]  # an app's own user: the app is told
            if cleared is not None:
                out += [events.case_changed("case.rescored", v) for v in await mdb.case_views(conn, [cleared])]
            if app_item is not None:
                out += await apps.scored_events(conn, app_item, action, care is not None)
            if action == "hide" and app_item is not None:
                if member:
                    out.append(events.outcome(item.user_id, {
                        "target_type": item.kind, "target_id": str(item.id), "action": "hide", "by": "model",
                        "message": None, "excerpt": events.excerpt(item.content), "appeal": None,
                        "appealable": False}))  # appeals are for vybes and comments
            elif action == "hide" and before in mdb.SCORE_MOVES:  # hidden now (a flag or a decision stands)
                meta = (events.vybe_meta(item.user_id, item.privacy_level, item.is_anonymous)
                        if item.kind == "shared_vybe" else None)
                if not (first and held):  # shown until now
                    out += events.visibility(item.kind, str(item.id), _str(item.vybe_id), _str(item.looproom_id),
                                             "hidden", meta)
                out.append(events.outcome(item.user_id, {
                    "target_type": item.kind, "target_id": str(item.id), "action": "hide", "by": "model",
                    "message": None, "excerpt": events.excerpt(item.content), "appeal": None, "appealable": True}))
            if action in ("flag", "hide"):
                case_id = await conn.fetchval(
                    "SELECT id FROM moderation_cases WHERE target_type = $1 AND target_id = $2",
                    item.kind, str(item.id))
                out += [events.case_changed("report.flagged", v) for v in await mdb.case_views(conn, [case_id])]
            if held and action != "hide" and first:
                # First scored now (a rescore, or a score after a moderator let it out, announces nothing).
                with contextlib.suppress(writes.NotFound):  # deleted by its author since
                    out += events.vybe_created(await writes.get_vybe(conn, item.id))
        return out

    async def _release(self, conn: asyncpg.Connection, item_ids: list[uuid.UUID]) -> list[Event]:
        """With moderation off: deliver held publications unscored."""
        out: list[Event] = []
        for item_id in item_ids:
            row = await apps.item_row(conn, item_id)
            if row is not None:
                out += await apps.release(conn, row)
        return out

    async def done(self, entry_ids: list[str]) -> None:
        """Acknowledge jobs and delete them from the stream (:data:`DONE`), and forget the errors earlier attempts
        recorded against them (a job that failed once and then succeeded would otherwise keep its error)."""
        if not entry_ids:
            return
        await self._done(keys=[self.keys.jobs], args=[GROUP, *entry_ids])
        with contextlib.suppress(*REDIS_DOWN):  # the jobs are done; at worst a record stays behind (trim ends it)
            await self.redis.hdel(self.keys.jobs + ":errors", *entry_ids)
            await self.redis.hdel(self.keys.jobs + OUTAGE, *entry_ids)

    async def reclaim(self) -> int:
        """Take over entries idle too long, one at a time, each attempted as soon as it is claimed (a job that kills
        its worker then costs only its own deliveries); dead-letter those out of attempts, unless the last one failed
        for an outage (:data:`OUTAGE`). Returns the entries attempted."""
        pending: Any = await self.redis.xpending_range(self.keys.jobs, GROUP, min="-", max="+",
                                                       count=self.settings.worker_batch,
                                                       idle=self.settings.worker_claim_idle_ms)
        attempted = 0
        for p in pending:
            self.alive.beat()  # up to worker_batch jobs, one at a time: a long pass is not a hung loop
            entry = await self._claim(_s(p["message_id"]))
            if entry is not None:
                await self._attempt([entry])
                attempted += 1
        return attempted

    async def _claim(self, entry_id: str) -> Entry | None:
        """Claim one idle entry: taken first without a delivery (JUSTID: then no other worker decides it), then
        decided by its count read again, now that it is ours (the listing may be minutes old): one out of attempts is
        dead-lettered, unless its last attempt met an outage. None: nothing to attempt (another worker took it, it
        was dead-lettered, or it is gone from the stream)."""
        jobs, most = self.keys.jobs, self.settings.worker_max_attempts
        if not await self.redis.xclaim(jobs, GROUP, self.name, min_idle_time=self.settings.worker_claim_idle_ms,
                                       message_ids=[entry_id], justid=True):
            return None  # another worker took it meanwhile (a mark it wrote is its own), or it is gone
        now: Any = await self.redis.xpending_range(jobs, GROUP, min=entry_id, max=entry_id, count=1)
        if not now:
            return None
        fresh = now[0]["times_delivered"] >= most
        if fresh and not await self._fresh_after_outage(entry_id):
            await self._dead_letter(entry_id)
            return None
        claimed: Any = await self.redis.xclaim(jobs, GROUP, self.name, min_idle_time=0, message_ids=[entry_id],
                                               retrycount=1 if fresh else None)
        await self.redis.hdel(jobs + OUTAGE, entry_id)  # a new delivery, ours: the mark spoke of the last one
        if not claimed or not claimed[0][1]:  # gone from the stream but pending (Redis 6.2: (None, None)): finish it
            await self.done([entry_id])
            return None
        return entry_id, claimed[0][1]

    async def _fresh_after_outage(self, entry_id: str) -> bool:
        """Whether a job out of attempts gets a fresh count: its last attempt failed for an outage, and it was
        enqueued less than :data:`OUTAGE_GIVES_UP_S` ago (so an error taken for an outage cannot keep it for ever)."""
        if await self.redis.hget(self.keys.jobs + OUTAGE, entry_id) is None:
            return False
        enqueued_ms, _ = stream_id_key(entry_id)
        return time.time() - enqueued_ms / 1000 < OUTAGE_GIVES_UP_S

    async def _dead_letter(self, entry_id: str) -> None:
        fields: Any = await self.redis.xrange(self.keys.jobs, entry_id, entry_id)
        if not fields:  # its last attempt finished it meanwhile (a done job leaves the stream): nothing to keep
            await self.done([entry_id])
            return
        error = (await self.redis.hget(self.keys.jobs + OUTAGE, entry_id)  # the last attempt's, past OUTAGE_GIVES_UP_S
                 or await self.redis.hget(self.keys.jobs + ":errors", entry_id))
        job: dict[Any, Any] = fields[0][1]
        await self.redis.xadd(self.keys.dead_letter, {**job, b"entry": entry_id, b"error": error or b"unknown"})
        await self.done([entry_id])
        log.error("moderation job %s dead-lettered, out of attempts", entry_id)
        # So that the sweeper retries the item later, not at every sweep; and after a second round, a moderator
        # hears of an item the model cannot score (a case, ``db.moderation.UNSCORED``).
        announce = Announcement(self._unscored_events)
        try:
            await mdb.record_failure(self.pool, _s(job[b"kind"]), uuid.UUID(_s(job[b"id"])), _s(error or b"unknown"),
                                     RETRY_FIRST_S, RETRY_LONGEST_S, announce)
        except (KeyError, ValueError):
            return  # a malformed job: nothing to retry
        except (*UNREACHABLE, asyncpg.PostgresError) as err:  # the sweeper may then retry it sooner: no harm
            log.warning("dead letter %s not recorded for the sweeper: %s", entry_id, err)
            return
        await self.relay.publish_now(announce.rows)

    @staticmethod
    async def _unscored_events(conn: asyncpg.Connection, case_id: uuid.UUID | None) -> list[Event]:
        if case_id is None:
            return []
        views = await mdb.case_views(conn, [case_id])
        log.error("the model could not score %s %s in %d rounds: case %s for moderators", views[0].target_type,
                  views[0].target_id, mdb.UNSCORED_CASE_ROUNDS, case_id)
        out = [events.case_changed("report.flagged", v) for v in views]
        if views[0].target_type == "app_item":
            app_item = await apps.item_row(conn, uuid.UUID(views[0].target_id))
            if app_item is not None:
                out += await apps.unscored_events(conn, app_item)
        return out

    async def sweep(self) -> int:
        """Enqueue items left unscored. The job is an outbox row of the write, so a gateway dying
        after COMMIT no longer loses it; what remains is Redis losing the job stream (a restart
        without persistence) after the relay published the job."""
        # One sweeper at a time across workers; duplicates would be harmless, just wasteful.
        async with try_advisory_lock(self.pool, SWEEP_LOCK) as conn:
            if conn is None:
                return 0
            stale = await mdb.unscored(conn, self.settings.sweep_after_s)
            for kind, item_id in stale:
                await self.redis.xadd(self.keys.jobs, {"kind": kind, "id": str(item_id), "swept": "1"})
            await mdb.prune_failures(conn)  # records of items no longer retried
            return len(stale)

    async def rescore(self) -> int:
        """After a new model is promoted: enqueue what it should rescore (every open case's content and
        what was scored within ``rescore_window_s``), a page at a time and only while the job stream is
        drained, so rescoring never delays new posts and nothing is enqueued twice. Items the model has
        scored drop out of the query: it is its own progress record, across crashes and restarts."""
        if not self.rescore_pending or self.policy.mode == "off" or not await self._jobs_drained():
            return 0
        async with try_advisory_lock(self.pool, RESCORE_LOCK) as conn:
            if conn is None:
                return 0
            todo = await learning.rescore_candidates(conn, (self.scorer.name, self.scorer.version),
                                                     self.settings.rescore_window_s, 4 * self.settings.worker_batch)
            for kind, item_id in todo:
                await self.redis.xadd(self.keys.jobs, {"kind": kind, "id": str(item_id), "rescore": "1"})
            self.rescore_pending = bool(todo)  # done when a pass finds nothing (the next change sets it)
            return len(todo)

    async def _jobs_drained(self) -> bool:
        """Every job delivered and acknowledged. Redis 7 reports the group's ``lag``; before 7 (the
        embedded Redis 6.2), compare the last delivered id with the stream's last id."""
        groups: Any = await self.redis.xinfo_groups(self.keys.jobs)
        mine = [g for g in groups if _s(g["name"]) == GROUP]
        if not mine or mine[0]["pending"]:
            return False
        if mine[0].get("lag") is not None:
            return bool(mine[0]["lag"] == 0)
        stream: Any = await self.redis.xinfo_stream(self.keys.jobs)
        return _s(mine[0]["last-delivered-id"]) == _s(stream["last-generated-id"])

    async def sync_model(self) -> bool:
        """Load the active model if it is not the one in use; True when it changed. Loading runs in a
        thread (a blend reuses the loaded MiniLM encoder); the swap happens between batches."""
        version = await learning.active_version(self.pool)
        if version == self.model:
            return False
        previous, self.model = self.scorer.version, version  # a mismatch is warned about once, not every poll
        try:
            self.scorer = await active.load_active(
                self.pool, self.settings.scorer, version, current=self.scorer,
                backend=self.settings.embedded_backend, cache_dir=self.settings.model_cache,
                second_band=self.settings.second_opinion_band)
        except active.KindMismatch as err:
            log.warning("%s: keeping %s", err, previous)
            return False
        except ScorerError as err:
            log.error("model %s cannot be loaded (%s): keeping %s", version, err, previous)
            return False
        route_by_policy(self.scorer, self.policy)
        log.info("model %s %s is active (was %s)", self.scorer.name, self.scorer.version, previous)
        self.rescore_pending = True
        return True

    async def _model_loop(self) -> None:
        while True:
            try:
                await self.sync_model()
            except (*UNREACHABLE, asyncpg.PostgresError) as err:
                log.warning("model check failed: %s", err)
            await asyncio.sleep(self.settings.model_poll_s)

    async def _sweep_loop(self) -> None:
        """Until cancelled (the worker's supervisor stops it with the consumer loop)."""
        interval = max(self.settings.sweep_after_s / 2, 0.5)
        while True:
            try:
                swept = await self.sweep()
                if swept:
                    log.info("sweeper re-enqueued %d unscored items", swept)
                rescored = await self.rescore()
                if rescored:
                    log.info("enqueued %d items for rescoring by %s", rescored, self.scorer.version)
                trimmed = await self.trim()  # Redis before 6.2 (no XTRIM MINID) answers with an error here
                if trimmed:
                    log.info("deleted %d finished jobs from %s", trimmed, self.keys.jobs)
            except (*UNREACHABLE, *REDIS_DOWN, asyncpg.PostgresError) as err:
                log.warning("sweep failed: %s", err)
            await asyncio.sleep(interval)


class Outcome(NamedTuple):
    item: mdb.Item
    action: str
    care: learning.CareCase | None
    """The care case this scoring opened (a self-harm disclosure)."""
    cleared: uuid.UUID | None
    """The open case whose view this scoring changed without flagging it (``case.rescored``): found below every
    threshold, or an ``unscored`` case's first score in shadow mode."""
    before: str
    """The content's state before this score (``pending``: its first score; under premoderation it was never
    shown)."""


def _retried(entries: list[Entry]) -> frozenset[uuid.UUID]:
    """The items of jobs the sweeper or a rescoring pass enqueued (the only jobs that can follow a dead letter)."""
    out = set()
    for _, fields in entries:
        if b"swept" in fields or b"rescore" in fields:
            with contextlib.suppress(KeyError, ValueError):
                out.add(uuid.UUID(_s(fields[b"id"])))
    return frozenset(out)


def _ids(entries: list[Entry]) -> tuple[list[uuid.UUID], list[uuid.UUID], list[uuid.UUID]]:
    """The job ids by kind: vybes, comments, app items."""
    by_kind: dict[bytes, list[uuid.UUID]] = {b"vybe": [], b"comment": [], b"app_item": []}
    for _, fields in entries:
        try:
            item_id = uuid.UUID(fields[b"id"].decode())
        except (KeyError, ValueError):
            continue  # malformed job: acknowledged and dropped with the batch
        by_kind.get(fields.get(b"kind", b""), by_kind[b"comment"]).append(item_id)
    return by_kind[b"vybe"], by_kind[b"comment"], by_kind[b"app_item"]


async def _nothing(value: Any) -> Any:
    return value


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _older(entry_id: bytes | str, bound: tuple[int, int]) -> bool:
    """Whether ``entry_id`` is a stream id before ``bound`` (False for anything else)."""
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    match = _STREAM_ID.fullmatch(raw)
    return match is not None and (int(match[1]), int(match[2])) < bound


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _is_outage(err: BaseException) -> bool:
    """PostgreSQL or Redis unreachable (or loading, failing over, read-only), not the items' failure. asyncpg's
    argument and configuration errors are InterfaceErrors, but also ValueErrors: a bad value, not an outage."""
    return isinstance(err, (*UNREACHABLE, *REDIS_UNREACHABLE)) and not isinstance(err, ValueError)

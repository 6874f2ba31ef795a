"""Live viewer counts of the channels whose namespace has ``presence`` (looprooms by default),
summed across every gateway node.

Each node reports its own count of distinct viewers per room it serves into a
Redis hash, with a heartbeat in a sorted set; one Lua script writes this node's
count, drops nodes whose heartbeat expired (a dead node's viewers disappear
within ``3 x presence_interval_s``), sums, and says whether the total changed
since anyone last published it, so only one ``looproom.presence`` event goes out
per change (``<namespace>.presence``) no matter how many nodes notice it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from common.bus import encode_message
from common.redisconn import REDIS_DOWN

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger(__name__)

# Runs before the publish step (common.bus.publishing_script), in the same
# atomic script, so the event that goes out always carries the total just computed
# (two nodes publishing separately could otherwise deliver an older total last).
# KEYS[4..6]: counts hash, heartbeat zset, last total. ARGV[4..7]: node, count, now, ttl.
_PRESENCE_BEFORE = """
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('ZADD', KEYS[5], tonumber(ARGV[6]) + tonumber(ARGV[7]), ARGV[4])
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[6])) do
  redis.call('HDEL', KEYS[4], n)
  redis.call('ZREM', KEYS[5], n)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[4])) do total = total + tonumber(v) end
local last = redis.call('GET', KEYS[6])
for i = 4, 6 do redis.call('EXPIRE', KEYS[i], 86400) end
if last and tonumber(last) == total then return false end
redis.call('SET', KEYS[6], total, 'EX', 86400)
msg = (string.gsub(msg, '"viewers":%-1', '"viewers":' .. total))
"""


class Presence:
    """Owned by the gateway; ``run`` is its one background task."""

    def __init__(self, gw: Gateway, interval_s: float) -> None:
        self.gw = gw
        self.interval = interval_s
        self._script = gw.publisher.script(_PRESENCE_BEFORE)
        self._reported: set[str] = set()
        self._dirty = asyncio.Event()
        # Held around each round of reports: a withdraw must not be overtaken by a tick's
        # report already in flight (a stale count would then stand until heartbeat expiry).
        self._lock = asyncio.Lock()
        self._withdrawn = False

    def touch(self) -> None:
        """A viewer joined or left somewhere: recompute soon rather than at the next tick."""
        self._dirty.set()

    async def tick(self) -> None:
        async with self._lock:
            if self._withdrawn:  # draining: withdraw() took this node's counts out
                return
            rooms = {c for c in self.gw.hub.channels() if self.gw.namespaces.presence_channel(c)}
            # Rooms we reported before but no longer serve get a final 0 from this node.
            # Widened first so that a round failing midway still leaves withdraw() every room.
            self._reported |= rooms
            for room in sorted(self._reported):
                await self._report(room, self.gw.hub.local_viewers(room))
            self._reported = rooms

    async def withdraw(self) -> None:
        """Draining: report 0 for every room this node reported, and nothing from now on.

        The totals drop at once rather than when this node's heartbeat expires; the
        script publishes one ``looproom.presence`` per changed total as usual. A Redis
        error, or Redis taking longer than one interval, is logged and swallowed so the
        drain goes on: the heartbeat expiry still clears the counts.
        """
        self._withdrawn = True  # a tick that starts from now on reports nothing
        try:
            async with asyncio.timeout(self.interval), self._lock:
                rooms, self._reported = sorted(self._reported), set()
                for room in rooms:
                    await self._report(room, 0)
        except REDIS_DOWN as err:  # TimeoutError is an OSError
            log.warning("presence withdraw failed, counts expire within %.0f s: %s: %s",
                        self.interval * 3, type(err).__name__, err)

    async def _report(self, room: str, count: int) -> None:
        k, tag = self.gw.keys, "{" + room + "}"
        keys = [k.stream(room), k.pubsub(room), k.epoch(room),
                f"{k.prefix}p:{tag}:n", f"{k.prefix}p:{tag}:hb", f"{k.prefix}p:{tag}:last"]
        # The total is filled in by the script; -1 marks where.
        name, _, rest = room.partition(":")
        template = encode_message(f"{name}.presence", {"channel": room, f"{name}_id": rest, "viewers": -1})
        length, ttl = self.gw.publisher.history(room)
        await self._script(keys=keys, args=[length, template, ttl, self.gw.node_id, count,
                                            time.time(), self.interval * 3])

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except REDIS_DOWN as err:
                log.warning("presence update failed: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.interval)
            self._dirty.clear()

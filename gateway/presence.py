"""Live viewer counts of looprooms, summed across every gateway node.

Each node reports its own count of distinct viewers per room it serves into a
Redis hash, with a heartbeat in a sorted set; one Lua script writes this node's
count, drops nodes whose heartbeat expired (a dead node's viewers disappear
within ``3 x presence_interval_s``), sums, and says whether the total changed
since anyone last published it, so only one ``looproom.presence`` event goes out
per change no matter how many nodes notice it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from gateway.context import Gateway

log = logging.getLogger(__name__)

# KEYS: counts hash, heartbeat zset, last total. ARGV: node, count, now, ttl.
_PRESENCE_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[4]), ARGV[1])
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])) do
  redis.call('HDEL', KEYS[1], n)
  redis.call('ZREM', KEYS[2], n)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
local last = redis.call('GET', KEYS[3])
redis.call('SET', KEYS[3], total, 'EX', 86400)
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, 86400) end
if last and tonumber(last) == total then return {0, total} end
return {1, total}
"""


class Presence:
    """Owned by the gateway; ``run`` is its one background task."""

    def __init__(self, gw: Gateway, interval_s: float) -> None:
        self.gw = gw
        self.interval = interval_s
        self._script = gw.redis.register_script(_PRESENCE_LUA)
        self._reported: set[str] = set()
        self._dirty = asyncio.Event()

    def touch(self) -> None:
        """A viewer joined or left somewhere: recompute soon rather than at the next tick."""
        self._dirty.set()

    async def tick(self) -> None:
        rooms = {c for c in self.gw.hub.channels() if c.startswith("looproom:")}
        # Rooms we reported before but no longer serve get a final 0 from this node.
        for room in sorted(rooms | self._reported):
            await self._report(room, self.gw.hub.local_viewers(room))
        self._reported = rooms

    async def _report(self, room: str, count: int) -> None:
        prefix, tag = self.gw.keys.prefix, "{" + room + "}"
        keys = [f"{prefix}p:{tag}:n", f"{prefix}p:{tag}:hb", f"{prefix}p:{tag}:last"]
        changed, total = await self._script(
            keys=keys, args=[self.gw.node_id, count, time.time(), self.interval * 3])
        if changed:
            await self.gw.publisher.publish(room, "looproom.presence",
                                            {"looproom_id": room.split(":", 1)[1], "viewers": int(total)})

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except (RedisError, OSError) as err:
                log.warning("presence update failed: %s", err)
            try:
                await asyncio.wait_for(self._dirty.wait(), self.interval)
            except TimeoutError:
                pass
            self._dirty.clear()

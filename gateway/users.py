"""Who connects: users as their tokens name them, synced with PostgreSQL in batches.

An authentication needs the user's block list (the fan-out filter) and the user's row to exist
(before their first write). Done per socket, that was a transaction with two upserts for every
``auth``: 10,000 clients reconnecting after a node failed meant 10,000 commits on the path of
their reconnect. Here the authentications that arrive together share one read
(``db.writes.sync_users``; one batch in flight, the next gathering meanwhile), which writes only
for users that are new or changed: a reconnect storm of known users is one SELECT per batch. The
role and name come from the token.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from db import writes

if TYPE_CHECKING:
    import asyncpg

    from gateway.auth import Identity


class Users:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._pending: dict[str, tuple[writes.Seen, list[asyncio.Future[list[str]]]]] = {}
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        self.batches = 0

    async def on_auth(self, identity: Identity) -> list[str]:
        """The user's block list, once their row exists; raises what the batch raised (PostgreSQL
        unreachable: the caller answers ``unavailable``)."""
        seen = writes.seen(identity.user_id, identity.role, identity.name)
        fut: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        entry = self._pending.get(seen.id)
        if entry is None:
            self._pending[seen.id] = (seen, [fut])
        else:
            self._pending[seen.id] = (seen, [*entry[1], fut])
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        """Start a batch, unless one is running: then what arrives meanwhile waits and goes as the next
        batch when it ends (one batch in flight: batches grow with the load, with no added wait)."""
        self._scheduled = False
        if not self._pending or self._running is not None:
            return
        batch, self._pending = self._pending, {}
        self._running = asyncio.get_running_loop().create_task(self._sync(batch))
        self._running.add_done_callback(self._done)

    def _done(self, _task: asyncio.Task[None]) -> None:
        self._running = None
        self._flush()

    async def _sync(self, batch: dict[str, tuple[writes.Seen, list[asyncio.Future[list[str]]]]]) -> None:
        self.batches += 1
        try:
            blocked = await writes.sync_users(self.pool, [seen for seen, _ in batch.values()])
        except BaseException as err:  # every waiter gets the batch's error (it is re-raised to each)
            for _, futs in batch.values():
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(err)
            if isinstance(err, asyncio.CancelledError):
                raise
            return
        for uid, (_, futs) in batch.items():
            for fut in futs:
                if not fut.done():
                    fut.set_result(blocked.get(uid, []))

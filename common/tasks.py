"""Supervised background loops: a loop that fails is logged, counted and restarted.

A background task that dies silently is the worst kind of outage: the process
answers health checks while the thing it exists for has stopped. Every long-lived
loop of a gateway or a worker runs under a :class:`Supervised`, which restarts it
after any failure with capped, jittered backoff, counts the restarts (metrics)
and says whether it is running (readiness). Cancellation is never caught: the
owner's ``stop()`` always ends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 2.0


def cancelled_meanwhile(err: BaseException) -> None:
    """Re-raise cancellation that a library turned into another exception.

    Some clients (redis-py among them) convert a CancelledError raised inside their
    I/O into a connection error; a loop that catches those and goes on would then
    never stop. Call this first in every broad ``except``.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from err


async def cancel_and_wait(task: asyncio.Task[Any], timeout: float = 5.0) -> None:
    """Cancel ``task`` and wait for it to end, cancelling again while it runs on: redis-py
    swallows a cancellation that lands inside its I/O (redis/redis-py#2028, #2665), so
    one ``cancel()`` may not stop a loop that talks to Redis."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not task.done():
        task.cancel()
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            log.error("task %s did not stop after %.0f s of cancellation", task.get_name(), timeout)
            return
        await asyncio.wait([task], timeout=min(0.1, left))
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed while stopping", task.get_name(), exc_info=task.exception())


def backoff(attempt: int, cap: float = MAX_BACKOFF_S, base: float = 0.1) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): doubling from ``base``, capped, jittered +-25 %."""
    return float(min(cap, base * 2 ** min(attempt, 16)) * random.uniform(0.75, 1.25))


class Supervised:
    """Runs ``run()`` for ever, restarting it whenever it raises or returns."""

    def __init__(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.name = name
        self._run = run
        self.restarts = 0
        """How many times the loop failed and was restarted (``vybe_task_restarts_total``)."""
        self.failing = False
        """True from a failure until the restarted loop has run for a while."""
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Started, not stopped, and not waiting out a failure."""
        return self._task is not None and not self._task.done() and not self.failing

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            started = loop.time()
            healthy = loop.call_later(1.0, self._recovered)
            try:
                await self._run()
                log.error("task %s returned; restarting it", self.name)
            except Exception as err:  # a supervisor restarts whatever killed the loop
                cancelled_meanwhile(err)
                log.exception("task %s failed; restarting it", self.name)
            finally:
                healthy.cancel()
            self.failing = True
            self.restarts += 1
            attempt = 0 if loop.time() - started > 10 else attempt + 1
            await asyncio.sleep(backoff(attempt))

    def _recovered(self) -> None:
        self.failing = False


class Supervisor:
    """The set of supervised loops one process owns (started and stopped together)."""

    def __init__(self) -> None:
        self.tasks: dict[str, Supervised] = {}

    def add(self, name: str, run: Callable[[], Awaitable[None]]) -> Supervised:
        task = self.tasks[name] = Supervised(name, run)
        task.start()
        return task

    def status(self) -> dict[str, bool]:
        """Each loop's name and whether it is running (for readiness)."""
        return {name: task.running for name, task in self.tasks.items()}

    def restarts(self) -> dict[str, int]:
        return {name: task.restarts for name, task in self.tasks.items()}

    async def stop(self) -> None:
        for task in reversed(list(self.tasks.values())):
            await task.stop()


class Heartbeat:
    """Touches ``path`` (if any) at most every :attr:`EVERY_S` seconds: the consumer loop's sign of life, for a
    liveness probe (``vybe worker --alive``), beaten between batches. A consumer loop stuck in a call (a hung
    statement, a deadlocked model) stops it; so does a batch slower than the probe's limit."""

    EVERY_S = 5.0

    def __init__(self, path: str | None) -> None:
        self.path, self.last = (Path(path) if path else None), float("-inf")

    def forget(self) -> None:
        """Delete the file (at a process's start): one left by the process before in the same pod or container
        would pass the probe for a worker that has not turned yet."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def beat(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self.last < self.EVERY_S:
            return
        self.last = now
        try:
            self.path.touch()
        except OSError as err:  # a full or read-only disk must not stop moderation: the probe will say so
            log.warning("cannot touch the alive file %s: %s", self.path, err)


def alive_within(path: str | None, seconds: float) -> bool:
    """Whether the worker's loop touched ``path`` within ``seconds`` (False: no file, or older)."""
    if not path:
        return False
    try:
        return time.time() - Path(path).stat().st_mtime <= seconds
    except OSError:
        return False

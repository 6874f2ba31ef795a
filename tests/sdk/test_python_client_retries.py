"""The Python SDK's answers to refusals, against a scripted server (the gateway cannot be made to refuse on cue):
a command refused `unavailable` or `internal` goes again with the same id after the answer's retry_after, at most
as often as `_RETRIES` and `_INTERNAL_RETRIES` say, and ahead of the commands queued behind it (as the JavaScript
SDK does), so a refused write does not fall behind later ones."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.server import serve

from vybe_client import CommandError, VybeClient
from vybe_client.client import retry_delay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from websockets.asyncio.server import ServerConnection

pytestmark = pytest.mark.anyio

Refuse = dict[str, Any] | None
"""What the script answers a command with: an error frame's fields, or None for an ack."""


class Script:
    """A server that acks `auth` and answers each other command by ``answer(frame, nth time its id was seen)``;
    it records (monotonic time, frame) of every command."""

    def __init__(self, answer: Callable[[dict[str, Any], int], Refuse]) -> None:
        self.answer = answer
        self.got: list[tuple[float, dict[str, Any]]] = []

    async def handle(self, ws: ServerConnection) -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "auth":
                await ws.send(json.dumps({"type": "ack", "id": frame["id"], "result": {}}))
                continue
            self.got.append((time.monotonic(), frame))
            seen = sum(1 for _, f in self.got if f["id"] == frame["id"])
            refusal = self.answer(frame, seen)
            reply = ({"type": "ack", "id": frame["id"], "result": {"n": seen}} if refusal is None
                     else {"type": "error", "id": frame["id"], **refusal})
            await ws.send(json.dumps(reply))

    def ids(self) -> list[str]:
        return [f["id"] for _, f in self.got]


async def _client(script: Script, **options: Any) -> AsyncIterator[VybeClient]:
    async with serve(script.handle, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with VybeClient(f"ws://127.0.0.1:{port}", token="t", **options) as client:
            yield client


async def test_unavailable_and_internal_go_again_with_the_same_id_after_retry_after() -> None:
    """`internal` once (retry_after 0.1 s), then `unavailable` twice (0.3 s): the command is acked on its fourth
    sending, each with its id, none before the wait it was told (doubled per attempt); a second `internal` is the
    caller's error."""

    unavailable = {"code": "unavailable", "message": "db down", "retry_after": 0.3}
    internal = {"code": "internal", "message": "oops", "retry_after": 0.1}
    first: list[Refuse] = [internal, unavailable, unavailable, None]

    def answer(frame: dict[str, Any], seen: int) -> Refuse:
        return first[seen - 1] if frame["id"] == "w-1" else internal

    script = Script(answer)
    async for client in _client(script):
        result = await client.send("publish", id="w-1", channel="c", data={})
        assert result == {"n": 4}
        times = [t for t, f in script.got if f["id"] == "w-1"]
        assert script.ids() == ["w-1"] * 4
        # Each wait at least the answer's retry_after, doubled per attempt (the JavaScript SDK's waits; they were flat).
        assert times[1] - times[0] >= 0.09 and times[2] - times[1] >= 0.59 and times[3] - times[2] >= 1.19
        with pytest.raises(CommandError) as err:
            await client.send("publish", id="w-2", channel="c", data={})
        assert err.value.code == "internal" and script.ids().count("w-2") == 2


async def test_internal_goes_again_once_also_after_other_refusals() -> None:
    """`unavailable`, then `internal`, then `internal`: the first `internal` goes again (once, whatever came before
    it, as in the JavaScript SDK; before, only an `internal` on the first sending did), the second is the answer."""
    answers: list[Refuse] = [{"code": "unavailable", "message": "busy", "retry_after": 0.05},
                             {"code": "internal", "message": "oops", "retry_after": 0.05},
                             {"code": "internal", "message": "oops again", "retry_after": 0.05}]

    script = Script(lambda frame, seen: answers[seen - 1] if seen <= 3 else None)
    async for client in _client(script):
        with pytest.raises(CommandError) as err:
            await client.send("publish", id="w-1", channel="c", data={})
    assert err.value.code == "internal" and script.ids() == ["w-1"] * 3


async def test_a_refused_command_goes_again_ahead_of_the_commands_queued_behind_it() -> None:
    """Three writes under the client's rate limit (one every 0.25 s): the first is refused `unavailable` with a short
    retry_after, and is sent again before the third, which was waiting in the queue behind the second."""

    def answer(frame: dict[str, Any], seen: int) -> Refuse:
        return {"code": "unavailable", "message": "busy", "retry_after": 0.05} if frame["id"] == "a" and seen == 1 \
            else None

    script = Script(answer)
    async for client in _client(script, rate=(4.0, 1)):
        await asyncio.gather(*(client.send("publish", id=cid, channel="c", data={}) for cid in ("a", "b", "c")))
    assert script.ids() == ["a", "b", "a", "c"] or script.ids() == ["a", "a", "b", "c"], script.ids()


def test_retry_waits_grow_from_retry_after_and_are_spread() -> None:
    """The waits: never under the answer's retry_after (0.5 s without one, 0.1 s at least), doubling per attempt,
    and jittered upwards by up to half, so one burst of refusals does not come back as one burst."""
    for retry_after, base in ((0.3, 0.3), (None, 0.5), (0.0, 0.1), (2.0, 2.0)):
        for attempt in (1, 2, 3, 4):
            waits = [retry_delay(retry_after, attempt) for _ in range(200)]
            low = base * 2 ** (attempt - 1)
            assert all(low <= w < 1.5 * low for w in waits), (retry_after, attempt)
            assert max(waits) - min(waits) > 0.2 * low


async def test_a_retry_the_caller_would_not_wait_for_is_not_made_and_the_refusal_is_the_answer() -> None:
    """Always `unavailable` (retry_after 0.4 s), a 2.5 s command timeout: the retries that fit are made (0.4 s, then
    0.8 s, each up to 1.5x), the one that would go too late is not, and the caller gets `unavailable` with its
    retry_after, before the timeout, never `timeout` (which would not say that nothing was applied)."""

    def answer(frame: dict[str, Any], seen: int) -> Refuse:
        return {"code": "unavailable", "message": "db down", "retry_after": 0.4}

    script = Script(answer)
    async for client in _client(script, command_timeout=2.5):
        started = time.monotonic()
        with pytest.raises(CommandError) as err:
            await client.send("publish", id="w-1", channel="c", data={})
        took = time.monotonic() - started
    assert err.value.code == "unavailable" and err.value.retry_after == 0.4
    assert script.ids().count("w-1") == 3 and took < 2.5, (script.ids(), took)

"""Looproom viewers spread over two gateway nodes (presence tests)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ROOM = "looproom:11111111-2222-3333-4444-555555555555"


def viewer_count_is(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m.get("event") == "looproom.presence" and m["data"]["viewers"] == n


async def viewers_on_two_nodes(start_gateway: Callable[..., Awaitable[Any]], connect: Callable[..., Awaitable[Any]],
                               interval_s: float) -> tuple[Any, Any, list[Any]]:
    """Nodes a and b; three viewers of :data:`ROOM`, two on a and one on b."""
    a = await start_gateway(presence_interval_s=interval_s)
    b = await start_gateway(presence_interval_s=interval_s)
    viewers = [await connect(node, node.token(f"v{i}")) for i, node in enumerate([a, a, b])]
    for v in viewers:
        await v.ok("subscribe", channel=ROOM)
    return a, b, viewers

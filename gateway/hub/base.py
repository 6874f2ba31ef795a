"""What the hub needs from a transport: subscribe, unsubscribe, history, publish."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from common.bus import Meta


class Unavailable(Exception):
    """The transport's server is unreachable: nothing was subscribed; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class HistoryEntry(NamedTuple):
    epoch: str
    stream_id: str
    message: bytes


OnMessage = Callable[[str, str, str, bytes], None]
"""(channel, epoch, stream_id, message) for each live event, in publish order."""
OnReconnect = Callable[[Iterable[str]], Awaitable[None]]
"""Called after the upstream came back and resubscribed these channels."""
OnRecovering = Callable[[Iterable[str]], None]
"""Called before the upstream resubscribes these channels after losing them: from then on the hub
holds their live events until ``on_reconnect`` has backfilled them (one arriving first would move a
channel's position past events that only history still has)."""


class Backend(ABC):
    """A transport for channel events. One instance per gateway process."""

    on_message: OnMessage
    on_reconnect: OnReconnect
    on_recovering: OnRecovering = staticmethod(lambda channels: None)
    transient_errors: tuple[type[BaseException], ...] = (OSError,)
    """What this transport raises while its server is unreachable (callers retry or degrade)."""

    @abstractmethod
    async def start(self) -> None:
        """Connect and start receiving."""

    @abstractmethod
    async def close(self) -> None:
        """Stop receiving and release connections."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Return once live events of ``channel`` are being received."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``."""

    @abstractmethod
    async def history(self, channel: str, epoch: str, after: tuple[int, int]) -> list[HistoryEntry] | None:
        """Events after ``after`` in ``epoch``, in order; None when they cannot all be given
        (the epoch changed, or older events were trimmed away)."""

    async def position(self, channel: str) -> str | None:
        """The offset of ``channel``'s newest kept event; for a channel with none yet, the offset before its
        first event (a resume from it gets every event since). None: this backend keeps no history."""
        return None

    async def current(self, channel: str) -> list[HistoryEntry]:
        """Everything ``channel``'s history holds now, oldest first (after a reset, what is new)."""
        return []

    @abstractmethod
    async def publish(self, channel: str, event: str, data: object, meta: Meta | None = None) -> str:
        """Append and broadcast; return the event's offset."""

    @property
    @abstractmethod
    def healthy(self) -> bool:
        """True while the upstream connection is up and subscribed."""

    async def probe(self) -> bool:
        """True when a message sent through the transport comes back (readiness).

        Backends that can do a real round trip override this; "connected" is the fallback.
        """
        return self.healthy

"""The fan-out hub: one upstream subscription per channel per process, fanned out
locally to bounded per-socket queues. ``base`` is the backend interface,
``redis`` the Redis backend, ``hub`` the orchestrator."""

from gateway.hub.base import Backend, HistoryEntry, Unavailable
from gateway.hub.hub import Hub, Subscriber

__all__ = ["Backend", "HistoryEntry", "Hub", "Subscriber", "Unavailable"]

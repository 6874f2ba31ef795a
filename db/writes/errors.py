"""Domain errors of the write path: one base, a stable ``code`` each.

The gateway sends ``code`` and ``message`` to the client as they are. Driver
errors are translated at the boundary (``raise Invalid(...) from err``); a
failure that is not ours (connection lost, bug) is not a ``WriteError``.
"""

from __future__ import annotations


class WriteError(Exception):
    """A write refused for a reason the client can act on."""

    default_code = "write_error"

    def __init__(self, message: str, code: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message
        self.retry_after = retry_after
        """Seconds after which a retry may succeed (the store was unreachable), else None."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class NotFound(WriteError):
    """The target does not exist (or the caller may not see it)."""

    default_code = "not_found"


class Invalid(WriteError):
    """The input is malformed: ``invalid_content``, ``content_too_long``, ``invalid_value``, ``invalid_cursor``."""

    default_code = "invalid_content"


class Forbidden(WriteError):
    """The caller may not do this (e.g. delete someone else's content)."""

    default_code = "forbidden"


class Unavailable(WriteError):
    """The target is hidden or removed by moderation: ``content_unavailable``."""

    default_code = "content_unavailable"


class Conflict(WriteError):
    """A request id reused for another operation, or a write that lost a race."""

    default_code = "conflict"


class WriterClosed(WriteError):
    """The reaction writer stopped before this operation was committed (the node is shutting down): retried, on
    this socket's reconnect to another node, it succeeds."""

    default_code = "unavailable"

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after=retry_after)  # `unavailable` always says when to retry

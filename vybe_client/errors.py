"""What the client raises: a command's refusal, the end of a client, a server-API error."""

from __future__ import annotations


class VybeError(Exception):
    """Base of every error this package raises."""


class CommandError(VybeError):
    """A command that did not succeed.

    ``code`` is the server's stable error code (``forbidden``, ``not_found``, ``rate_limited``, ...;
    the table in docs/protocol.md), or one of the client's own:

    - ``timeout``: no answer within ``command_timeout`` (a write may still have been applied:
      retry it with the same ``request_id``, which the server deduplicates);
    - ``disconnected``: the connection dropped while an internal command was in flight;
    - ``signed_out``: the client stopped because its token was refused or expired (close 4003/4004);
    - ``closed``: the client was closed (or gave up reconnecting) before the answer came;
    - ``duplicate_id``: a command with the same ``request_id`` is already in flight.

    ``retry_after`` (seconds) is set where the server says waiting helps.
    """

    def __init__(self, code: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}" if message and message != code else code)
        self.code = code
        self.message = message or code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"CommandError({self.code!r}, {self.message!r}, retry_after={self.retry_after!r})"


class ClientStopped(VybeError):
    """The client stopped for good (it does not reconnect): ``close_code`` and ``reason`` say why.

    Raised by ``connect()`` / ``async with`` when the first connection cannot be made within
    ``max_attempts``, and at the end of ``events()`` when the client stopped on its own.
    """

    def __init__(self, close_code: int, reason: str = "") -> None:
        super().__init__(f"connection stopped ({close_code}{': ' + reason if reason else ''})")
        self.close_code = close_code
        self.reason = reason


class AuthLost(ClientStopped):
    """The server refused the token (close 4003) or it expired unrefreshed (4004): the client
    needs a new token (``get_token`` is asked once before giving up)."""


class ServerError(VybeError):
    """An error answer of the server API (``VybeServer``): the HTTP ``status`` and the body's
    ``code``, ``message`` and ``retry_after``. ``status`` is 0 when no answer came
    (``code`` is then ``unreachable`` or ``timeout``)."""

    def __init__(self, status: int, code: str, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if message else f"{status} {code}")
        self.status = status
        self.code = code
        self.message = message or code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return (f"ServerError({self.status!r}, {self.code!r}, {self.message!r}, "
                f"retry_after={self.retry_after!r})")

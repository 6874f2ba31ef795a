"""The outbox row's format, shared by the writer (``db.outbox``) and the publisher (``common.bus``)."""

EVENT_SEPARATOR = "\x1e"
"""Between the events of one outbox row: JSON never holds a raw control character, so it is unambiguous
(and the publish script splits on it as the Lua pattern ``[^\\30]``)."""

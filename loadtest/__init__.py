"""``vybe loadtest``: simulated users against running gateways (see ``vybe loadtest --help``).

``main(argv)`` is the entry point; :func:`loadtest.cli.run_async` runs one
load test inside an existing event loop (the tests use it).

A client, not part of the server: it imports only itself (and third-party
libraries), so it can run from any machine against any deployed gateway.
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from loadtest.cli import main as _main

    return _main(argv)


__all__ = ["main"]

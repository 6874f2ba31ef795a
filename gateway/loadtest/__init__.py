"""``vybe loadtest``: simulated users against running gateways (see ``vybe loadtest --help``).

``main(argv)`` is the entry point; :func:`gateway.loadtest.cli.run_async` runs one
load test inside an existing event loop (the tests use it).
"""

from __future__ import annotations


def main(argv: list[str]) -> int:
    from gateway.loadtest.cli import main as _main

    return _main(argv)


__all__ = ["main"]

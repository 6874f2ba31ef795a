"""``python tests/faults/poison_worker.py``: ``vybe worker`` whose model cannot score a text holding :data:`MARK`
(it raises, as a model that fails on some inputs does; every other text is scored as usual), and whose sweeper
retries such an item :data:`RETRY_FIRST_S` seconds after its first dead letter instead of ten minutes, so that the
path of content the model cannot score (``db.moderation.record_failure``) runs within a fault test."""

from __future__ import annotations

import sys
from typing import Any

MARK = "zq-unscorable-zq"
RETRY_FIRST_S = 4.0


class Poisoned:
    """The worker's scorer, failing on :data:`MARK`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def score(self, texts: list[str]) -> list[dict[str, float]]:
        if any(MARK in t for t in texts):
            raise RuntimeError("the model cannot score this text")
        scores: list[dict[str, float]] = self._inner.score(texts)
        return scores


def main() -> int:
    from cli.main import main as vybe
    from workers import consumer
    from workers import main as worker_main

    load = worker_main.load_scorer
    worker_main.load_scorer = lambda *a, **kw: Poisoned(load(*a, **kw))
    consumer.RETRY_FIRST_S = RETRY_FIRST_S
    sys.argv = ["vybe", "worker"]
    return vybe()


if __name__ == "__main__":
    sys.exit(main())

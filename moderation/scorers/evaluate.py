"""Evaluate a scorer on the held-out set: ``python -m moderation.scorers.evaluate``.

Prints JSON: ROC-AUC per label and overall ("any toxic label" vs clean, scored
by the maximum over labels), precision/recall at the policy thresholds, the
flag rate per category and, with ``--errors N``, the worst misses and false
positives; with ``--quotes``, recall on the harmful texts wrapped in quotes.
Metrics are pure Python, so the light scorer can be evaluated on the base install.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.labels import SELF_HARM_RISK
from moderation.policy import DEFAULT_CARE, PolicyError, flagged, parse_thresholds

from . import load_scorer
from .base import LABELS, Scorer
from .trainset import EVAL_PATH, load_jsonl

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def roc_auc(y: Sequence[int], s: Sequence[float]) -> float | None:
    """Mann-Whitney ROC-AUC with tie averaging; None when only one class is present."""
    pos = sum(y)
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    order = sorted(range(len(s)), key=lambda i: s[i])
    ranks = [0.0] * len(s)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and s[order[j + 1]] == s[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # average rank of a tie block
        i = j + 1
    rank_sum = sum(r for r, yy in zip(ranks, y, strict=True) if yy)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def prec_rec(y: Sequence[int], pred: Sequence[bool]) -> dict[str, float | int]:
    """Precision, recall and counts of a binary prediction."""
    tp = sum(1 for a, b in zip(y, pred, strict=True) if a and b)
    fp = sum(1 for a, b in zip(y, pred, strict=True) if not a and b)
    fn = sum(1 for a, b in zip(y, pred, strict=True) if a and not b)
    return {"precision": round(tp / (tp + fp), 4) if tp + fp else 0.0,
            "recall": round(tp / (tp + fn), 4) if tp + fn else 0.0, "tp": tp, "fp": fp, "fn": fn}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def metrics(rows: list[dict[str, Any]], scores: list[dict[str, float]],
            thresholds: Mapping[str, float]) -> dict[str, Any]:
    """Per-label and overall metrics of ``scores`` against the rows' labels."""
    per_label = {}
    for lab in LABELS:
        y = [int(r["labels"][lab]) for r in rows]
        s = [sc.get(lab, 0.0) for sc in scores]
        per_label[lab] = {"positives": sum(y), "roc_auc": _r(roc_auc(y, s)), "threshold": thresholds[lab],
                          **prec_rec(y, [v >= thresholds[lab] for v in s])}
    y_any = [int(any(r["labels"].values())) for r in rows]
    s_any = [max(sc.get(lab, 0.0) for lab in LABELS) for sc in scores]  # abuse labels only, not signals
    flags = [bool(flagged(sc, thresholds)) for sc in scores]
    overall = {"positives": sum(y_any), "negatives": len(rows) - sum(y_any), "roc_auc": _r(roc_auc(y_any, s_any)),
               **prec_rec(y_any, flags)}
    aucs = [v["roc_auc"] for v in per_label.values() if v["roc_auc"] is not None]
    overall["mean_label_roc_auc"] = _r(sum(aucs) / len(aucs))
    benign = [f for f, y in zip(flags, y_any, strict=True) if not y]
    overall["benign_flag_rate"] = _r(sum(benign) / len(benign)) if benign else None
    report = {"overall": overall, "per_label": per_label, "flag_rate_by_category": _by_category(rows, flags)}
    if any(r.get("care") is not None for r in rows) and any(SELF_HARM_RISK in sc for sc in scores):
        report["care"] = care_metrics(rows, scores)
    if any("source" in r for r in rows):
        report["by_source"] = {
            src: {"n": len(idx), "roc_auc": _r(roc_auc([y_any[i] for i in idx], [s_any[i] for i in idx])),
                  **prec_rec([y_any[i] for i in idx], [flags[i] for i in idx])}
            for src, idx in _indices(rows, "source").items()}
    return report


def care_metrics(rows: list[dict[str, Any]], scores: list[dict[str, float]],
                 threshold: float = DEFAULT_CARE) -> dict[str, Any]:
    """The care route: self-harm disclosures (``care`` = 1) found by ``self_harm_risk`` at the default
    threshold, and which other texts it sends to care (by category: encouragement aimed at others must
    stay on the abuse path)."""
    known = [(r, sc) for r, sc in zip(rows, scores, strict=True) if r.get("care") is not None]
    y = [int(r["care"]) for r, _ in known]
    s = [sc.get(SELF_HARM_RISK, 0.0) for _, sc in known]
    pred = [v >= threshold for v in s]
    others: dict[str, int] = defaultdict(int)
    for (r, _), p, yy in zip(known, pred, y, strict=True):
        if p and not yy:
            others[str(r.get("category", "?"))] += 1
    return {"positives": sum(y), "threshold": threshold, "roc_auc": _r(roc_auc(y, s)), **prec_rec(y, pred),
            "false_care_by_category": dict(sorted(others.items()))}


def _indices(rows: list[dict[str, Any]], key: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        out[str(r.get(key, "?"))].append(i)
    return dict(sorted(out.items()))


def load_rows(path: Path) -> list[dict[str, Any]]:
    """One JSONL file, or every ``*.jsonl`` of a directory (in name order: one file per source)."""
    if path.is_dir():
        return [row for f in sorted(path.glob("*.jsonl")) for row in load_jsonl(f)]
    return load_jsonl(path)


def _by_category(rows: list[dict[str, Any]], flags: list[bool]) -> dict[str, float]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r, f in zip(rows, flags, strict=True):
        c = counts[r.get("category", "?")]
        c[0] += int(f)
        c[1] += 1
    return {k: round(a / n, 3) for k, (a, n) in sorted(counts.items())}


def worst(rows: list[dict[str, Any]], scores: list[dict[str, float]], thresholds: Mapping[str, float],
          n: int) -> dict[str, list[Any]]:
    """Missed toxic texts (lowest max score) and flagged clean texts (highest)."""
    misses, fps = [], []
    for r, sc in zip(rows, scores, strict=True):
        toxic, hits = any(r["labels"].values()), flagged(sc, thresholds)
        top = max(LABELS, key=lambda k: sc.get(k, 0.0))
        item = [round(sc[top], 3), top, r.get("category"), r["text"]]
        if toxic and not hits:
            misses.append(item)
        elif not toxic and hits:
            fps.append(item)
    return {"missed": sorted(misses)[:n], "false_positives": sorted(fps, reverse=True)[:n]}


def evaluate(scorer: Scorer, rows: list[dict[str, Any]], thresholds: Mapping[str, float],
             errors: int = 0) -> dict[str, Any]:
    """Score ``rows`` in batches of 64 and compute the report."""
    texts = [r["text"] for r in rows]
    t0 = time.perf_counter()
    scores: list[dict[str, float]] = []
    for i in range(0, len(texts), 64):
        scores += scorer.score(texts[i:i + 64])
    elapsed = time.perf_counter() - t0
    report = {"scorer": scorer.name, "version": scorer.version, "n": len(rows),
              "texts_per_s": round(len(rows) / elapsed, 1), **metrics(rows, scores, thresholds)}
    if errors:
        report["errors"] = worst(rows, scores, thresholds, errors)
    return report


# Ways to wrap a harmful text in quotes. Quoting a whole attack, or padding it with words that do not report
# it, must not hide it (quoted speech has features of its own in the light head, only next to a reporting
# word). "he said" makes it read as a report: some loss there is inherent to a lexical model.
WRAPS: dict[str, str] = {"double": '"{}"', "single": "'{}'", "padded_before": "lol ok fine '{}'",
                         "padded_after": '"{}" lol lol lol', "he_said": 'he said to me "{}"'}


def quote_robustness(scorer: Scorer, rows: list[dict[str, Any]], thresholds: Mapping[str, float]) -> dict[str, Any]:
    """Recall on the harmful rows as written and wrapped in quotes (``WRAPS``), at ``thresholds``."""
    texts = [r["text"] for r in rows if any(r["labels"].values())]

    def recall(batch: list[str]) -> float:
        scores = [s for i in range(0, len(batch), 64) for s in scorer.score(batch[i:i + 64])]
        return round(sum(bool(flagged(s, thresholds)) for s in scores) / len(batch), 4) if batch else 0.0

    return {"harmful": len(texts), "as_written": recall(texts),
            **{name: recall([wrap.format(t) for t in texts]) for name, wrap in WRAPS.items()}}


def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description="Evaluate a toxicity scorer on the held-out set.")
    ap.add_argument("--scorer", default="blend", choices=("blend", "embedded", "light", "detoxify"))
    ap.add_argument("--data", type=Path, default=EVAL_PATH,
                    help="JSONL with text, labels, category (a directory: all its *.jsonl, e.g. "
                         "moderation/data/independent11, a set written apart from the training data)")
    ap.add_argument("--thresholds", default=None,
                    help="flag thresholds over the policy defaults, as VYBE_MODERATION_THRESHOLDS: "
                         "toxicity=0.8,insult=0.6")
    ap.add_argument("--detoxify-checkpoint", default=None)
    ap.add_argument("--detoxify-hf-dir", default=None)
    ap.add_argument("--fast", action="store_true", help="Detoxify int8 + length-sorted path")
    ap.add_argument("--errors", type=int, default=0, help="list the N worst misses and false positives")
    ap.add_argument("--quotes", action="store_true",
                    help="also: recall on the harmful texts wrapped in quotes (evasion by quoting)")
    ap.add_argument("--second-opinion-band", type=float, default=None,
                    help="the blend's second opinion band, as VYBE_SECOND_OPINION_BAND (0: the stacked blend alone)")
    args = ap.parse_args(argv)
    if args.second_opinion_band is not None and not args.second_opinion_band >= 0:
        ap.error("--second-opinion-band: 0 (off) or more")
    try:
        thresholds = parse_thresholds(args.thresholds)[0]
    except PolicyError as err:
        ap.error(str(err))
    scorer = load_scorer(args.scorer, detoxify_checkpoint=args.detoxify_checkpoint,
                         detoxify_hf_dir=args.detoxify_hf_dir, detoxify_fast=args.fast,
                         second_band=args.second_opinion_band)
    from moderation.policy import DEFAULT_CARE, Policy, route_by_policy

    route_by_policy(scorer, Policy(flag=thresholds, care=DEFAULT_CARE))  # a cascade routes by these cut-offs too
    rows = load_rows(args.data)
    report = evaluate(scorer, rows, thresholds, args.errors)
    if args.quotes:
        report["quote_robustness"] = quote_robustness(scorer, rows, thresholds)
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

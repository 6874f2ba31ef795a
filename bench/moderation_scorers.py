"""CPU throughput of the moderation scorers: ``python bench/moderation_scorers.py [--quick]``.

Prints one JSON report: texts/s of each available scorer, batched (64) and
unbatched, on short (~10 words) and ~70-word posts; and for Detoxify at
bert-base shape (random init, config built locally, no download) fp32 vs
dynamic-int8 vs length-sorted vs both, with the max |score difference| between
fp32 and the fast path on the evaluation set.

The embedded scorer is measured on its three encoders (ONNX Runtime int8-rowwise,
the default of the shipped head; ONNX Runtime fp32; the PyTorch fp32 reference)
*interleaved* over ``--rounds`` rounds, so load from other work on a shared
machine hits them alike; the report gives every round, the medians, the
speedups per round, the max |score difference| between the fp32 backends and
between int8 and fp32 (same head) on the whole eval set, and the embeddings'
cosine int8 vs fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from moderation.scorers import LABELS, ScorerError, load_scorer  # noqa: E402 - after sys.path and the offline env
from moderation.scorers.trainset import EVAL_PATH, load_jsonl  # noqa: E402 - after sys.path and the offline env

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


def corpora() -> tuple[list[str], list[str], list[str]]:
    """(eval texts, ~10-word posts, ~70-word posts) built from the eval set."""
    texts = [str(r["text"]) for r in load_jsonl(EVAL_PATH)]
    short = [t for t in texts if 7 <= len(t.split()) <= 13]
    words = " ".join(texts).split()
    long_ = [" ".join(words[i:i + 70]) for i in range(0, len(words) - 70, 23)]
    return texts, short, long_


def rate(fn: Callable[[Sequence[str]], Any], texts: Sequence[str], batch: int) -> float:
    """Texts per second scoring ``texts`` in batches of ``batch`` (after one warm-up call)."""
    fn(texts[:batch])
    t0 = time.perf_counter()
    for i in range(0, len(texts), batch):
        fn(texts[i:i + batch])
    return round(len(texts) / (time.perf_counter() - t0), 1)


def bench_scorer(scorer: Any, short: list[str], long_: list[str], n: dict[str, int]) -> dict[str, float]:
    """Batched (64) and unbatched rates on short and long posts; for the cascade, also the share of short posts
    it gave the second opinion (these posts come from the old evaluation set: about half are harmful and many
    are hard cases, so more of them are near a cut-off than in an app's everyday traffic)."""
    out = {
        "short_batch64": rate(scorer.score, short[:n["batched"]], 64),
        "short_unbatched": rate(scorer.score, short[:n["single"]], 1),
        "long70w_batch64": rate(scorer.score, long_[:n["batched"]], 64),
        "long70w_unbatched": rate(scorer.score, long_[:n["single"]], 1),
    }
    if hasattr(scorer, "routed"):
        scorer.routed = scorer.scored = 0
        scorer.score(short[:n["batched"]])
        out["short_routed_share"] = round(scorer.routed / max(scorer.scored, 1), 3)
    return out


def bench_bands(cascade: Any, short: list[str], bands: Sequence[float], rounds: int) -> dict[str, Any]:
    """The cascade's batch-64 short-post rate and routed share at each band, the bands interleaved per round
    (medians over ``rounds``)."""
    trained, out = cascade.band, {}
    rates: dict[float, list[float]] = {b: [] for b in bands}
    try:
        for _ in range(rounds):
            for band in bands:
                cascade.band, cascade.routed, cascade.scored = band, 0, 0
                rates[band].append(rate(cascade.score, short, 64))
                out[str(band)] = {"routed_share": round(cascade.routed / max(cascade.scored, 1), 3)}
    finally:
        cascade.band = trained
    for band, got in rates.items():
        out[str(band)]["short_batch64_median"] = sorted(got)[len(got) // 2]
    return out


def bench_embedded_backends(evals: list[str], short: list[str], long_: list[str], n: dict[str, int],
                            rounds: int) -> dict[str, Any]:
    """The embedded scorer's encoders (ONNX int8, ONNX fp32, PyTorch fp32; one head), interleaved rounds of
    batch-64 short and ~70-word posts."""
    import numpy as np

    from moderation.scorers.embedded import EmbeddedScorer, load_encoder, shipped_finetune

    tuned = shipped_finetune()  # the shipped head's fine-tuned top layers, on every backend
    int8 = EmbeddedScorer(encoder=load_encoder("int8-rowwise", backend="onnx", finetune=tuned))
    scorers = {"onnx_int8": int8,
               "onnx_fp32": EmbeddedScorer(encoder=load_encoder("none", backend="onnx", finetune=tuned)),
               "torch_fp32": EmbeddedScorer(encoder=load_encoder("none", backend="torch", finetune=tuned))}
    rounds_out: dict[str, dict[str, list[float]]] = {c: {k: [] for k in scorers} for c in ("short", "long70w")}
    for _ in range(rounds):
        for key, scorer in scorers.items():
            rounds_out["short"][key].append(rate(scorer.score, short[:n["batched"]], 64))
            rounds_out["long70w"][key].append(rate(scorer.score, long_[:n["long"]], 64))

    def med(v: list[float]) -> float:
        return sorted(v)[len(v) // 2]

    def speedups(a: str, b: str) -> dict[str, Any]:
        per = {c: [round(x / y, 2) for x, y in zip(r[a], r[b], strict=True)] for c, r in rounds_out.items()}
        return {"per_round": per, "median": {c: med(v) for c, v in per.items()}}

    emb = {k: np.asarray(scorers[k].encoder.encode(evals)) for k in ("onnx_int8", "onnx_fp32")}
    a, b = emb["onnx_int8"], emb["onnx_fp32"]
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    scores = {k: s.score(evals) for k, s in scorers.items()}
    return {"batch64_rounds": rounds_out,
            "batch64_median": {c: {k: med(v) for k, v in r.items()} for c, r in rounds_out.items()},
            "speedup_int8_vs_fp32_onnx": speedups("onnx_int8", "onnx_fp32"),
            "speedup_fp32_onnx_vs_torch": speedups("onnx_fp32", "torch_fp32"),
            "int8_short_unbatched": rate(int8.score, short[:n["single"]], 1),
            "max_abs_diff_fp32_onnx_vs_torch_eval": max_diff(scores["onnx_fp32"], scores["torch_fp32"]),
            "max_abs_diff_int8_vs_fp32_eval": max_diff(scores["onnx_int8"], scores["onnx_fp32"]),
            "cosine_int8_vs_fp32_eval": {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)},
            "eval_texts": len(evals)}


def max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """Largest absolute per-label difference between two score lists."""
    return round(max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in LABELS), 5)


def bench_detoxify(evals: list[str], short: list[str], long_: list[str], n: dict[str, int]) -> dict[str, Any]:
    """bert-base-shaped Detoxify: four CPU paths and their agreement with fp32."""
    from moderation.scorers.detox import DetoxifyScorer
    # Test support, not part of the package: bench runs from a checkout, which has tests/.
    sys.path.insert(0, str(ROOT / "tests" / "moderation"))
    from detox_fixtures import write_bert_base  # type: ignore[import-not-found]

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, hf_dir = write_bert_base(Path(tmp))
        modes = {"fp32": (False, False), "int8": (True, False), "length_sorted": (False, True),
                 "int8+sorted": (True, True)}
        out: dict[str, Any] = {"config": "BertConfig() defaults: 12 layers, hidden 768, vocab 30522, random init"}
        ref: list[dict[str, float]] = []
        for mode, (quant, sort) in modes.items():
            scorer = DetoxifyScorer(ckpt, hf_dir, quantize=quant, sort_by_length=sort)
            out[mode] = {"short_batch64": rate(scorer.score, short[:n["detox"]], 64),
                         "long70w_batch64": rate(scorer.score, long_[:n["detox"]], 64)}
            scores = scorer.score(evals[:n["agree"]])
            if mode == "fp32":
                ref = scores
                out[mode]["short_unbatched"] = rate(scorer.score, short[:n["detox_single"]], 1)
            else:
                out[mode]["max_abs_diff_vs_fp32"] = max_diff(ref, scores)
        out["agreement_texts"] = len(ref)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the JSON report."""
    ap = argparse.ArgumentParser(description="Benchmark the moderation scorers on CPU.")
    ap.add_argument("--quick", action="store_true", help="fewer texts (about a minute)")
    ap.add_argument("--skip-detoxify", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved encoder rounds (default 5)")
    ap.add_argument("--bands", type=float, nargs="*", default=(),
                    help="also the cascade's short-post rate at each of these second opinion bands (0: off), "
                         "interleaved over --rounds")
    args = ap.parse_args(argv)
    n = ({"batched": 128, "single": 32, "long": 64, "detox": 64, "detox_single": 8, "agree": 64} if args.quick else
         {"batched": 512, "single": 128, "long": 128, "detox": 128, "detox_single": 16, "agree": 10_000})
    evals, short, long_ = corpora()
    short = (short * (n["batched"] // len(short) + 1))[:n["batched"]]
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                              "texts": {"short_words_mean": round(sum(len(t.split()) for t in short) / len(short), 1),
                                        "long_words": 70}, "scorers": {}}
    try:
        import torch

        report["machine"]["torch"] = torch.__version__
        report["machine"]["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    for kind in ("light", "embedded", "blend"):
        scorer = load_scorer(kind)
        embedded = getattr(scorer, "embedded", scorer)
        label = (f"{kind} ({scorer.name}, {getattr(embedded, 'backend', 'python')}"
                 f"{', ' + embedded.encoder.quantize if hasattr(embedded, 'encoder') else ''})")
        report["scorers"][label] = bench_scorer(scorer, short, long_, n)
        if hasattr(scorer, "blend"):  # the cascade: its stacked blend alone too
            report["scorers"][f"{kind} without the second opinion ({scorer.blend.name})"] = bench_scorer(
                scorer.blend, short, long_, n)
            if args.bands:
                report["cascade_bands"] = bench_bands(scorer, short[:n["batched"]], args.bands, args.rounds)
    try:
        report["embedded_backends"] = bench_embedded_backends(evals, short, long_, n, args.rounds)
    except (ImportError, ScorerError) as exc:
        report["embedded_backends"] = {"skipped": str(exc)}
    if not args.skip_detoxify:
        try:
            report["detoxify_bert_base"] = bench_detoxify(evals, short, long_, n)
        except (ImportError, ScorerError) as exc:
            report["detoxify_bert_base"] = {"skipped": str(exc)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

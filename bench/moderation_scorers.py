"""CPU throughput of the moderation scorers: ``python bench/moderation_scorers.py [--quick]``.

Prints one JSON report: texts/s of each available scorer, batched (64) and
unbatched, on short (~10 words) and ~70-word posts; and for Detoxify at
bert-base shape (random init, config built locally, no download) fp32 vs
dynamic-int8 vs length-sorted vs both, with the max |score difference| between
fp32 and the fast path on the evaluation set.

The embedded scorer is measured on both encoder backends (ONNX Runtime, the
default, and the PyTorch reference) *interleaved* over ``--rounds`` rounds, so
load from other work on a shared machine hits both alike; the report gives
every round, the medians, the speedup per round and the max |score
difference| between the backends on the whole eval set.
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
    texts = [r["text"] for r in load_jsonl(EVAL_PATH)]
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
    """Batched (64) and unbatched rates on short and long posts."""
    return {
        "short_batch64": rate(scorer.score, short[:n["batched"]], 64),
        "short_unbatched": rate(scorer.score, short[:n["single"]], 1),
        "long70w_batch64": rate(scorer.score, long_[:n["batched"]], 64),
        "long70w_unbatched": rate(scorer.score, long_[:n["single"]], 1),
    }


def bench_embedded_backends(evals: list[str], short: list[str], n: dict[str, int], rounds: int) -> dict[str, Any]:
    """ONNX vs PyTorch encoder of the embedded scorer, interleaved rounds of batch-64 short posts."""
    from moderation.scorers.embedded import EmbeddedScorer

    scorers = {"onnx": EmbeddedScorer(backend="onnx"), "torch": EmbeddedScorer(backend="torch")}
    rounds_out: dict[str, list[float]] = {k: [] for k in scorers}
    for _ in range(rounds):
        for key, scorer in scorers.items():
            rounds_out[key].append(rate(scorer.score, short[:n["batched"]], 64))
    speedups = [round(o / t, 2) for o, t in zip(rounds_out["onnx"], rounds_out["torch"], strict=True)]
    med = {k: sorted(v)[len(v) // 2] for k, v in rounds_out.items()}
    return {"short_batch64_rounds": rounds_out, "short_batch64_median": med,
            "speedup_per_round": speedups, "speedup_median": sorted(speedups)[len(speedups) // 2],
            "onnx_short_unbatched": rate(scorers["onnx"].score, short[:n["single"]], 1),
            "max_abs_diff_onnx_vs_torch_eval": max_diff(scorers["onnx"].score(evals), scorers["torch"].score(evals)),
            "eval_texts": len(evals)}


def max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """Largest absolute per-label difference between two score lists."""
    return round(max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in LABELS), 5)


def bench_detoxify(evals: list[str], short: list[str], long_: list[str], n: dict[str, int]) -> dict[str, Any]:
    """bert-base-shaped Detoxify: four CPU paths and their agreement with fp32."""
    from moderation.scorers.detox import DetoxifyScorer
    # Test support, not part of the package: bench runs from a checkout, which has tests/.
    sys.path.insert(0, str(ROOT / "tests" / "moderation"))
    from detox_fixtures import write_bert_base

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
    ap.add_argument("--rounds", type=int, default=5, help="interleaved ONNX/PyTorch rounds (default 5)")
    args = ap.parse_args(argv)
    n = ({"batched": 128, "single": 32, "detox": 64, "detox_single": 8, "agree": 64} if args.quick else
         {"batched": 512, "single": 128, "detox": 128, "detox_single": 16, "agree": 10_000})
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
        label = f"{kind} ({scorer.name}, {getattr(scorer, 'backend', 'python')})"
        report["scorers"][label] = bench_scorer(scorer, short, long_, n)
    try:
        report["embedded_backends"] = bench_embedded_backends(evals, short, n, args.rounds)
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

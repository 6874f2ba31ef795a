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
    """The image's layout (int8 models and MPNet's unpacked weights only, as ``prepare --slim`` leaves them) in a
    read-only directory: a worker whose writable cache is empty loads every model from it, writes and locks
    nothing anywhere, and scores as the worker that exported them does."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("torch")
    from cli.moderation import prepare
    from moderation.scorers import load_scorer, mpnet

    made = default_cache_dir()
    first = prepare(Settings(scorer="blend", model_cache=str(made)))  # exports here unless other tests did
    assert first["problems"] == []
    try:
        installed = bool(mpnet._parts())
    except Exception:  # noqa: BLE001 - the mpnet extra is not installed: the blend alone
        installed = False
    assert first["second_opinion"] is installed
    ahead = tmp_path / "image"
    ahead.mkdir()
    for name in first["files"]:
        if "int8" in name or not name.endswith(".onnx"):  # what --slim keeps
            (ahead / name).symlink_to(made / name)
    snapshot = {p.name: p.stat().st_mtime_ns for p in ahead.iterdir()}
    empty = tmp_path / "writable"
    second = prepare(Settings(scorer="blend", model_cache=f"{empty}:{ahead}"))
    assert second["problems"] == [] and second["warnings"] == first["warnings"]
    assert (second["scorer"], second["version"], second["second_opinion"]) == \
        (first["scorer"], first["version"], first["second_opinion"])
    assert not empty.exists()  # nothing unpacked, exported or locked there
    assert {p.name: p.stat().st_mtime_ns for p in ahead.iterdir()} == snapshot  # nor in the image's directory
    texts = ["good morning everyone", "you are a pathetic waste of space", "I know where you park"]
    assert load_scorer("blend", model_cache=f"{empty}:{ahead}").score(texts) == \
        load_scorer("blend", model_cache=str(made)).score(texts)
    assert not empty.exists()


def test_exports_are_readable_by_other_users(tmp_path: Path) -> None:
    """Exports are written to a temporary file first (``mkstemp``: mode 0600) and then published with a plain
    file's mode: an image's models, made as root, must be readable by the user the worker runs as."""
    import os
    import tempfile

    from moderation.scorers.onnx_encoder import publish

    fd, tmp = tempfile.mkstemp(dir=tmp_path)
    os.close(fd)
    old = os.umask(0o022)
    try:
        publish(tmp, tmp_path / "model.onnx")
    finally:
        os.umask(old)
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o644


def test_prepare_slim_deletes_only_fp32_exports_with_an_int8_model(tmp_path: Path, monkeypatch:
                                                                   pytest.MonkeyPatch) -> None:
    import cli.moderation as cm
    from moderation.scorers.onnx_int8 import int8_path

    cache = tmp_path / "cache"
    cache.mkdir()
    derived, lone = cache / "all-minilm-l6-v2-abc.onnx", cache / "mpnet-def.onnx"
    for path in (derived, int8_path(derived), lone):
        path.write_bytes(b"x")
    monkeypatch.setattr("workers.main.load_scorer", lambda *a, **k: type("S", (), {"name": "light",
                                                                                         "version": "v"})())
    report = cm.prepare(Settings(scorer="light", model_cache=str(cache)), slim=True)
    assert report["removed"] == [derived.name]
    assert sorted(p.name for p in cache.iterdir()) == sorted([int8_path(derived).name, lone.name])
    assert json.dumps(report)  # the CLI prints it as JSON

"""The independent evaluation sets (moderation/data/independent11 and 12): well formed, frozen, unseen in training."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

from moderation.scorers import LABELS
from moderation.scorers.evaluate import load_rows
from moderation.scorers.trainset import DATA_DIR, EVAL_PATH, SUPPLEMENTARY_DIR, TRAIN_PATH, WRITTEN_DIR, load_jsonl

ELEVENTH = DATA_DIR / "independent11"
"""The eleventh set (2026-12-07, session 17): the same brief in three more new voices (wellness posts and live rooms,
dating and consultation chat, hobby forums), frozen with experiment 18's rule before any model was scored on it."""
TWELFTH = DATA_DIR / "independent12"
"""The twelfth set (2026-12-07, session 17): the same brief in three more new voices (rural and island wellness posts,
dating and booked-service chat, hobby forums), frozen before any model was scored on it, while experiment 18
trained; reported beside set 11, deciding nothing."""
SETS = (ELEVENTH, TWELFTH)
"""The sets written apart from the training data. Sets 1-4 became training data with heads 2026.12.14, sets 5-8
with heads 2026.12.16, sets 9-10 with heads 2026.12.18 (moderation/data/written/ind*): they no longer measure unseen
text."""


def _norm(text: object) -> str:
    """Lower-case words only; a text without any (emoji only) stays itself."""
    return " ".join(re.findall(r"[a-z0-9']+", str(text).lower())) or str(text).strip()


def _frozen(folder: Path = ELEVENTH) -> dict[str, str]:
    lines = (folder / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def test_the_sets_are_frozen() -> None:
    """Every file of each set is listed in its SHA256SUMS with its digest: nothing was edited after it
    was frozen (a changed set needs new sums and a note saying why, before any training)."""
    for folder in SETS:
        files = sorted(p.name for p in folder.glob("*.jsonl"))
        assert files and files == sorted(_frozen(folder)), folder
        for name, digest in _frozen(folder).items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_rows_are_well_formed_and_split_by_source() -> None:
    """Each row has the text, a category, its file's source, every label as 0/1, and `care` (a
    self-harm disclosure: harmless for the abuse labels); no text twice across the sets."""
    rows = [r for folder in SETS for r in load_rows(folder)]
    assert len(rows) >= 880
    for path in [p for folder in SETS for p in folder.glob("*.jsonl")]:
        assert {r["source"] for r in load_jsonl(path)} == {path.stem}
    for r in rows:
        labels = r["labels"]
        assert isinstance(labels, dict) and set(labels) == set(LABELS), r
        assert all(v in (0, 1) for v in labels.values()) and r["care"] in (0, 1), r
        assert isinstance(r["text"], str) and r["text"].strip(), r
        if r["care"]:
            assert not any(labels.values()), r
    texts = Counter(_norm(r["text"]) for r in rows)
    assert [t for t, n in texts.items() if n > 1] == []
    toxic = sum(1 for r in rows if any(r["labels"].values()))  # type: ignore[union-attr]
    assert 0.3 < toxic / len(rows) < 0.6


def test_no_text_of_the_sets_is_in_the_training_data_or_the_old_eval_set() -> None:
    """Written apart: no text (normalised) of any set appears in train.jsonl, the hand-written training
    texts (moderation/data/written/, supplementary/ and the candidates) or eval.jsonl."""
    paths = [TRAIN_PATH, EVAL_PATH, *sorted(WRITTEN_DIR.glob("*.jsonl")), *sorted(SUPPLEMENTARY_DIR.glob("*.jsonl")),
             *sorted((DATA_DIR / "candidates").glob("*.jsonl"))]
    seen = {_norm(r["text"]) for path in paths for r in load_jsonl(Path(path))}
    for folder in SETS:
        assert [r["text"] for r in load_rows(folder) if _norm(r["text"]) in seen] == [], folder

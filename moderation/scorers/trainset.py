"""Deterministic generator of the synthetic training set (templates x slot fillers).

Run ``python -m moderation.scorers.trainset`` to (re)write
``moderation/data/train.jsonl``; ``train.py`` calls :func:`generate` directly.
Pure Python and seeded, so the same code always yields the same texts.
"""

from __future__ import annotations

import json
import random
import re
from typing import TYPE_CHECKING, cast

from ._templates import CODES, GROUPS, PREFIXES, SLOTS, SUFFIXES
from .base import DATA_DIR, LABELS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

_SLOT_RE = re.compile(r"\{(\w+)\}")
TRAIN_PATH: Path = DATA_DIR / "train.jsonl"
EVAL_PATH: Path = DATA_DIR / "eval.jsonl"
WRITTEN_DIR: Path = DATA_DIR / "written"
"""Hand-written training texts in many voices (one file per writer), beside the generated ones."""
SUPPLEMENTARY_DIR: Path = DATA_DIR / "supplementary"
"""Hand-written texts aimed at known misses, trained on at template weight (:func:`load_supplementary`)."""
SUPPLEMENTARY = "supplementary"
CANDIDATES_DIR: Path = DATA_DIR / "candidates"
"""Hand-written texts measured and not adopted as training rows. Their contrast pairs are read by :func:`load_pairs`
for a fine-tune with a pair loss (``FinetuneRecipe.pair_weight``; off in the shipped recipe)."""


def _fill(template: str, rng: random.Random) -> str:
    """Replace each ``{slot}`` with a random filler ({n} is a small number)."""

    def pick(m: re.Match[str]) -> str:
        slot = m.group(1)
        return str(rng.randint(2, 120)) if slot == "n" else rng.choice(SLOTS[slot])

    return _SLOT_RE.sub(pick, template)


def _typo(text: str, rng: random.Random) -> str:
    """Swap or drop one letter inside a random longer word, like a phone typo."""
    ws = text.split(" ")
    idx = [i for i, w in enumerate(ws) if len(w) > 4 and w.isalpha()]
    if not idx:
        return text
    i = rng.choice(idx)
    w, j = ws[i], rng.randrange(1, len(ws[i]) - 2)
    ws[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.5 else w[:j] + w[j + 1:]
    return " ".join(ws)


def _augment(text: str, rng: random.Random) -> str:
    """Vary register: filler prefixes/suffixes, casing and typos."""
    text = rng.choice(PREFIXES) + text + rng.choice(SUFFIXES)
    r = rng.random()
    if r < 0.25:
        text = text.lower()
    elif r < 0.30:
        text = text.upper()
    elif r < 0.45 and text:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.15:
        text = _typo(text, rng)
    return text.strip()


def label_dict(codes: str) -> dict[str, int]:
    """Expand short label codes ("TOI") into a full 0/1 dict over LABELS."""
    on = {CODES[c] for c in codes}
    return {lab: int(lab in on) for lab in LABELS}


def generate(seed: int = 13) -> list[dict[str, object]]:
    """All training rows ``{"text", "labels", "group", "template"}``; unique texts, stable order."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for gi, (codes, count, templates) in enumerate(GROUPS):
        labels = label_dict(codes)
        made, tries = 0, 0
        while made < count and tries < count * 20:
            tries += 1
            ti = rng.randrange(len(templates))
            text = _augment(_fill(templates[ti], rng), rng)
            key = text.lower()
            if key in seen:
                continue
            seen.add(key)
            # "template" lets training hold out whole templates in cross-validation.
            rows.append({"text": text, "labels": labels, "group": gi, "template": f"{gi}.{ti}"})
            made += 1
    return rows


def load_jsonl(path: Path) -> list[dict[str, object]]:
    """Rows of a JSON-lines file (blank lines and ``//`` comments skipped)."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if line and not line.startswith("//"):
                rows.append(json.loads(line))
    return rows


def check_written_row(row: dict[str, object], where: str) -> None:
    """Refuse a hand-written row that breaks the labelling conventions (raises ValueError).

    Every label is 0/1 over exactly LABELS, ``care`` is 0/1, a harmful text has toxicity=1 (by
    convention toxicity means "any harm"), and a self-harm disclosure (care=1) is harmless.
    """
    labels = row.get("labels")
    if not isinstance(row.get("text"), str) or not isinstance(labels, dict) or set(labels) != set(LABELS):
        raise ValueError(f"{where}: needs a text and labels over exactly {LABELS}")
    care = row.get("care", 0)
    if any(v not in (0, 1) for v in labels.values()) or care not in (0, 1):
        raise ValueError(f"{where}: labels and care must be 0 or 1")
    if any(labels.values()) and not labels["toxicity"]:
        raise ValueError(f"{where}: a harmful text must have toxicity=1")
    if care and any(labels.values()):
        raise ValueError(f"{where}: a self-harm disclosure (care=1) carries no abuse label")


def load_written(directory: Path = WRITTEN_DIR) -> list[dict[str, object]]:
    """The hand-written training rows ``{"text", "labels", "care", "template", "source", "category"}``.

    ``source`` is the file's stem (one writer); each row is its own template.
    """
    rows: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.jsonl")):
        for i, row in enumerate(load_jsonl(path)):
            check_written_row(row, f"{path.name} row {i}")
            rows.append({"text": row["text"], "labels": row["labels"], "care": int(cast("int", row.get("care", 0))),
                         "template": f"{path.stem}.{i}", "source": path.stem,
                         "category": row.get("category", "?")})
    return rows


def load_supplementary(directory: Path = SUPPLEMENTARY_DIR) -> list[dict[str, object]]:
    """Hand-written rows aimed at known misses (``data/supplementary/``): trained on like template
    rows (their weight, in every fold, never a held-out source), as each file covers a few
    categories only. ``source`` is ``"supplementary"``; ``category`` is kept."""
    return [{**row, "source": SUPPLEMENTARY} for row in load_written(directory)]


def load_pairs(directories: Sequence[Path] = (SUPPLEMENTARY_DIR, CANDIDATES_DIR)
               ) -> list[tuple[dict[str, object], dict[str, object]]]:
    """The contrast pairs: two rows of one file set with the same ``source`` and ``pair`` number, written as one
    situation in one voice with close words, whose labels or care differ (a flirt and the harassment it could
    turn into; a care disclosure and venting). Each row as :func:`load_written` gives it, in a stable order.
    A pair number found once, or more than twice, or on two rows with the same targets, is a data error."""
    halves: dict[tuple[str, int], list[dict[str, object]]] = {}
    for directory in directories:
        for path in sorted(directory.glob("*.jsonl")):
            for i, row in enumerate(load_jsonl(path)):
                if "pair" in row:
                    check_written_row(row, f"{path.name} row {i}")
                    if not isinstance(row["pair"], int) or isinstance(row["pair"], bool):
                        raise ValueError(f"{path.name} row {i}: pair must be a whole number, not {row['pair']!r}")
                    key = (str(row.get("source", path.stem)), row["pair"])
                    halves.setdefault(key, []).append(
                        {"text": row["text"], "labels": row["labels"], "care": int(cast("int", row.get("care", 0))),
                         "template": f"{path.stem}.{i}", "source": key[0], "category": row.get("category", "?")})
    pairs = []
    for key in sorted(halves):
        rows = halves[key]
        if len(rows) != 2:
            raise ValueError(f"contrast pair {key}: {len(rows)} rows, not two")
        if (rows[0]["labels"], rows[0]["care"]) == (rows[1]["labels"], rows[1]["care"]):
            raise ValueError(f"contrast pair {key}: two rows with the same targets")
        pairs.append((rows[0], rows[1]))
    return pairs


def write_jsonl(rows: list[dict[str, object]], path: Path) -> None:
    """Write rows as UTF-8 JSON lines."""
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    """Regenerate ``moderation/data/train.jsonl``."""
    rows = generate()
    write_jsonl(rows, TRAIN_PATH)
    print(json.dumps({"written": str(TRAIN_PATH), "rows": len(rows)}))


if __name__ == "__main__":
    main()

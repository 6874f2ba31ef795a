"""``vybe moderation retrain``: a model that learns from this app's moderators.

Every moderator decision is a label (``db.learning``): hide/remove = harmful, with the labels the
moderator confirmed; dismiss/restore = fine. Retraining:

1. splits the decisions, stably by case, into a training part and a held-out part (30 %);
2. trains new heads on the shipped training data plus the training decisions, which weigh
   :data:`DECISION_WEIGHT` times a shipped row (they are this community's own judgement);
3. scores the held-out decisions and the frozen independent evaluation set with the model in use
   and with the new one, at the policy's thresholds;
4. promotes the new model only if it is better on the held-out decisions (F1 of the flag decision,
   then ROC-AUC) and not worse on the independent set (ROC-AUC down by at most
   :data:`MAX_INDEPENDENT_DROP`); it is stored either way, with the comparison, and
   ``vybe moderation promote VERSION`` overrides the judgement.

Workers pick the promoted model up within ``VYBE_MODEL_POLL_S`` and rescore open cases and recent
items with it. ``vybe moderation rollback`` returns to the model it replaced.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.labels import LABELS
from db import learning
from moderation.active import encoder_of

if TYPE_CHECKING:
    import asyncpg

    from moderation.policy import Policy
    from moderation.scorers import Scorer

DECISION_WEIGHT = 3.0
HOLDOUT_SHARE = 0.3
MAX_INDEPENDENT_DROP = 0.01
INDEPENDENT_DIR = Path(__file__).resolve().parent / "data" / "independent11"
"""A frozen set written apart from every training file (793 texts, 2026-12-07): a retrain is judged on it, never
trained on it (sets 1-4 became training data with heads 2026.12.14, sets 5-8 with 2026.12.16, sets 9-10 with
2026.12.18)."""


class RetrainError(Exception):
    """Retraining cannot run (too few decisions, a scorer kind without trainable heads)."""


def held_out(case_id: object) -> bool:
    """Whether a decision is in the held-out part: a stable hash of its case, so the same case is on
    the same side at every retrain (a model is never judged on what it was trained on)."""
    digest = hashlib.sha256(str(case_id).encode()).digest()
    return digest[0] < int(256 * HOLDOUT_SHARE)


def decision_row(d: learning.LabelRow) -> dict[str, Any]:
    """A decision as a training or evaluation row. ``care``: harmful content is no disclosure; content
    found fine is one when it also opened a care case (the abuse flag was the mistake)."""
    return {"text": d.text, "labels": {lab: int(d.harmful and lab in d.labels) for lab in LABELS},
            "care": int(d.care), "template": f"decision.{d.case_id}",
            "category": "decision:" + ("harmful" if d.harmful else "fine")}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    o = report["overall"]
    p, r = o["precision"], o["recall"]
    f1 = round(2 * p * r / (p + r), 4) if p + r else 0.0
    return {"n": report["n"], "roc_auc": o["roc_auc"], "precision": p, "recall": r, "f1": f1,
            "harmless_flagged": o["benign_flag_rate"]}


def measure(scorer: Scorer, rows: list[dict[str, Any]], policy: Policy) -> dict[str, Any] | None:
    """ROC-AUC, precision, recall, F1 and harmless flag rate of ``scorer`` on ``rows`` (None: no rows)."""
    from moderation.scorers.evaluate import evaluate

    if not rows:
        return None
    return _summary(evaluate(scorer, rows, policy.flag))


def better(old: dict[str, Any], new: dict[str, Any]) -> tuple[bool, str]:
    """The promotion rule, on :func:`measure` results: (promote?, why)."""
    oh, nh = old["held_out"], new["held_out"]
    if nh is None or oh is None:
        return False, "no held-out decisions to judge by"
    oi, ni = old["independent"], new["independent"]
    if oi and ni and (ni["roc_auc"] or 0) < (oi["roc_auc"] or 0) - MAX_INDEPENDENT_DROP:
        return False, (f"worse on the independent set (ROC-AUC {ni['roc_auc']} < {oi['roc_auc']} - "
                       f"{MAX_INDEPENDENT_DROP})")
    if (nh["f1"], nh["roc_auc"] or 0) > (oh["f1"], oh["roc_auc"] or 0):
        return True, (f"better on held-out decisions (F1 {oh['f1']} -> {nh['f1']}, "
                      f"ROC-AUC {oh['roc_auc']} -> {nh['roc_auc']})")
    return False, f"not better on held-out decisions (F1 {oh['f1']} -> {nh['f1']}, ROC-AUC {oh['roc_auc']} -> " \
                  f"{nh['roc_auc']})"


async def next_version(conn: asyncpg.Pool | asyncpg.Connection) -> str:
    """``YYYY.MM.DD-rN``: the Nth model trained that day."""
    today = dt.datetime.now(dt.UTC).strftime("%Y.%m.%d")
    n = await conn.fetchval("SELECT count(*) FROM moderation_models WHERE version LIKE $1", today + "-r%")
    return f"{today}-r{n + 1}"


async def retrain(pool: asyncpg.Pool, current: Scorer, kind: str, policy: Policy, *,
                  base_rows: list[dict[str, Any]] | None = None, min_decisions: int = 20,
                  independent: Path | None = INDEPENDENT_DIR, promote: bool | None = None,
                  store: bool = True, model_cache: str | None = None,
                  second_band: float | None = None) -> dict[str, Any]:
    """Train, compare with ``current`` (the model in use) and store; returns the report.

    ``base_rows``: the shipped training data (None: ``train.training_rows()``; tests pass a few).
    ``promote``: None applies the rule (:func:`better`); True/False forces it. ``store=False``
    (``--dry-run``) trains and compares, and stores nothing. ``model_cache``: where the encoders' exports live
    (``VYBE_MODEL_CACHE``); ``second_band``: the workers' second opinion band (``VYBE_SECOND_OPINION_BAND``), so
    that the new model is measured as the workers would run it."""
    import asyncio

    from moderation.scorers import load_scorer
    from moderation.scorers import train as training
    from moderation.scorers.evaluate import load_rows

    if kind not in ("blend", "embedded", "light"):
        raise RetrainError(f"scorer {kind!r} has no heads to retrain (blend, embedded and light do)")
    found = await learning.decisions(pool)
    if len(found) < min_decisions:
        raise RetrainError(f"{len(found)} moderator decisions so far; retraining needs at least {min_decisions}")
    train_part = [decision_row(d) for d in found if not held_out(d.case_id)]
    test_part = [decision_row(d) for d in found if held_out(d.case_id)]
    base = training.training_rows() if base_rows is None else base_rows
    rows = base + train_part
    weights = [1.0] * len(base) + [DECISION_WEIGHT] * len(train_part)
    version = await next_version(pool)
    second = getattr(getattr(current, "second", None), "encoder", None)  # the cascade's MPNet encoder, reused
    # the second opinion only where the workers would use it: the blend, not turned off
    recipe = replace(training.RECIPE, second_opinion=training.RECIPE.second_opinion and kind == "blend"
                     and second_band != 0)
    bundle = await asyncio.to_thread(training.train_bundle, rows, version=version, weights=weights,
                                     embedded=kind != "light", second_encoder=second, model_cache=model_cache,
                                     recipe=recipe)

    def compare() -> tuple[dict[str, Any], dict[str, Any]]:
        from moderation.policy import route_by_policy

        route_by_policy(current, policy)  # as the workers run them
        new = load_scorer(kind, bundle=bundle, encoder=encoder_of(current), model_cache=model_cache,
                          second_band=second_band)
        route_by_policy(new, policy)
        evaluation = load_rows(independent) if independent is not None and independent.exists() else []
        return ({"version": current.version, "held_out": measure(current, test_part, policy),
                 "independent": measure(current, evaluation, policy)},
                {"version": version, "held_out": measure(new, test_part, policy),
                 "independent": measure(new, evaluation, policy)})

    old_m, new_m = await asyncio.to_thread(compare)
    verdict, why = better(old_m, new_m)
    chosen = (verdict if promote is None else promote) and store
    report = {"version": version, "kind": kind, "decisions": {"train": len(train_part), "held_out": len(test_part)},
              "base_rows": len(base), "old": old_m, "new": new_m, "better": verdict, "why": why,
              "promoted": chosen, "stored": store}
    if store:
        await learning.save_model(pool, version, kind, bundle, report, promote=chosen)
    return report

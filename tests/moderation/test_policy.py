"""The policy: the one home of the thresholds, their parser, and the decision they make."""

from __future__ import annotations

import re

import pytest

from moderation.policy import DEFAULT_FLAG, DEFAULT_HIDE, Policy, PolicyError, flagged, parse_thresholds, reason
from moderation.scorers import LABELS


def test_defaults_cover_exactly_the_scorer_labels() -> None:
    """Every label a scorer returns has a flag and a hide threshold, and no other label does."""
    assert set(DEFAULT_FLAG) == set(DEFAULT_HIDE) == set(LABELS)
    assert all(DEFAULT_FLAG[label] <= DEFAULT_HIDE[label] for label in LABELS)


def test_threshold_setting_overrides_the_defaults() -> None:
    """``label=flag[:hide]`` items, spaces allowed, change only the labels they name."""
    flag, hide = parse_thresholds(" toxicity = 0.5, insult=0.7:0.9 ,")
    assert flag == {**DEFAULT_FLAG, "toxicity": 0.5, "insult": 0.7}
    assert hide == {**DEFAULT_HIDE, "insult": 0.9}
    assert parse_thresholds(None) == parse_thresholds("") == (DEFAULT_FLAG, DEFAULT_HIDE)
    policy = Policy.from_settings("hide", "threat=0.1")
    assert (policy.mode, policy.flag["threat"], policy.hide) == ("hide", 0.1, DEFAULT_HIDE)


@pytest.mark.parametrize("spec", ["spam=0.5", "toxicity", "toxicity=high", "toxicity=1.5", "toxicity=0.1:0.2:0.3"])
def test_bad_threshold_settings_are_refused(spec: str) -> None:
    """Unknown labels, missing or non-numeric values, values outside [0, 1], more than two: PolicyError."""
    with pytest.raises(PolicyError):
        parse_thresholds(spec)


def test_decision_reasons_name_the_threshold_in_force() -> None:
    """Reasons follow the thresholds' order as ``label>=threshold (score)``, the format the console
    reads the threshold in force back from (mod.js parseReason); hide needs the hide threshold too."""
    scores = dict.fromkeys(LABELS, 0.0) | {"insult": 0.99, "toxicity": 0.85}
    decision = Policy(mode="hide").decide(scores)
    assert decision.action == "hide" and decision.hide_labels == ["insult"] == flagged(scores, DEFAULT_HIDE)
    assert decision.reasons == ["toxicity>=0.80 (0.85)", "insult>=0.60 (0.99)"]
    assert [re.match(r"^([a-z_]+)>=([0-9.]+)", r).groups() for r in decision.reasons] == [  # type: ignore[union-attr]
        ("toxicity", "0.80"), ("insult", "0.60")]
    assert reason("threat", 0.6, 0.612) == "threat>=0.60 (0.61)"
    assert Policy(mode="flag").decide(scores).action == "flag"
    assert Policy(mode="shadow").decide(scores).action == "shadow"
    assert Policy().decide(dict.fromkeys(LABELS, 0.1)) == Policy().decide({})
    assert flagged({"toxicity": 0.8}) == ["toxicity"] and flagged({"toxicity": 0.79}) == []

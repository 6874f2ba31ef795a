"""Moderation policy: per-label thresholds and a mode, turned into a decision.

Thresholds and the mode are configuration, never code (Discourse removed its
toxicity module after fixed thresholds flagged too much on lenient communities).
Modes: ``off`` (score nothing), ``shadow`` (score and store, never act), ``flag``
(open a case), ``hide`` (also hide until reviewed, for labels whose hide
threshold is crossed: use it for high-precision labels only).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Action = Literal["approve", "flag", "hide", "shadow"]

# Flag defaults from Discourse AI's toxicity module; hide thresholds high enough
# that only near-certain scores hide before a human looks.
DEFAULT_FLAG: dict[str, float] = {
    "toxicity": 0.80, "severe_toxicity": 0.30, "obscene": 0.80, "identity_attack": 0.60,
    "insult": 0.60, "threat": 0.60, "sexual_explicit": 0.60,
}
DEFAULT_HIDE: dict[str, float] = {
    "toxicity": 0.98, "severe_toxicity": 0.90, "obscene": 0.99, "identity_attack": 0.95,
    "insult": 0.98, "threat": 0.95, "sexual_explicit": 0.97,
}


class PolicyError(ValueError):
    """The thresholds setting cannot be parsed."""


class Decision(msgspec.Struct, frozen=True):
    action: Action
    reasons: list[str]
    """Labels over their flag threshold, as ``label>=threshold (score)``."""
    hide_labels: list[str] = msgspec.field(default_factory=list)


class Policy(msgspec.Struct, frozen=True):
    mode: Literal["off", "shadow", "flag", "hide"] = "flag"
    flag: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_FLAG))
    hide: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_HIDE))

    @classmethod
    def from_settings(cls, mode: str, thresholds: str) -> Policy:
        """``thresholds`` is ``label=flag[:hide],...``; unknown labels are an error."""
        flag, hide = dict(DEFAULT_FLAG), dict(DEFAULT_HIDE)
        for item in filter(None, (x.strip() for x in thresholds.split(","))):
            label, sep, values = item.partition("=")
            if not sep or label not in DEFAULT_FLAG:
                raise PolicyError(f"{item!r}: expected label=flag[:hide] with a label in {sorted(DEFAULT_FLAG)}")
            parts = values.split(":")
            try:
                numbers = [float(v) for v in parts]
            except ValueError as err:
                raise PolicyError(f"{item!r}: thresholds must be numbers") from err
            if len(numbers) > 2 or not all(0.0 <= n <= 1.0 for n in numbers):
                raise PolicyError(f"{item!r}: one or two thresholds in [0, 1]")
            flag[label] = numbers[0]
            if len(numbers) == 2:
                hide[label] = numbers[1]
        return cls(mode=mode, flag=flag, hide=hide)  # type: ignore[arg-type]

    def decide(self, scores: dict[str, float]) -> Decision:
        reasons = [f"{label}>={limit:.2f} ({scores[label]:.2f})"
                   for label, limit in self.flag.items() if scores.get(label, 0.0) >= limit]
        hide_labels = [label for label, limit in self.hide.items() if scores.get(label, 0.0) >= limit]
        if self.mode == "shadow":
            return Decision("shadow", reasons, hide_labels)
        if not reasons:
            return Decision("approve", [])
        if self.mode == "hide" and hide_labels:
            return Decision("hide", reasons, hide_labels)
        return Decision("flag", reasons, hide_labels)

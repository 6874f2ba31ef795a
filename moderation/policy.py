"""Moderation policy: per-label thresholds and a mode, turned into a decision.

The one home of the flag and hide thresholds: their defaults, the parser of the
``VYBE_MODERATION_THRESHOLDS`` setting (and of ``evaluate --thresholds``), and
:func:`flagged`. The scorers calibrate to the defaults and evaluate with these;
the moderator console gets the thresholds in force as data (``gateway/pages.py``).

Thresholds and the mode are configuration, never code (Discourse removed its
toxicity module after fixed thresholds flagged too much on lenient communities).
Modes: ``off`` (score nothing), ``shadow`` (score and store, never act), ``flag``
(open a case), ``hide`` (also hide until reviewed, for labels whose hide
threshold is crossed: use it for high-precision labels only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, cast

import msgspec

from common.labels import SELF_HARM_RISK

if TYPE_CHECKING:
    from collections.abc import Mapping

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


def parse_thresholds(spec: str | None) -> tuple[dict[str, float], dict[str, float]]:
    """``label=flag[:hide],...`` over the defaults: the (flag, hide) thresholds.

    Unknown labels, non-numbers and values outside [0, 1] raise :class:`PolicyError`.
    """
    flag, hide = dict(DEFAULT_FLAG), dict(DEFAULT_HIDE)
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        label, sep, values = item.partition("=")
        label = label.strip()
        if not sep or label not in DEFAULT_FLAG:
            raise PolicyError(f"{item!r}: expected label=flag[:hide] with a label in {sorted(DEFAULT_FLAG)}")
        try:
            numbers = [float(v) for v in values.split(":")]
        except ValueError as err:
            raise PolicyError(f"{item!r}: thresholds must be numbers") from err
        if len(numbers) > 2 or not all(0.0 <= n <= 1.0 for n in numbers):
            raise PolicyError(f"{item!r}: one or two thresholds in [0, 1]")
        flag[label] = numbers[0]
        if len(numbers) == 2:
            hide[label] = numbers[1]
    return flag, hide


def flagged(scores: Mapping[str, float], thresholds: Mapping[str, float] = DEFAULT_FLAG) -> list[str]:
    """Labels whose score reaches their threshold, in the thresholds' order (empty: not flagged)."""
    return [label for label, limit in thresholds.items() if scores.get(label, 0.0) >= limit]


def reason(label: str, limit: float, score: float) -> str:
    """A flag's reason as stored on the case: ``label>=threshold (score)``.

    Cases keep no other record of the threshold in force when they were flagged, so
    the moderator console reads it back from this text (``parseReason`` in
    ``gateway/static/js/mod.js``) and ``db.moderation`` reads the label (the text
    before ``>=``): change the format only together with them.
    """
    return f"{label}>={limit:.2f} ({score:.2f})"


DEFAULT_CARE = 0.5
"""``self_harm_risk`` (:data:`common.labels.SELF_HARM_RISK`) at which a text goes to care."""


class Decision(msgspec.Struct, frozen=True):
    action: Action
    reasons: list[str]
    """Labels over their flag threshold, as :func:`reason` writes them."""
    hide_labels: list[str] = msgspec.field(default_factory=list)
    care: bool = False
    """The text reads as the author's own self-harm disclosure: the author gets a caring notice and the
    text a care case. It is never hidden for it (a ``hide`` becomes ``flag``)."""


Mode = Literal["off", "shadow", "flag", "hide"]


class Policy(msgspec.Struct, frozen=True):
    mode: Mode = "flag"
    flag: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_FLAG))
    hide: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_HIDE))
    care: float = DEFAULT_CARE
    """``self_harm_risk`` at or above this routes the text to care (above 1: never)."""

    @classmethod
    def from_settings(cls, mode: str, thresholds: str, care: float = DEFAULT_CARE) -> Policy:
        """``thresholds`` is ``label=flag[:hide],...`` (:func:`parse_thresholds`)."""
        flag, hide = parse_thresholds(thresholds)
        # A plain str here: Settings checked it against the modes (VYBE_MODERATION_MODE).
        return cls(mode=cast("Mode", mode), flag=flag, hide=hide, care=care)

    def decide(self, scores: Mapping[str, float]) -> Decision:
        reasons = [reason(label, self.flag[label], scores.get(label, 0.0)) for label in flagged(scores, self.flag)]
        hide_labels = flagged(scores, self.hide)
        if self.mode == "shadow":
            return Decision("shadow", reasons, hide_labels)
        care = self.mode != "off" and scores.get(SELF_HARM_RISK, 0.0) >= self.care
        if not reasons:
            return Decision("approve", [], care=care)
        if self.mode == "hide" and hide_labels and not care:
            return Decision("hide", reasons, hide_labels)
        return Decision("flag", reasons, hide_labels, care=care)


def route_by_policy(scorer: object, policy: Policy) -> None:
    """Point a cascade's routing at the cut-offs this policy decides with: its flag thresholds and, under
    ``self_harm_risk``, its care threshold (``blend.CascadeScorer.route_by``; other scorers ignore it). The worker
    calls it on every scorer it loads, ``vybe moderation retrain`` on both models it compares, ``evaluate`` with
    ``--thresholds``: an operator who moves a threshold moves the decision the second opinion serves."""
    route = getattr(scorer, "route_by", None)
    if route is not None:
        route({**policy.flag, SELF_HARM_RISK: policy.care})

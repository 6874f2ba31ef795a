"""The moderation labels every part speaks of: what a scorer scores, a policy thresholds, a
moderator confirms and the protocol carries.

``LABELS`` are the abuse labels (Jigsaw's, as Detoxify names them); ``toxicity`` means "harmful
in any way" and the others say how. ``SIGNALS`` are scored beside them but are never abuse:
``self_harm_risk`` routes an author's own self-harm disclosure to care.
"""

from __future__ import annotations

from typing import Literal, get_args

AbuseLabel = Literal["toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack",
                     "sexual_explicit"]
LABELS: tuple[str, ...] = get_args(AbuseLabel)
SELF_HARM_RISK = "self_harm_risk"
SIGNALS: tuple[str, ...] = (SELF_HARM_RISK,)
UNSCORED = "unscored"
"""Not a label: the reason a case carries when the model could not score its content (its jobs failed in
``db.moderation.UNSCORED_CASE_ROUNDS`` rounds), so a moderator decides it by hand."""

"""The training recipe's choices that the command line exposes (``python -m moderation.scorers.train``):
the care signal's recall-first cut-off and the flags that must not be silently ignored."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.scorers import SIGNALS
from moderation.scorers.train import RECIPE, TARGETS, calibration, choose_cutoff, main


def _scores() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = (rng.random(400) < 0.2).astype(float)
    z = y * 1.5 + rng.normal(0.0, 1.0, 400)  # overlapping classes: the F-beta optimum depends on beta
    return z, y, np.ones(400)


def test_f2_cut_off_is_lower_and_catches_more() -> None:
    z, y, w = _scores()
    f1, f2 = choose_cutoff(z, y, w, 1.0), choose_cutoff(z, y, w, 2.0)
    assert f2 < f1
    assert ((z > f2) & (y == 1)).sum() > ((z > f1) & (y == 1)).sum()


def test_care_beta_moves_only_the_care_cut_off() -> None:
    z, y, w = _scores()
    oof, y_all = np.tile(z[:, None], (1, len(TARGETS))), np.tile(y[:, None], (1, len(TARGETS)))
    f1 = calibration(oof, y_all, w, 0.5, care_beta=1.0)
    f2 = calibration(oof, y_all, w, 0.5, care_beta=2.0)
    assert RECIPE.care_beta == 2.0  # shipped: recall first for the care route
    for target in TARGETS:
        if target in SIGNALS:
            assert f2[target]["c"] < f1[target]["c"]
        else:
            assert f2[target] == f1[target]


@pytest.mark.parametrize("argv", [
    ["--groups", "3"],                                 # only means something with --cv-sources
    ["--cv-sources", "--groups", "0"],
    ["--before", "--layers", "3"],                     # the 2026.12.1 recipe has no fine-tune
    ["--no-finetune", "--lr", "1e-4"],
    ["--skip-embedded", "--epochs", "2"],
    ["--layers", "7"],                                 # MiniLM has six
])
def test_flags_that_would_do_nothing_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err

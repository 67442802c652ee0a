"""Overlap metrics against the formula and the empty-mask conventions."""

import numpy as np
import pytest

from segpipe.metrics.overlap import dice, dice_per_label, dice_per_region


def _reference_dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_dice_matches_formula_and_conventions():
    rng = np.random.default_rng(0)
    a, b = rng.random((20, 20, 20)) > 0.6, rng.random((20, 20, 20)) > 0.5
    assert dice(a, b) == pytest.approx(_reference_dice(a, b))
    assert dice(a, a) == 1.0
    assert np.isnan(dice(np.zeros(5, bool), np.zeros(5, bool)))
    assert dice(np.zeros(5, bool), np.ones(5, bool)) == 0.0


def test_dice_per_label_and_region():
    ref = np.array([0, 1, 1, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 3, 0])
    per_label = dice_per_label(pred, ref, [1, 2, 3])
    assert per_label == pytest.approx({1: 2 / 3, 2: 2 / 3, 3: 2 / 3})
    regions = dice_per_region(pred, ref, {"wt": [1, 2, 3], "core": [2, 3]})
    assert regions["wt"] == pytest.approx(2 * 4 / (5 + 4))
    assert regions["core"] == pytest.approx(2 * 2 / (3 + 3))

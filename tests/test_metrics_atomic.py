import os

import numpy as np
import pytest

from segpipe.atomic import atomic_path, write_json
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


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]
    write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
    assert oct(target.stat().st_mode & 0o777) != oct(0o600) or os.umask(0o022) == 0o177

"""bench/bench_quality.py's comparison of an arm with the plain recipe, patient by patient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests._bench import load_bench


def _bench():
    return load_bench("bench_quality")


def test_interval_holds_the_mean_and_narrows_with_patients():
    bench = _bench()
    rng = np.random.default_rng(1)
    few, many = rng.uniform(0, 1, 9), rng.uniform(0, 1, 400)
    low, high = bench.interval(few)
    assert low < few.mean() < high
    many_low, many_high = bench.interval(many)
    assert many_high - many_low < (high - low) / 3
    assert bench.interval(np.full(9, 0.5)) == (0.5, 0.5)


def test_paired_matches_patients_by_name_not_by_row():
    bench = _bench()
    ours = pd.DataFrame({"patient": ["a", "b", "c", "d"], "dice_mean": [0.9, 0.2, 0.6, 0.5]})
    plain = pd.DataFrame({"patient": ["d", "c", "b", "a", "e"], "dice_mean": [0.4, 0.7, 0.1, 0.5, 0.3]})
    result = bench.paired(ours, plain)
    # leads: a +0.4, b +0.1, c -0.1, d +0.1 (patient e is scored by one arm only)
    assert result["lead"] == pytest.approx(0.125)
    assert result["ahead_on"] == 3
    assert result["lead_low"] <= result["lead"] <= result["lead_high"]
    assert result["lead_low"] >= -0.1 and result["lead_high"] <= 0.4



def test_a_fold_is_segmented_at_the_other_folds_median_threshold(tmp_path):
    bench = _bench()
    assert bench.cross_fitted({0: 0.1, 1: 0.3, 2: 0.15, 3: 0.5}, 0) == pytest.approx(0.3)
    assert bench.cross_fitted({0: 0.1, 1: 0.3, 2: 0.15, 3: 0.5}, 3) == pytest.approx(0.15)
    assert bench.cross_fitted({0: 0.1, 1: None, 2: 0.2}, 0) == pytest.approx(0.2)  # folds without a choice left out
    assert bench.cross_fitted({0: 0.2}, 0) == 0.2  # one fold: its own, which the table marks
    assert bench.cross_fitted({0: None, 1: None}, 1) is None


def test_the_threshold_of_a_checkpoint_is_its_validations(tmp_path):
    bench = _bench()
    pd.DataFrame({"epoch": [1, 2, 3, 4], "val_dice_mean": [0.4, 0.7, None, 0.6],
                  "val_threshold": [0.5, 0.2, None, 0.3]}).to_csv(tmp_path / "metrics.csv", index=False)
    assert bench.validated_threshold(tmp_path, "last") == 0.3
    assert bench.validated_threshold(tmp_path, "best") == 0.2
    pd.DataFrame({"epoch": [1], "val_dice_mean": [0.4]}).to_csv(tmp_path / "metrics.csv", index=False)
    assert bench.validated_threshold(tmp_path, "last") is None

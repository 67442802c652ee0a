"""bench/bench_threshold.py: thresholds judged on patients that did not choose them."""

from __future__ import annotations

import pandas as pd
import pytest

from tests._bench import load_bench


def _bench():
    return load_bench("bench_threshold")


def _patients(bench) -> pd.DataFrame:
    """Per-patient Dice by threshold: fold 0 prefers 0.3, fold 1 prefers 0.1, fold 2 scores alike everywhere."""
    prefers = {0: {0.5: 0.45, 0.3: 0.6}, 1: {0.5: 0.5, 0.3: 0.55, 0.1: 0.7}, 2: {}}
    rows = []
    for fold, scores in prefers.items():
        for patient in range(2):
            rows.append({"fold": fold, "patient": f"{fold}{patient}",
                         **{t: scores.get(t, 0.4 if scores else 0.5) for t in bench.THRESHOLDS}})
    return pd.DataFrame(rows)


def test_one_folds_choice_is_scored_on_the_other_folds_only():
    bench = _bench()
    pairs = bench.one_fold_choices(_patients(bench)).set_index(["chooser", "scored"])
    assert len(pairs) == 6 and (0, 0) not in pairs.index
    assert pairs.loc[(0, 1), "threshold"] == 0.3 and pairs.loc[(0, 1), "gain"] == pytest.approx(0.05)
    assert pairs.loc[(1, 0), "threshold"] == 0.1 and pairs.loc[(1, 0), "gain"] == pytest.approx(-0.05)
    assert pairs.loc[(2, 1), "threshold"] == 0.5 and pairs.loc[(2, 1), "gain"] == 0.0  # ties keep the argmax
    assert pairs.loc[(1, 2), "gain"] == pytest.approx(0.0)


def test_cross_fitting_chooses_on_the_other_folds_patients():
    bench = _bench()
    fitted = bench.cross_fitted(_patients(bench)).groupby("fold")["threshold"].first()
    # fold 0 is scored at what folds 1 and 2 prefer together (0.1: 0.7 and 0.5), fold 1 at 0.3 (0.6 and 0.5)
    assert fitted[0] == 0.1 and fitted[1] == 0.3

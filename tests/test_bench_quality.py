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


def test_a_transfer_arm_fine_tunes_from_its_source_for_the_rest_of_the_budget(tmp_path):
    bench = _bench()
    ready, transfer = bench.Arm("figshare_2d"), bench.transfer_arm("figshare_2d", 4, [10, 20])
    assert transfer.source == "msd_2d" and transfer.folder != ready.folder and transfer.name != ready.name
    source = tmp_path / "source"
    command = bench.fit_command(transfer, tmp_path / "prepared", tmp_path / "model", 2, 10, 1, 3, "cpu", source)
    assert command[command.index("--init-from") + 1] == str(source)
    assert "train.max_seconds=360" in command and "train.seed=3" in command and command[command.index("--fold") + 1] == "2"
    command = bench.fit_command(ready, tmp_path / "prepared", tmp_path / "model", 2, 10, 1, 3, "cpu")
    assert "--init-from" not in command and "train.max_seconds=600" in command


def test_without_the_plain_recipe_only_segpipe_arms_are_scored():
    bench = _bench()
    arms = [bench.Arm("figshare_2d"), bench.transfer_arm("figshare_2d", 5, [10])]
    assert bench.scored_arms(arms, True)[-1] == (bench.PLAIN, "plain")
    assert bench.scored_arms(arms, False) == [(a.name, a.folder) for a in arms]


@pytest.mark.parametrize("plain", [True, False])
def test_each_arm_keeps_its_thresholds_with_or_without_the_plain_recipe(plain):
    import pandas as pd

    bench = _bench()
    ours = pd.DataFrame({"patient": ["a", "b", "c"], "dice_mean": [0.5, 0.6, 0.7]})
    tables = {"figshare_2d": ours, **({bench.PLAIN: ours.assign(dice_mean=[0.4, 0.7, 0.5])} if plain else {})}
    iterations = {"figshare_2d": 100, bench.PLAIN: 80}
    applied = {"figshare_2d": {0: 0.3, 1: None}}
    rows = {r["arm"]: r for r in bench.budget_rows(tables, applied, iterations, {"task": "figshare_2d", "checkpoint": "best"})}
    assert rows["figshare_2d"]["thresholds"] == "0.3/argmax" and rows["figshare_2d"]["dice_mean"] == pytest.approx(0.6)
    assert rows["figshare_2d"]["checkpoint"] == "best" and rows["figshare_2d"]["iterations"] == 100
    if plain:
        assert rows["figshare_2d"]["ahead_on"] == 2 and rows[bench.PLAIN]["checkpoint"] == "last"
        assert "thresholds" not in rows[bench.PLAIN]
    else:
        assert "lead" not in rows["figshare_2d"] and list(rows) == ["figshare_2d"]


@pytest.mark.parametrize("task, source_minutes, budgets, says", [
    ("msd_2d", 5, [10], "task msd_2d has no source set"),
    ("figshare_2d", 10, [20, 10], "below every budget"),
    ("figshare_2d", 0, [10], "must be above 0"),
])
def test_a_transfer_arm_without_a_source_or_time_left_is_refused(task, source_minutes, budgets, says):
    with pytest.raises(SystemExit, match=says):
        _bench().transfer_arm(task, source_minutes, budgets)


def test_the_source_set_is_prepared_at_the_task_s_scale():
    """BrainTumour_2D's slices are 2 mm pixels read as 1 mm; the source set is resampled so that a
    head is as many pixels across as figshare_2d's grid makes a figshare head."""
    from pathlib import Path

    from segpipe.config import load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "figshare_2d.yaml"
    ours = load_config(config).preprocess.target_spacing
    source = load_config(config, _bench().TASKS["figshare_2d"]["source"]["set"]).preprocess.target_spacing
    assert [s * 2.0 for s in source] == pytest.approx(ours, abs=0.01)

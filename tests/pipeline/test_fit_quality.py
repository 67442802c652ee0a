"""Model selection on what users are shown, training on every case, region-based targets.

A tiny 2D slice dataset with several slices per patient, so that pooling by patient
changes the numbers: validation during `fit` must equal `evaluate` on `infer`'s masks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segpipe.config import EvaluateConfig, load_config
from segpipe.pipeline.evaluate import evaluate
from segpipe.pipeline.fit import fit
from segpipe.pipeline.infer import infer
from segpipe.pipeline.preprocess import preprocess
from tests.conftest import REPO

INTENSITY = {0: 40, 1: 110, 2: 170, 3: 230}  # brain background and labels 1..3: easy to learn in seconds


def make_slice_dataset(root: Path, patients: int = 4, slices: int = 4, size: int = 32, seed: int = 0) -> Path:
    """MSD-like PNG slices (labels 1 edema, 2 non-enhancing, 3 enhancing, nested discs) in a brain square."""
    rng = np.random.default_rng(seed)
    for folder in ("training_images", "training_labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for p in range(patients):
        for z in range(slices):
            label = np.zeros((size, size), np.uint8)
            cy, cx = rng.integers(12, size - 12, 2)
            r = rng.integers(3, 8)  # tumours of very different size per slice: pooling matters
            dist = np.hypot(yy - cy, xx - cx)
            label[dist < r] = 1
            label[dist < 0.6 * r] = 2
            label[dist < 0.3 * r] = 3
            image = np.zeros((size, size), np.float64)
            image[3:-3, 3:-3] = INTENSITY[0]
            for value, level in INTENSITY.items():
                if value:
                    image[label == value] = level
            image[3:-3, 3:-3] += rng.normal(0, 8, (size - 6, size - 6))
            name = f"BRATS_{p + 1:03d}_z{z + 10}.png"
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "training_images" / name)
            Image.fromarray(label).save(root / "training_labels" / name)
    return root


def slice_overrides(**extra: str) -> dict[str, str]:
    """The tiny 2D recipe as config overrides (key: value)."""
    return {
        "model.spatial_dims": "2", "model.filters": "8", "model.depth": "2", "preprocess.folds": "2",
        "train.epochs": "3", "train.iterations_per_epoch": "12", "train.batch_size": "4", "train.samples_per_volume": "1",
        "train.patch_size": "[16,16]", "train.lr": "0.01", "train.precision": "fp32", "infer.precision": "fp32",
        "infer.sw_batch_size": "4", "train.augment": "[]", **extra,
    }


def slice_config(**extra: str):
    return load_config(None, [f"{k}={v}" for k, v in slice_overrides(**extra).items()])


@pytest.fixture(scope="module")
def slice_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    raw = make_slice_dataset(tmp_path_factory.mktemp("slices") / "raw")
    prepared = tmp_path_factory.mktemp("slices_prepared")
    preprocess(raw, prepared, slice_config(), quiet=True)
    return raw, prepared


def _val_images(raw: Path, prepared: Path, out: Path, fold: int = 0) -> Path:
    out.mkdir()
    for cid in json.loads((prepared / "splits.json").read_text())[fold]["val"]:
        shutil.copyfile(raw / "training_images" / f"{cid}.png", out / f"{cid}.png")  # a link out of -i would be refused
    return out


@pytest.mark.parametrize("settings", [{}, {"infer.tta": "true", "infer.keep_largest": "[1]", "infer.min_component_size": "3"},
                                      {"train.threshold_grid": "[0.5,0.3,0.1]"}],
                         ids=["plain", "mirrored-and-cleaned", "threshold-chosen"])
def test_best_validation_dice_equals_evaluate_on_the_fold(slice_data, tmp_path, settings):
    """Validation predicts as infer does, with the model's own infer settings (mirroring, clean-up,
    the foreground threshold it chose)."""
    from segpipe.artifacts.checkpoints import load_checkpoint

    raw, prepared = slice_data
    result = fit(prepared, tmp_path / "model", slice_config(**{"train.seed": "1", **settings}), quiet=True)
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv")
    best = metrics.loc[metrics["epoch"] == result.best_epoch].iloc[0]
    assert best["val_dice_mean"] == pytest.approx(result.best_metric)
    tuned = "train.threshold_grid" in settings
    assert ("val_threshold" in metrics) == tuned
    stored = load_checkpoint(tmp_path / "model" / "checkpoints" / "best.pt").get("threshold")
    assert stored == (best["val_threshold"] if tuned else None)
    assert result.threshold == stored  # what fit reports

    images = _val_images(raw, prepared, tmp_path / "val_images")
    done = infer(tmp_path / "model", [images], tmp_path / "pred", {"checkpoint": "best", "precision": "fp32"}, quiet=True)
    assert done.threshold == stored
    if tuned:  # a threshold given to infer wins over the checkpoint's
        override = infer(tmp_path / "model", [images], tmp_path / "pred_high", {"precision": "fp32", "threshold": 0.97},
                         quiet=True)
        assert override.threshold == 0.97
        found = [np.count_nonzero(np.asarray(Image.open(d / f.name))) for f in sorted(images.iterdir())
                 for d in (tmp_path / "pred", tmp_path / "pred_high")]
        assert sum(found[1::2]) < sum(found[::2])
    report = evaluate(tmp_path / "pred", raw, tmp_path / "report", EvaluateConfig())
    means = report.summary.set_index("metric")["mean"]
    assert 0.05 < means["dice_mean"] < 1.0  # predictions that are neither empty nor perfect
    assert best["val_dice_mean"] == pytest.approx(means["dice_mean"], abs=1e-9)
    labels = ("edema", "non-enhancing_tumour", "enhancing_tumour")
    for name in (*labels, "whole_tumour", "tumour_core"):
        assert best[f"val_dice_{name}"] == pytest.approx(means[f"dice_{name}"], abs=1e-9, nan_ok=True), name
    # pooling by patient is what makes these equal: the mean over slices is another number
    assert report.per_patient["slices_or_volumes"].min() > 1
    slice_mean = np.nanmean(report.per_case[[f"dice_{n}" for n in labels]].to_numpy(), axis=1)
    assert not np.isclose(np.nanmean(slice_mean), means["dice_mean"], atol=1e-4)



def _label_past_the_image(raw: Path) -> None:
    """Zero every image right of column 20, where some tumours reach: their label lies outside
    the image's non-zero box, which infer leaves background."""
    for path in sorted((raw / "training_images").iterdir()):
        image = np.asarray(Image.open(path)).copy()
        image[:, 20:] = 0
        Image.fromarray(image).save(path)


@pytest.mark.parametrize("case", ["resampled", "label-past-the-crop"])
def test_validation_scores_on_the_input_grid_where_the_prepared_grid_differs(tmp_path, case):
    """A case resampled to preprocess.target_spacing, or labelled outside the crop, is validated on
    its input's grid: the best epoch's validation Dice is still evaluate's on infer's masks."""
    raw = make_slice_dataset(tmp_path / "raw", seed=2)
    overrides = {"train.seed": "1", "infer.tta": "true", "infer.min_component_size": "3"}
    if case == "resampled":
        overrides["preprocess.target_spacing"] = "[1.5,1.5]"
    else:
        _label_past_the_image(raw)
    prepared = tmp_path / "prepared"
    done = preprocess(raw, prepared, slice_config(**overrides), quiet=True)
    grids = [e["native_grid"] for e in json.loads((prepared / "manifest.json").read_text())["cases"].values()]
    if case == "resampled":
        assert all(g["resampled"] for g in grids)
    else:
        assert any(g["label_outside_crop"] for g in grids) and not any(g["resampled"] for g in grids)
        assert any("label voxels outside the image's non-zero box" in n and "training_labels" in n for n in done.notes)
    result = fit(prepared, tmp_path / "model", slice_config(**overrides), quiet=True)
    best = pd.read_csv(tmp_path / "model" / "metrics.csv").set_index("epoch").loc[result.best_epoch]
    images = _val_images(raw, prepared, tmp_path / "val_images")
    infer(tmp_path / "model", [images], tmp_path / "pred", {"checkpoint": "best", "precision": "fp32"}, quiet=True)
    means = evaluate(tmp_path / "pred", raw, tmp_path / "report", EvaluateConfig()).summary.set_index("metric")["mean"]
    assert 0.05 < means["dice_mean"] < 1.0
    for name in ("mean", "edema", "non-enhancing_tumour", "enhancing_tumour", "whole_tumour", "tumour_core"):
        assert best[f"val_dice_{name}"] == pytest.approx(means[f"dice_{name}"], abs=1e-9, nan_ok=True), name


def test_validation_falls_back_to_the_prepared_grid_when_the_inputs_are_gone(tmp_path):
    from segpipe.artifacts.prepared import load_prepared
    from segpipe.training.native import native_grids

    raw = make_slice_dataset(tmp_path / "raw", patients=2, slices=2)
    preprocess(raw, tmp_path / "prepared", slice_config(**{"preprocess.target_spacing": "[1.5,1.5]"}), quiet=True)
    data = load_prepared(tmp_path / "prepared")
    cases = [{"id": cid} for cid in data.manifest["cases"]]
    args = (data.manifest, data.plan["preprocess"], data.plan["layout"], data.plan["source"])
    grids, notes = native_grids(cases, *args)
    assert len(grids) == 4 and not notes
    assert grids["BRATS_001_z10"].reference().shape == (32, 32)  # the label as stored, not the prepared 18 x 18
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(raw / "training_labels" / "BRATS_001_z10.png")  # changed
    shutil.move(raw / "training_images" / "BRATS_002_z11.png", tmp_path / "moved.png")  # gone
    grids, notes = native_grids(cases, *args)
    assert sorted(grids) == ["BRATS_001_z11", "BRATS_002_z10"]
    assert len(notes) == 1 and "2 case(s) on the prepared grid" in notes[0] and "gone or changed" in notes[0]


def test_an_epoch_without_a_step_is_not_validated_again(slice_data, tmp_path, monkeypatch):
    """A validation that overran its slot leaves the next budgeted epoch no step: its weights
    are the last validation's, so it is recorded without validating them again."""
    import segpipe.pipeline.fit as fit_module

    _, prepared = slice_data
    train_epoch = fit_module._train_epoch

    def starved_second_epoch(run, loader, budget, lr_schedule, epoch):
        return [] if epoch == 1 else train_epoch(run, loader, budget, lr_schedule, epoch)

    monkeypatch.setattr(fit_module, "_train_epoch", starved_second_epoch)
    fit(prepared, tmp_path / "model", slice_config(**{"train.max_seconds": "12", "train.epochs": "1000"}), quiet=True)
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv").set_index("epoch")
    assert len(metrics) >= 3 and metrics.loc[2, "iterations"] == 0
    assert pd.isna(metrics.loc[2, "val_dice_mean"]) and metrics.drop(index=2)["val_dice_mean"].notna().all()

def test_time_budget_is_spent_on_several_validated_epochs(slice_data, tmp_path):
    import yaml

    _, prepared = slice_data
    cfg = slice_config(**{"train.max_seconds": "15", "train.epochs": "1000", "train.iterations_per_epoch": "100000"})
    result = fit(prepared, tmp_path / "model", cfg, quiet=True)
    assert cfg.train.epochs == 1000 and cfg.train.patch_size == [16, 16]  # the caller's config is untouched
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv")
    assert len(metrics) >= 3 and metrics["val_dice_mean"].notna().sum() >= 3
    assert metrics["lr"].iloc[0] > 0.5 * 0.01  # the first epoch does not use up the schedule
    assert metrics["seconds"].sum() < 15 * 1.2
    recorded = yaml.safe_load((tmp_path / "model" / "config.yaml").read_text())["train"]
    assert recorded["iterations_per_epoch"] < 100000 and (metrics["iterations"] > 0).all()
    assert len(metrics) == recorded["epochs"]  # one validated epoch per time slot
    assert recorded["val_every"] == 1 and recorded["epochs"] == result.config.train.epochs < 1000
    assert result.epochs == len(metrics)  # the last epoch trained


def test_time_budgeted_fit_under_torchrun_runs_to_the_end(slice_data, tmp_path):
    """Two processes, one time budget. Each process used to read its own clock: one could stop
    an epoch a step before the other, and the next gradient all-reduce failed (gloo "collective
    mismatch", seen on msd_2d). The shared clock itself is tested in tests/training/test_budget.py."""
    _, prepared = slice_data
    sets = slice_overrides(**{"train.max_seconds": "20", "train.epochs": "1000", "train.iterations_per_epoch": "100000",
                              "train.threads": "1", "train.batch_size": "2"})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "segpipe", "fit", "-d", str(prepared), "-o", str(tmp_path / "model"), "--json"]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]  # a rank's own line
    # a rank killed by a signal leaves its own words (a C++ exception, say) before torchrun's summary
    assert done.returncode == 0, "\n".join(errors) or done.stderr[:3000] + "\n...\n" + done.stderr[-1500:]
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv")
    assert len(metrics) >= 2 and metrics["val_dice_mean"].notna().all()
    assert (metrics["iterations"] > 0).all()
    summary = json.loads(done.stdout)  # one document: rank 1 reports nothing of its own
    assert summary["models"][0]["epochs"] == len(metrics)


def test_bad_budget_and_patch_are_refused_naming_the_key(slice_data, tmp_path):
    from segpipe.errors import SegpipeError

    _, prepared = slice_data
    # 1 ms: less than measuring the step cost takes on any machine (0.2 s fitted on a fast, quiet one)
    with pytest.raises(SegpipeError, match="config key 'train.max_seconds': 0.001 s is too short for a single validation"):
        fit(prepared, tmp_path / "a", slice_config(**{"train.max_seconds": "0.001"}), quiet=True)
    assert not [p for p in (tmp_path / "a").rglob("*") if p.is_file()], "refused after measuring: no half a model folder"
    from tests._corpus import run

    flags = [f"--set={k}={v}" for k, v in slice_overrides(**{"train.max_seconds": "0.001"}).items()]
    refused = run("fit", "-d", prepared, "-o", tmp_path / "cli", *flags)
    assert refused.exit_code == 1 and "too short for a single validation" in refused.output
    assert not (tmp_path / "cli").exists()
    with pytest.raises(SegpipeError, match=r"config key 'train.patch_size': \[64, 16\] is larger than the images"):
        fit(prepared, tmp_path / "b", slice_config(**{"train.patch_size": "[64,16]"}), quiet=True)


def test_all_cases_trains_on_every_case_with_best_equal_to_last(slice_data, tmp_path):
    from segpipe.artifacts.checkpoints import load_checkpoint
    from tests._corpus import run

    _, prepared = slice_data
    out = tmp_path / "all"
    flags = [f"--set={k}={v}" for k, v in {"model.spatial_dims": 2, "model.filters": 4, "model.depth": 2,
                                             "train.patch_size": "[16,16]", "train.iterations_per_epoch": 2,
                                             "train.precision": "fp32", "train.threshold_grid": "[0.5,0.3]"}.items()]
    result = run("fit", "-d", prepared, "-o", out, "--all-cases", "--epochs", "2", *flags)
    assert result.exit_code == 0, result.output
    assert "no validation patients to choose a threshold on" in result.output
    metrics = pd.read_csv(out / "metrics.csv")
    assert "val_dice_mean" not in metrics.columns and len(metrics) == 2
    best, last = load_checkpoint(out / "checkpoints" / "best.pt"), load_checkpoint(out / "checkpoints" / "last.pt")
    assert best["epoch"] == last["epoch"] == 1
    assert "threshold" not in best  # infer applies infer.threshold, the argmax here
    splits = json.loads((prepared / "splits.json").read_text())
    assert len(splits[0]["train"]) + len(splits[0]["val"]) == 16  # what --all-cases trains on
    conflict = run("fit", "-d", prepared, "-o", tmp_path / "x", "--all-cases", "--fold", "0")
    assert conflict.exit_code != 0 and "option --all-cases" in conflict.output


def test_training_split_takes_every_case_with_all_cases(tmp_path):
    from segpipe.config import TrainConfig
    from segpipe.pipeline.fit import training_split

    splits = [{"train": ["a", "b", "c"], "val": ["d"]}, {"train": ["a", "c", "d"], "val": ["b"]}]
    assert training_split(splits, TrainConfig(all_cases=True), tmp_path) == (["a", "b", "c", "d"], [])
    assert training_split(splits, TrainConfig(fold=1), tmp_path) == (["a", "c", "d"], ["b"])


def test_region_training_validates_and_infers_the_dataset_labels(slice_data, tmp_path):
    from PIL import Image as PILImage

    raw, prepared = slice_data
    result = fit(prepared, tmp_path / "model", slice_config(**{"model.targets": "regions"}), quiet=True)
    assert result.config.evaluate.regions == {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}
    network = json.loads((tmp_path / "model" / "network.json").read_text())
    assert network["out_channels"] == 3  # one sigmoid channel per region, no background
    metrics = pd.read_csv(tmp_path / "model" / "metrics.csv")
    best = metrics.loc[metrics["epoch"] == result.best_epoch].iloc[0]

    images = _val_images(raw, prepared, tmp_path / "val_images")
    infer(tmp_path / "model", [images], tmp_path / "pred", {"precision": "fp32"}, quiet=True)
    values = set()
    for mask in (tmp_path / "pred").glob("*.png"):
        values |= set(np.unique(np.asarray(PILImage.open(mask))).tolist())
    assert values <= {0, 1, 2, 3} and {1, 2} <= values  # the dataset's own label values, not region indices
    report = evaluate(tmp_path / "pred", raw, tmp_path / "report", EvaluateConfig())
    means = report.summary.set_index("metric")["mean"]
    assert means["dice_whole_tumour"] > 0.3
    assert best["val_dice_mean"] == pytest.approx(means["dice_mean"], abs=1e-9)


def test_a_resumed_budget_run_keeps_its_epoch_sizes(slice_data, tmp_path):
    from segpipe.artifacts.checkpoints import load_checkpoint

    _, prepared = slice_data
    cfg = slice_config(**{"train.max_seconds": "12"})
    fit(prepared, tmp_path / "m", cfg, quiet=True, epochs_this_run=2)
    sizes = load_checkpoint(tmp_path / "m" / "checkpoints" / "last.pt")["budget"]
    assert len(pd.read_csv(tmp_path / "m" / "metrics.csv")) == 2
    result = fit(prepared, tmp_path / "m", cfg, resume=True, quiet=True)
    metrics = pd.read_csv(tmp_path / "m" / "metrics.csv")
    assert result.epochs == len(metrics) > 2
    assert len(metrics) == sizes["epochs"] and metrics["val_dice_mean"].notna().all()
    assert load_checkpoint(tmp_path / "m" / "checkpoints" / "last.pt")["budget"] == sizes


def test_validation_estimate_leaves_first_call_costs_out(monkeypatch):
    """A one-off cost of the first validation call (lazy set-up) is not scaled up to every case."""
    import time
    from types import SimpleNamespace

    from segpipe.pipeline import fit as fit_module

    calls: list[int] = []

    def fake_validate(run, cases):
        time.sleep((0.3 if not calls else 0.0) + 0.001 * len(cases))
        calls.append(len(cases))

    monkeypatch.setattr(fit_module, "_validate", fake_validate)
    run = SimpleNamespace(val_cases=[{"voxels": 100}] * 300, d=SimpleNamespace(main=True, broadcast=lambda x: x))
    seconds = fit_module._validation_seconds(run)
    assert 0.25 < seconds < 5.0  # 300 cases at 1 ms; scaling the 0.3 s set-up by 100 would give over 30 s

"""`segpipe fit` end to end: the model folder, refusals, resume (exact), distributed runs,
crash-safe checkpoints, optimisers, schedules, precision and early stopping."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import segpipe.runtime.precision as precision_module
from segpipe.artifacts.checkpoints import load_checkpoint, save_checkpoint
from segpipe.config import TrainConfig, load_config
from segpipe.errors import SegpipeError
from segpipe.pipeline.fit import fit, fit_folds
from segpipe.training.steps import Precision, epoch_indices, make_optimizer, make_scheduler
from tests.conftest import REPO, tiny_config

DETERMINISTIC = {"train.deterministic": "true", "train.iterations_per_epoch": "3", "model.dropout": "0.1",
                 "train.augment": "[flip, rotate90, affine, scale_intensity, shift_intensity, gaussian_noise, adjust_contrast]"}


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(model_dir / "checkpoints" / "last.pt")["model"]


def test_resume_gives_the_same_weights_as_a_straight_run(prepared_dataset, tmp_path):
    fit(prepared_dataset, tmp_path / "straight", tiny_config(**DETERMINISTIC, **{"train.epochs": "4"}), quiet=True)
    fit(prepared_dataset, tmp_path / "resumed", tiny_config(**DETERMINISTIC, **{"train.epochs": "4"}), quiet=True, epochs_this_run=2)
    assert len(pd.read_csv(tmp_path / "resumed" / "metrics.csv")) == 2
    fit(prepared_dataset, tmp_path / "resumed", tiny_config(**DETERMINISTIC, **{"train.epochs": "4"}), resume=True, quiet=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)
    m1 = pd.read_csv(tmp_path / "straight" / "metrics.csv")
    m2 = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert list(m2["epoch"]) == [1, 2, 3, 4]
    assert m1["train_loss"].tolist() == pytest.approx(m2["train_loss"].tolist(), rel=1e-6)


def test_a_different_seed_gives_different_weights(prepared_dataset, tmp_path):
    fit(prepared_dataset, tmp_path / "a", tiny_config(**DETERMINISTIC, **{"train.epochs": "1"}), quiet=True)
    fit(prepared_dataset, tmp_path / "b", tiny_config(**DETERMINISTIC, **{"train.epochs": "1", "train.seed": "7"}), quiet=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_two_process_gloo_training_writes_one_model_folder(prepared_dataset, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "segpipe", "fit", "-d", str(prepared_dataset), "-o", str(out), "--epochs", "1", "-q",
           "--set", "model.filters=4", "--set", "model.depth=2", "--set", "train.iterations_per_epoch=2",
           "--set", "train.patch_size=[16,16,16]", "--set", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "checkpoints" / "best.pt").is_file()
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    assert not list(out.rglob("*.partial*"))
    # train.precision "auto": the main process decided and every process followed; the folder records it
    recorded = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert recorded["precision"] in ("fp32", "bf16")
    assert recorded["num_workers"] == 0, "train.num_workers 'auto' is no worker process on a CPU, recorded"


KILL_DURING_SAVE = """
import os, signal, sys, torch
from segpipe.artifacts import checkpoints
real_save = torch.save
def dying_save(obj, f, *a, **k):
    with open(f, "wb") as fh:
        fh.write(b"PK\\x03\\x04 half a checkpoint")
        fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
checkpoints.save_checkpoint(sys.argv[1], {"model": {"w": torch.ones(3)}, "epoch": 2})
"""


def test_killed_during_checkpoint_write_keeps_the_previous_one(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "epoch": 1})
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(path)], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["model"]["w"], torch.zeros(3))


def test_optimizers_schedules_precision_and_clipping(prepared_dataset, tmp_path):
    for i, (opt, schedule, precision) in enumerate((("adamw", "cosine", "bf16"), ("sgd", "constant", "fp32"))):
        cfg = tiny_config(**{"train.optimizer": opt, "train.schedule": schedule, "train.precision": precision,
                             "train.grad_clip": "1.0", "train.epochs": "2"})
        fit(prepared_dataset, tmp_path / f"m{i}", cfg, quiet=True)
        metrics = pd.read_csv(tmp_path / f"m{i}" / "metrics.csv")
        lr = metrics["lr"].tolist()
        assert lr[0] == pytest.approx(1e-3)
        assert (lr[1] < lr[0]) if schedule == "cosine" else (lr[1] == lr[0])
        assert metrics["train_loss"].notna().all()
    assert list((tmp_path / "m0" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("speedup, deterministic, chosen", [(3.0, False, "bf16"), (0.5, False, "fp32"), (3.0, True, "fp32")])
def test_auto_training_precision_is_decided_once_and_recorded(prepared_dataset, tmp_path, monkeypatch,
                                                              speedup, deterministic, chosen):
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: speedup)
    cfg = tiny_config(**{"train.precision": "auto", "train.epochs": "1", "train.deterministic": str(deterministic).lower()})
    assert fit(prepared_dataset, tmp_path / "m", cfg, quiet=True).precision == chosen
    recorded = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())["train"]["precision"]
    assert recorded == chosen  # --resume reads this, so a resumed run keeps the first run's arithmetic
    (tmp_path / "cache" / "cpu_precision.json").unlink(missing_ok=True)
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 1 / speedup)
    fit(prepared_dataset, tmp_path / "m", load_config(tmp_path / "m" / "config.yaml", ["train.epochs=2"]),
        resume=True, quiet=True)
    assert yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())["train"]["precision"] == chosen


def test_schedules_and_errors():
    t = TrainConfig(epochs=10, lr=1.0)
    p = torch.nn.Parameter(torch.zeros(1))
    for schedule, expect_last in (("poly", (1 - 9 / 10) ** 0.9), ("cosine", 0.5 * (1 + torch.cos(torch.tensor(0.9 * torch.pi)).item()))):
        t.schedule = schedule
        opt = make_optimizer([p], t)
        sched = make_scheduler(opt, t)
        for _ in range(9):
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(expect_last)
    with pytest.raises(SegpipeError, match="train.optimizer"):
        make_optimizer([p], TrainConfig(optimizer="lbfgs"))
    with pytest.raises(SegpipeError, match="fp16 needs a CUDA device"):
        Precision("fp16", torch.device("cpu"))


def test_epoch_draws_are_reproducible_and_split_by_rank():
    assert epoch_indices(10, 8, seed=0, epoch=3) == epoch_indices(10, 8, seed=0, epoch=3)
    assert epoch_indices(10, 8, seed=0, epoch=3) != epoch_indices(10, 8, seed=0, epoch=4)
    r0 = epoch_indices(10, 4, seed=0, epoch=1, rank=0, world=2)
    r1 = epoch_indices(10, 4, seed=0, epoch=1, rank=1, world=2)
    full = epoch_indices(10, 8, seed=0, epoch=1)
    assert sorted(r0 + r1) == sorted(full) and len(r0) == len(r1) == 4


def test_early_stopping_and_all_folds(prepared_dataset, tmp_path):
    cfg = tiny_config(**{"train.epochs": "30", "train.early_stopping": "1", "train.lr": "1e-30"})  # too small to move float32 weights (lr must be > 0)
    result = fit(prepared_dataset, tmp_path / "es", cfg, quiet=True)
    assert result.stopped_early and len(pd.read_csv(tmp_path / "es" / "metrics.csv")) == 2
    results = fit_folds(prepared_dataset, tmp_path / "cv", tiny_config(**{"train.epochs": "1"}), [0, 1, 2], quiet=True)
    assert len(results) == 3
    for k in range(3):
        assert (tmp_path / "cv" / f"fold_{k}" / "checkpoints" / "best.pt").is_file()


def test_unknown_augmentation_is_named(prepared_dataset, tmp_path):
    with pytest.raises(SegpipeError, match="unknown augmentation 'mixup'"):
        fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.augment": "[flip, mixup]"}), quiet=True)
    assert not (tmp_path / "m").exists()  # refused before the model folder is made


@pytest.mark.parametrize("breaks", ["loss", "weights"])
def test_a_diverging_training_stops_and_no_checkpoint_holds_its_weights(prepared_dataset, tmp_path, monkeypatch, breaks):
    """A NaN loss, or weights made NaN by the epoch's last step, stop fit with one line;
    checkpoints keep only finite weights (an all-NaN model segments nothing, 'confidently')."""
    import segpipe.pipeline.fit as fit_module

    real_step, calls = fit_module._train_step, []

    def step(run, batch):
        calls.append(1)
        loss = real_step(run, batch)
        if len(calls) > 3:  # epoch 2 of 3 steps
            if breaks == "loss":
                return float("nan")
            next(run.model.parameters()).data.fill_(float("inf"))
        return loss

    monkeypatch.setattr(fit_module, "_train_step", step)
    with pytest.raises(SegpipeError, match=r"training diverged in epoch 2.*lower train.lr"):
        fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.epochs": "3", "train.iterations_per_epoch": "3"}),
            quiet=True)
    saved = sorted((tmp_path / "m" / "checkpoints").glob("*.pt"))
    assert saved and all(load_checkpoint(p)["epoch"] == 0 for p in saved)  # epoch 1's, loadable: finite


def test_model_folder_artifacts(tiny_model):
    for name in ("config.yaml", "plan.json", "network.json", "metrics.csv", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (tiny_model / name).is_file(), name
    metrics = pd.read_csv(tiny_model / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2]
    assert {"train_loss", "lr", "seconds", "val_dice_mean", "val_dice_edema"} <= set(metrics.columns)
    assert metrics["val_dice_mean"].between(0, 1).all()
    ckpt = load_checkpoint(tiny_model / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["network"]["name"] == "unet"
    assert not list(tiny_model.rglob("*.partial*"))


def test_refuses_to_overwrite_and_resumes(prepared_dataset, tmp_path):
    out = tmp_path / "m"
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    with pytest.raises(SegpipeError, match="already holds a trained model"):
        fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "3"}), resume=True, quiet=True)
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3]
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2
    # the longer schedule's rate from the first resumed epoch on (poly over 3 epochs, not the first run's 1)
    lr = tiny_config().train.lr
    assert metrics["lr"].tolist() == pytest.approx([lr, lr * (1 - 1 / 3) ** 0.9, lr * (1 - 2 / 3) ** 0.9])


def test_a_resumed_run_keeps_its_chosen_threshold_until_it_validates_again(prepared_dataset, tmp_path):
    out = tmp_path / "m"
    grid = {"train.threshold_grid": "[0.5,0.3,0.1]"}
    fit(prepared_dataset, out, tiny_config(**grid, **{"train.epochs": "1"}), quiet=True)
    chosen = load_checkpoint(out / "checkpoints" / "last.pt")["threshold"]
    assert chosen in (0.5, 0.3, 0.1)
    fit(prepared_dataset, out, tiny_config(**grid, **{"train.epochs": "3", "train.val_every": "5"}), resume=True,
        quiet=True, epochs_this_run=1)  # epoch 2: not validated
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["threshold"] == chosen
    assert pd.isna(pd.read_csv(out / "metrics.csv")["val_threshold"].iloc[1])


def test_resume_on_another_split_is_refused(prepared_dataset, tmp_path):
    """Fold 1's validation cases are fold 0's training cases: resuming there would score the
    model on what it trained on. Refused, and the folder is left as it was."""
    out = tmp_path / "m"
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    for change, words in (({"train.fold": "1"}, "option train.fold=1: .* was trained with train.fold=0"),
                          ({"train.all_cases": "true"}, "option train.all_cases=True: .* train.all_cases=False"),
                          ({"train.lr": "0.5"}, r"option train.lr=0.5: .* was trained with train.lr=0.0\d+; the optimiser"),
                          ({"train.optimizer": "sgd"}, "option train.optimizer=sgd: .* would not apply")):
        with pytest.raises(SegpipeError, match=words):
            fit(prepared_dataset, out, tiny_config(**{"train.epochs": "2", **change}), resume=True, quiet=True)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "2"}), resume=True, quiet=True)  # the same split resumes
    assert len(pd.read_csv(out / "metrics.csv")) == 2


def test_resume_needs_a_checkpoint(prepared_dataset, tmp_path):
    with pytest.raises(SegpipeError, match="nothing to resume"):
        fit(prepared_dataset, tmp_path / "new", tiny_config(), resume=True, quiet=True)


def test_resume_of_a_folder_of_folds_says_to_resume_with_fold_all(prepared_dataset, tmp_path):
    """A `fit --fold all` folder holds fold_<k>/ models and no checkpoints of its own."""
    out = tmp_path / "cv"
    for k in (0, 1):
        (out / f"fold_{k}" / "checkpoints").mkdir(parents=True)
        (out / f"fold_{k}" / "checkpoints" / "last.pt").write_bytes(b"weights")
    (out / "fold_0_old").mkdir()  # a backup, not a fold
    words = (f"{out / 'checkpoints' / 'last.pt'}: nothing to resume from; {out} holds fold_0, fold_1 "
             "(fit --fold all): resume them with --fold all")
    with pytest.raises(SegpipeError) as refused:
        fit(prepared_dataset, out, tiny_config(), resume=True, quiet=True)
    assert str(refused.value) == words
    assert sorted(p.name for p in out.iterdir()) == ["fold_0", "fold_0_old", "fold_1"]


def test_bad_fold_and_patch(prepared_dataset, tmp_path):
    with pytest.raises(SegpipeError, match="train.fold=9"):
        fit(prepared_dataset, tmp_path / "a", tiny_config(**{"train.fold": "9"}), quiet=True)
    with pytest.raises(SegpipeError, match="train.patch_size"):
        fit(prepared_dataset, tmp_path / "b", tiny_config(**{"train.patch_size": "[16, 16]"}), quiet=True)


def test_a_patch_that_leaves_the_deepest_level_one_voxel_is_refused_before_the_folder_is_made(prepared_dataset, tmp_path):
    """Instance norm cannot train on one voxel: [1, 1, 1] failed at the first step, after the model
    folder had been written."""
    cfg = tiny_config(**{"train.patch_size": "[1, 1, 1]"})
    multiple = 2 ** cfg.model.depth
    with pytest.raises(SegpipeError, match=rf"train.patch_size': \[1, 1, 1\] leaves the network's deepest level a single "
                                           rf"voxel \(it divides each side by {multiple}\)"):
        fit(prepared_dataset, tmp_path / "m", cfg, quiet=True)
    assert not (tmp_path / "m").exists()
    side = tiny_config(**{"train.patch_size": f"[{multiple + 1}, {multiple}, {multiple}]", "train.epochs": "1",
                          "train.iterations_per_epoch": "1"})
    fit(prepared_dataset, tmp_path / "ok", side, quiet=True)  # two voxels at the deepest level train


def test_training_reduces_the_loss(prepared_dataset, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(**{"train.epochs": "4", "train.iterations_per_epoch": "6", "train.lr": "0.01"})
    fit(prepared_dataset, tmp_path / "m", cfg, quiet=True)
    loss = pd.read_csv(tmp_path / "m" / "metrics.csv")["train_loss"]
    assert loss.iloc[-1] < loss.iloc[0]


@pytest.mark.parametrize("loader", ["train.num_workers=0", "train.thread_loader=true"])
def test_training_batches_carry_no_metadata_and_monai_is_left_as_it_was(prepared_dataset, tmp_path, loader, monkeypatch):
    from monai.data import MetaTensor, get_track_meta

    import segpipe.pipeline.fit as fit_module

    seen = []
    train_step = fit_module._train_step
    monkeypatch.setattr(fit_module, "_train_step", lambda run, batch: (seen.append(type(batch["image"])), train_step(run, batch))[1])
    key, value = loader.split("=")
    fit(prepared_dataset, tmp_path / "m", tiny_config(**{key: value}), quiet=True)
    assert seen and all(kind is torch.Tensor and kind is not MetaTensor for kind in seen)
    assert get_track_meta()  # infer, run later in the same process, keeps its geometry


def test_channels_last_training_matches_the_standard_layout(prepared_dataset, tmp_path):
    # Only the memory layout differs: the losses follow up to the reordering of float operations.
    extra = {"train.epochs": "2", "train.iterations_per_epoch": "3", "train.deterministic": "true"}
    fit(prepared_dataset, tmp_path / "standard", tiny_config(**extra, **{"train.channels_last": "false"}), quiet=True)
    fit(prepared_dataset, tmp_path / "last", tiny_config(**extra, **{"train.channels_last": "true"}), quiet=True)
    standard = pd.read_csv(tmp_path / "standard" / "metrics.csv")
    last = pd.read_csv(tmp_path / "last" / "metrics.csv")
    assert last["train_loss"].to_numpy() == pytest.approx(standard["train_loss"].to_numpy(), rel=1e-3)
    kernels = {name: w for name, w in _weights(tmp_path / "last").items() if w.ndim == 5}
    assert kernels and all(w.is_contiguous(memory_format=torch.channels_last_3d) for w in kernels.values())
    assert not any(w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous()
                   for w in _weights(tmp_path / "standard").values() if w.ndim == 5)


def test_compiled_training_matches_eager(prepared_dataset, tmp_path):
    # torch.compile (inductor, C++ on CPU) traces the network on plain tensors; the
    # losses follow the eager run's up to the reordering of float operations.
    extra = {"train.epochs": "2", "train.iterations_per_epoch": "3", "train.deterministic": "true"}
    fit(prepared_dataset, tmp_path / "eager", tiny_config(**extra), quiet=True)
    fit(prepared_dataset, tmp_path / "compiled", tiny_config(**extra, **{"train.compile": "true"}), quiet=True)
    eager = pd.read_csv(tmp_path / "eager" / "metrics.csv")
    compiled = pd.read_csv(tmp_path / "compiled" / "metrics.csv")
    assert len(eager) == len(compiled) == 2
    assert compiled["train_loss"].to_numpy() == pytest.approx(eager["train_loss"].to_numpy(), rel=1e-3)
    state = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")["model"]
    assert not any(k.startswith("_orig_mod.") for k in state)  # loadable without compiling


def test_cases_read_from_disk_train_as_cached_ones(prepared_dataset, tmp_path, monkeypatch, capsys):
    settings = {**DETERMINISTIC, "train.epochs": "2"}
    fit(prepared_dataset, tmp_path / "cached", tiny_config(**settings, **{"train.cache_rate": "1"}), quiet=True)
    monkeypatch.setattr("segpipe.training.caching.device_memory", lambda device: 1)  # nothing fits: auto caches none
    fit(prepared_dataset, tmp_path / "on_disk", tiny_config(**settings), quiet=False)
    captured = capsys.readouterr()
    assert "train.cache_rate auto: 0 of " in captured.out + captured.err
    a, b = _weights(tmp_path / "cached"), _weights(tmp_path / "on_disk")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)


def test_resume_on_another_prepared_folder_is_refused(prepared_dataset, synthetic_dataset, tmp_path):
    """The same fold number of a folder prepared otherwise, or split otherwise, is other data:
    the weights would go on training on other inputs, or validate on cases they trained on."""
    import json

    from segpipe.pipeline.preprocess import preprocess

    out = tmp_path / "m"
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    coarser = tmp_path / "coarser"
    preprocess(synthetic_dataset, coarser, tiny_config(**{"preprocess.target_spacing": "[2.0, 2.0, 2.4]"}), quiet=True)
    with pytest.raises(SegpipeError, match=r"plan.json: the model was trained on data prepared otherwise \(target_spacing"):
        fit(coarser, out, tiny_config(**{"train.epochs": "2"}), resume=True, quiet=True)
    resplit = Path(shutil.copytree(prepared_dataset, tmp_path / "resplit"))
    splits = json.loads((resplit / "splits.json").read_text())
    splits[0]["train"], splits[0]["val"] = splits[1]["train"], splits[1]["val"]
    (resplit / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(SegpipeError, match="was trained on other cases than this prepared folder's fold 0 holds"):
        fit(resplit, out, tiny_config(**{"train.epochs": "2"}), resume=True, quiet=True)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


@pytest.mark.parametrize("edit, words", [({"epoch": -5}, "'epoch' is -5"), ({"best_epoch": 99}, "'best_epoch' is 99"),
                                         ({"best_metric": float("nan"), "best_epoch": 1}, "'best_metric' is NaN")])
def test_resume_refuses_a_training_state_fit_does_not_write(prepared_dataset, tmp_path, edit, words):
    out = tmp_path / "m"
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    save_checkpoint(out / "checkpoints" / "last.pt", {**state, **edit})
    with pytest.raises(SegpipeError, match=words):
        fit(prepared_dataset, out, tiny_config(**{"train.epochs": "2"}), resume=True, quiet=True)


def test_resume_refuses_a_metrics_table_fit_did_not_write_before_training(prepared_dataset, tmp_path):
    out = tmp_path / "m"
    fit(prepared_dataset, out, tiny_config(**{"train.epochs": "1"}), quiet=True)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    (out / "metrics.csv").write_text("epoch,train_loss\n1,abc\n")  # trained an epoch, then failed drawing the curves
    with pytest.raises(SegpipeError, match="metrics.csv: not the table fit wrote"):
        fit(prepared_dataset, out, tiny_config(**{"train.epochs": "2"}), resume=True, quiet=True)
    assert (out / "checkpoints" / "last.pt").read_bytes() == before


def test_validation_of_resampled_volumes_equals_evaluate_on_infers_masks(synthetic_dataset, tmp_path):
    """Volumes resampled from 1 x 1 x 1.2 mm to 1.5 mm are validated on their own grid: the best
    epoch's Dice is evaluate's on the masks infer writes, label by label and region by region."""
    import json

    from segpipe.config import EvaluateConfig
    from segpipe.pipeline.evaluate import evaluate
    from segpipe.pipeline.infer import infer
    from segpipe.pipeline.preprocess import preprocess

    settings = {"preprocess.target_spacing": "[1.5,1.5,1.5]", "train.epochs": "3", "train.iterations_per_epoch": "8",
                "train.lr": "0.01", "train.seed": "1"}
    preprocess(synthetic_dataset, tmp_path / "prepared", tiny_config(**settings), quiet=True)
    cases = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["cases"]
    assert all(case["native_grid"]["resampled"] for case in cases.values())
    result = fit(tmp_path / "prepared", tmp_path / "model", tiny_config(**settings), quiet=True)
    (tmp_path / "val").mkdir()
    for cid in json.loads((tmp_path / "prepared" / "splits.json").read_text())[0]["val"]:
        shutil.copy(synthetic_dataset / "imagesTr" / f"{cid}.nii.gz", tmp_path / "val")
    infer(tmp_path / "model", [tmp_path / "val"], tmp_path / "pred", {"checkpoint": "best", "precision": "fp32"}, quiet=True)
    means = evaluate(tmp_path / "pred", synthetic_dataset, tmp_path / "report", EvaluateConfig()).summary.set_index("metric")["mean"]
    best = pd.read_csv(tmp_path / "model" / "metrics.csv").set_index("epoch").loc[result.best_epoch]
    assert means["dice_whole_tumour"] > 0.1
    for name in ("mean", "edema", "non-enhancing_tumour", "enhancing_tumour", "whole_tumour", "tumour_core"):
        assert best[f"val_dice_{name}"] == pytest.approx(means[f"dice_{name}"], abs=1e-9, nan_ok=True), name


def test_regions_of_labels_outside_the_label_set_are_refused(prepared_dataset, tmp_path):
    """MSD regions (enhancing = 3) given for a BraTS label set (enhancing = 4) would validate other voxels."""
    msd = {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}
    brats = '{"whole_tumour": [1, 2, 4], "tumour_core": [2, 4], "enhancing_tumour": [4]}'
    assert sorted(load_config(None, [f"evaluate.regions={brats}"]).evaluate.regions) == sorted(msd)
    with pytest.raises(SegpipeError, match=r"config key 'evaluate.regions': region 'whole_tumour' holds label\(s\) \[4\] "
                                           r"that are not in the label set \(1, 2, 3\)"):
        fit(prepared_dataset, tmp_path / "m", tiny_config(**{"evaluate.regions": brats}), quiet=True)
    assert not (tmp_path / "m" / "config.yaml").exists()

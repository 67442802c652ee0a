import pandas as pd
import pytest
import torch

from segpipe.artifacts.checkpoints import load_checkpoint
from segpipe.errors import SegpipeError
from segpipe.pipeline.fit import fit
from tests.conftest import tiny_config


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


def test_resume_needs_a_checkpoint(prepared_dataset, tmp_path):
    with pytest.raises(SegpipeError, match="nothing to resume"):
        fit(prepared_dataset, tmp_path / "new", tiny_config(), resume=True, quiet=True)


def test_bad_fold_and_patch(prepared_dataset, tmp_path):
    with pytest.raises(SegpipeError, match="train.fold=9"):
        fit(prepared_dataset, tmp_path / "a", tiny_config(**{"train.fold": "9"}), quiet=True)
    with pytest.raises(SegpipeError, match="train.patch_size"):
        fit(prepared_dataset, tmp_path / "b", tiny_config(**{"train.patch_size": "[16, 16]"}), quiet=True)


def test_training_reduces_the_loss(prepared_dataset, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(**{"train.epochs": "4", "train.iterations_per_epoch": "6", "train.lr": "0.01"})
    fit(prepared_dataset, tmp_path / "m", cfg, quiet=True)
    loss = pd.read_csv(tmp_path / "m" / "metrics.csv")["train_loss"]
    assert loss.iloc[-1] < loss.iloc[0]


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

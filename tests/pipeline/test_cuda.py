"""The CUDA paths: fp16 training with gradient scaling, and inference whose windows are blended
on the GPU. They run where a GPU is (the project's device checks, docs/benchmarks.md) and are
skipped, with the reason, everywhere else."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from segpipe.pipeline.fit import fit
from segpipe.pipeline.infer import infer
from tests.conftest import tiny_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the project's GPU checks)")


def _masks(model: Path, images: list[Path], out: Path, device: str, probabilities: bool = False) -> dict[str, np.ndarray]:
    infer(model, images, out, {"device": device, "precision": "fp32"}, quiet=True, probabilities=probabilities)
    return {p.name: np.asarray(nib.load(str(p)).dataobj) for p in sorted(out.glob("*.nii.gz")) if "probabilities" not in p.name}


@pytest.mark.parametrize("targets", ["labels", "regions"])
def test_fp16_training_on_cuda_then_inference_agrees_with_the_cpu(targets, prepared_dataset, synthetic_dataset, tmp_path):
    model = tmp_path / "model"
    fit(prepared_dataset, model, tiny_config(**{"train.device": "cuda", "train.precision": "fp16", "model.targets": targets}),
        quiet=True)
    last = torch.load(model / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    assert last["scaler"], "fp16 on CUDA trains with a gradient scaler, saved for resuming"
    assert yaml.safe_load((model / "config.yaml").read_text())["train"]["num_workers"] >= 1, "'auto': loader workers on a GPU"
    assert np.isfinite(pd.read_csv(model / "metrics.csv")["train_loss"]).all()
    images = sorted((synthetic_dataset / "imagesTs").glob("*.nii.gz"))
    on_gpu = _masks(model, images, tmp_path / "gpu", "cuda", probabilities=True)
    on_cpu = _masks(model, images, tmp_path / "cpu", "cpu")
    assert on_gpu.keys() == on_cpu.keys() and on_gpu
    for name, mask in on_gpu.items():
        assert mask.shape == on_cpu[name].shape
        assert (mask == on_cpu[name]).mean() > 0.999, name

"""Validation's choice of a foreground threshold (train.threshold_grid) on the validation patients."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from segpipe.config import InferConfig
from segpipe.training.steps import Precision
from segpipe.training.validation import validate

TUMOUR_P, BACKGROUND_P = 0.3, 0.05  # the stub network's tumour probability inside and outside the tumour


class TumourLogit(torch.nn.Module):
    """Logits (0, x): the tumour probability is sigmoid of the image value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)


def _cases(root: Path) -> list[dict[str, str]]:
    """Two patients of two slices each; the image holds the logit of the wanted tumour probability."""
    cases = []
    for i, patient in enumerate(["p1", "p1", "p2", "p2"]):
        label = np.zeros((1, 32, 32), np.uint8)
        label[0, 4 + i : 14 + i, 6:18] = 1
        image = np.where(label > 0, math.log(TUMOUR_P / (1 - TUMOUR_P)), math.log(BACKGROUND_P / (1 - BACKGROUND_P)))
        np.save(root / f"c{i}_image.npy", image.astype(np.float32))
        np.save(root / f"c{i}_label.npy", label)
        cases.append({"image": str(root / f"c{i}_image.npy"), "label": str(root / f"c{i}_label.npy"),
                      "id": f"c{i}", "patient": patient})
    return cases


def _validate(cases, thresholds=(), **icfg):
    settings = InferConfig(fuse=False, channels_last=False, sw_batch_size=1, **icfg)
    return validate(TumourLogit(), cases, settings, [32, 32], {"tumour": [1]}, ["tumour"], torch.device("cpu"),
                    Precision("fp32", torch.device("cpu")), {"spatial_dims": 2, "out_channels": 2}, None, thresholds)


def test_validation_scores_every_threshold_and_keeps_the_first_of_the_best(tmp_path):
    cases = _cases(tmp_path)
    argmax = _validate(cases)
    assert argmax["threshold"] is None and argmax["mean"] == 0.0  # 0.3 never wins the argmax: nothing found
    tuned = _validate(cases, [0.5, 0.4, 0.2, 0.1, 0.01])
    # 0.2 and 0.1 both find exactly the tumour; the earlier candidate is kept
    assert tuned["threshold"] == 0.2 and tuned["mean"] == pytest.approx(1.0)
    assert tuned["tumour"] == pytest.approx(1.0)
    everything = _validate(cases, [0.01])  # the whole slice: Dice of the tumour against the slice
    assert everything["threshold"] == 0.01 and 0 < everything["mean"] < 0.5


def test_a_configured_threshold_is_what_validation_scores_without_a_grid(tmp_path):
    result = _validate(_cases(tmp_path), threshold=0.25)
    assert result["threshold"] == 0.25 and result["mean"] == pytest.approx(1.0)


def test_a_grid_that_never_beats_its_first_candidate_keeps_it(tmp_path):
    result = _validate(_cases(tmp_path), [0.5, 0.4])
    assert result["threshold"] == 0.5 and result["mean"] == 0.0

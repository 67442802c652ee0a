"""Validation during training: whole cases, per-patient pooled Dice as `segpipe evaluate` reports it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from segpipe.config import InferConfig
from segpipe.metrics.patients import PatientScores
from segpipe.networks.inference import optimize_for_inference
from segpipe.prediction import labels_of, mean_probabilities
from segpipe.training.native import NativeGrid
from segpipe.transforms.postprocess import postprocess
from segpipe.transforms.regions import RegionChain


def case_probabilities(predictor: torch.nn.Module, image: torch.Tensor, icfg: InferConfig, roi: list[int],
                       precision: Any, spec: dict[str, Any], chain: RegionChain | None) -> torch.Tensor:
    """Probabilities (C, ...) of one prepared image (C, ...) as `segpipe infer` computes them: the
    same windows and mirrored copies (`infer.tta`)."""
    with precision.autocast():
        return mean_probabilities([predictor], image[None], roi, icfg, spec["spatial_dims"], spec["out_channels"],
                                  chain is not None, device=image.device)[0]


def decide(probs: torch.Tensor, icfg: InferConfig, chain: RegionChain | None, thresholds: Sequence[float | None],
           native: NativeGrid | None = None) -> list[np.ndarray]:
    """Labels from probabilities as `segpipe infer` decides them, one mask per threshold: argmax
    or the threshold, nested regions decoded, mapped onto the input's grid where `native` says
    how (all thresholds at once), then the clean-up (`infer.keep_largest`, `infer.min_component_size`)."""
    labels = torch.cat([labels_of(probs, chain, threshold) for threshold in thresholds])
    masks = native.labels(labels) if native is not None else labels.cpu().numpy()
    return [postprocess(mask, icfg.keep_largest, icfg.min_component_size) for mask in masks]


@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[dict[str, str]], icfg: InferConfig, patch: list[int],
             structures: dict[str, list[int]], label_structures: list[str], device: torch.device, precision: Any,
             spec: dict[str, Any], chain: RegionChain | None = None,
             thresholds: Sequence[float] = (), natives: Mapping[str, NativeGrid] | None = None) -> dict[str, Any]:
    """Mean over patients of each structure's Dice, a patient's slices pooled, and of their mean label Dice.

    Runs a copy of `net` rewritten for inference as `segpipe infer` does (infer.fuse,
    infer.channels_last), predicts through the same functions (:mod:`segpipe.prediction`)
    and scores with the code `segpipe evaluate` uses, so the returned "mean" is the
    `dice_mean` of evaluate's summary for the same predictions.

    With `thresholds` (train.threshold_grid), the same probabilities are decided at each, and
    the scores returned are those of the threshold whose "mean" is highest (the earliest of
    equals), named under "threshold": what `infer` applies with this checkpoint. Chosen on
    these patients, that mean overstates Dice on new ones a little. Without, "threshold" is
    `infer.threshold`.

    Args:
        cases: dicts with the prepared "image" and "label" arrays and the case's "patient".
        patch: the training patch, the window size unless `infer.roi_size` is set.
        structures: name -> labels scored (labels by name, then regions).
        label_structures: the names whose mean is the patient's mean label Dice.
        spec: the network spec (spatial_dims, out_channels).
        chain: nested regions when the network predicts regions, else None.
        natives: cases scored on their input's grid (resampled, or labelled outside the
            crop; `segpipe.training.native`), by case id.
    """
    net.eval()
    predictor = optimize_for_inference(net, channels_last=icfg.channels_last) if icfg.fuse else net
    roi = list(icfg.roi_size or patch)
    candidates = list(thresholds) or [icfg.threshold]
    scores = {t: PatientScores(structures, label_structures, distances=False) for t in candidates}
    for case in cases:
        image = torch.from_numpy(np.load(case["image"])).to(device)
        native = (natives or {}).get(case["id"])
        ref = native.reference() if native is not None else np.load(case["label"])[0]
        probs = case_probabilities(predictor, image, icfg, roi, precision, spec, chain)
        for tally, mask in zip(scores.values(), decide(probs, icfg, chain, candidates, native)):
            tally.add(case["id"], case.get("patient", case["id"]), mask, ref, [1.0] * ref.ndim)
    net.train()
    means = {t: tally.mean_dice() for t, tally in scores.items()}
    best = max(candidates, key=lambda t: means[t]["mean"])  # max keeps the first of equals
    return {**means[best], "threshold": best}

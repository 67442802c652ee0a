"""Validation during training: whole cases, per-patient pooled Dice as `segpipe evaluate` reports it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segpipe.config import InferConfig
from segpipe.metrics.patients import PatientScores
from segpipe.networks.inference import optimize_for_inference
from segpipe.prediction import labels_of, mean_probabilities
from segpipe.transforms.postprocess import postprocess
from segpipe.transforms.regions import RegionChain


def predict_case(predictor: torch.nn.Module, image: torch.Tensor, icfg: InferConfig, roi: list[int],
                 precision: Any, spec: dict[str, Any], chain: RegionChain | None) -> np.ndarray:
    """Labels of one prepared image (C, ...) as `segpipe infer` decides them: the same windows,
    mirrored copies (`infer.tta`), decoding and clean-up (`infer.keep_largest`, `infer.min_component_size`)."""
    with precision.autocast():
        probs = mean_probabilities([predictor], image[None], roi, icfg, spec["spatial_dims"], spec["out_channels"],
                                   chain is not None, device=image.device)[0]
    labels = labels_of(probs, chain)[0].cpu().numpy()
    return postprocess(labels, icfg.keep_largest, icfg.min_component_size)


@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[dict[str, str]], icfg: InferConfig, patch: list[int],
             structures: dict[str, list[int]], label_structures: list[str], device: torch.device, precision: Any,
             spec: dict[str, Any], chain: RegionChain | None = None) -> dict[str, float]:
    """Mean over patients of each structure's Dice, a patient's slices pooled, and of their mean label Dice.

    Runs a copy of `net` rewritten for inference as `segpipe infer` does (infer.fuse,
    infer.channels_last), predicts through the same functions (:mod:`segpipe.prediction`)
    and scores with the code `segpipe evaluate` uses, so the returned "mean" is the
    `dice_mean` of evaluate's summary for the same predictions.

    Args:
        cases: dicts with the prepared "image" and "label" arrays and the case's "patient".
        patch: the training patch, the window size unless `infer.roi_size` is set.
        structures: name -> labels scored (labels by name, then regions).
        label_structures: the names whose mean is the patient's mean label Dice.
        spec: the network spec (spatial_dims, out_channels).
        chain: nested regions when the network predicts regions, else None.
    """
    net.eval()
    predictor = optimize_for_inference(net, channels_last=icfg.channels_last) if icfg.fuse else net
    roi = list(icfg.roi_size or patch)
    scores = PatientScores(structures, label_structures, distances=False)
    for case in cases:
        image = torch.from_numpy(np.load(case["image"])).to(device)
        ref = np.load(case["label"])[0]
        pred = predict_case(predictor, image, icfg, roi, precision, spec, chain)
        scores.add(case["id"], case.get("patient", case["id"]), pred, ref, [1.0] * ref.ndim)
    net.train()
    return scores.mean_dice()

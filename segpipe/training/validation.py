"""Validation during training: whole cases, per-patient pooled Dice as `segpipe evaluate` reports it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from segpipe.config import InferConfig
from segpipe.metrics.patients import PatientScores
from segpipe.networks.inference import optimize_for_inference
from segpipe.transforms.regions import RegionChain, regions_to_labels


def predict_case(predictor: torch.nn.Module, image: torch.Tensor, icfg: InferConfig, patch: list[int],
                 precision: Any, chain: RegionChain | None) -> np.ndarray:
    """Sliding-window labels of one prepared image (C, ...), as `segpipe infer` decides them."""
    with precision.autocast():
        logits = sliding_window_inference(
            image[None], roi_size=patch, sw_batch_size=icfg.sw_batch_size, predictor=predictor,
            overlap=icfg.overlap, mode=icfg.mode,
        )
    if chain is not None:
        return regions_to_labels(torch.sigmoid(logits[0].float()), chain)[0].numpy()
    return logits.argmax(1)[0].cpu().numpy()


@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[dict[str, str]], icfg: InferConfig, patch: list[int],
             structures: dict[str, list[int]], label_structures: list[str], device: torch.device, precision: Any,
             chain: RegionChain | None = None) -> dict[str, float]:
    """Mean over patients of each structure's Dice, a patient's slices pooled, and of their mean label Dice.

    Runs a copy of `net` rewritten for inference as `segpipe infer` does (infer.fuse,
    infer.channels_last), and scores with the code `segpipe evaluate` uses, so the
    returned "mean" is the `dice_mean` of evaluate's summary for the same predictions.

    Args:
        cases: dicts with the prepared "image" and "label" arrays and the case's "patient".
        structures: name -> labels scored (labels by name, then regions).
        label_structures: the names whose mean is the patient's mean label Dice.
        chain: nested regions when the network predicts regions, else None.
    """
    net.eval()
    predictor = optimize_for_inference(net, channels_last=icfg.channels_last) if icfg.fuse else net
    scores = PatientScores(structures, label_structures, distances=False)
    for case in cases:
        image = torch.from_numpy(np.load(case["image"])).to(device)
        ref = np.load(case["label"])[0]
        pred = predict_case(predictor, image, icfg, patch, precision, chain)
        scores.add(case["id"], case.get("patient", case["id"]), pred, ref, [1.0] * ref.ndim)
    net.train()
    return scores.mean_dice()

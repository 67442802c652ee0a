"""Per-case confidence without ground truth, from the network's class probabilities.

The score segpipe reports is the expected Dice: for each label, the Dice between the
predicted mask and the probabilities themselves, 2 * sum(p_k * [pred = k]) /
(sum(p_k) + sum([pred = k])), averaged over the labels the case predicts or gives
probability mass to. It was chosen against the other candidates below by its Spearman
correlation with per-patient Dice on held-out patients (bench/bench_qc.py,
docs/benchmarks.md). A case with confidence under REVIEW_THRESHOLD, or with any
out-of-distribution flag, is marked `needs_review`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:  # torch's import costs a second, and evaluate reads REVIEW_THRESHOLD only
    import torch

REVIEW_THRESHOLD = 0.5  # expected Dice under this: needs review (see docs/user-guide.md)
MIN_MASS = 1.0  # a label counts for a case if it is predicted or holds this many voxels of probability


def expected_dice_terms(probs: torch.Tensor, labels: torch.Tensor) -> list[tuple[float, float]]:
    """Per label k >= 1: (2 * sum p_k [pred = k], sum p_k + sum [pred = k]), to pool over slices."""
    out = []
    for k in range(1, probs.shape[0]):
        hard = labels == k
        p = probs[k]
        out.append((float(2 * (p * hard).sum()), float(p.sum() + hard.sum())))
    return out


def expected_dice(terms: list[tuple[float, float]]) -> float:
    """Mean over labels with mass of the expected Dice; 1.0 when nothing is predicted or probable."""
    scores = [num / den for num, den in terms if den >= MIN_MASS]
    return float(np.mean(scores)) if scores else 1.0


def entropy_map(probs: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Voxel-wise entropy of the class probabilities, divided by log(C) (0 certain, 1 uniform).

    With `sigmoid` (independent region outputs), the mean binary entropy of the channels in bits.
    """
    if sigmoid:
        p = probs.clamp(1e-8, 1 - 1e-8)
        return (-(p * p.log2() + (1 - p) * (1 - p).log2())).mean(0)
    p = probs.clamp_min(1e-8)
    return -(p * p.log()).sum(0) / float(np.log(probs.shape[0]))


def region_terms(probs: torch.Tensor, labels: torch.Tensor, members: list[list[int]]) -> list[tuple[float, float]]:
    """Expected Dice terms of sigmoid region outputs: channel r against the labels in region r."""
    import torch

    out = []
    for r, values in enumerate(members):
        hard = torch.isin(labels, torch.tensor(values, dtype=labels.dtype))
        p = probs[r]
        out.append((float(2 * (p * hard).sum()), float(p.sum() + hard.sum())))
    return out


def tumour_regions(labels: np.ndarray, band: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The predicted tumour grown by `band` voxels, and its boundary band alone."""
    tumour = labels > 0
    grown = ndimage.binary_dilation(tumour, iterations=band) if tumour.any() else tumour
    shrunk = ndimage.binary_erosion(tumour, iterations=band) if tumour.any() else tumour
    return grown, grown & ~shrunk


def whole_tumour_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of the non-zero parts of two label maps (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def candidates(probs: torch.Tensor, labels: torch.Tensor, mirrored: torch.Tensor | None = None) -> dict[str, float]:
    """Every candidate signal of one case (higher = more confident), for the benchmark.

    Args:
        probs: class probabilities (C, ...), one pass.
        labels: their argmax (...).
        mirrored: probabilities of a pass on the mirrored image, mirrored back.
    """
    lab = labels.numpy()
    grown, band = tumour_regions(lab)
    entropy = entropy_map(probs).numpy()
    maxprob = probs.max(0).values.numpy()
    out = {
        "expected_dice": expected_dice(expected_dice_terms(probs, labels)),
        "entropy_tumour": 1.0 - float(entropy[grown].mean()) if grown.any() else 1.0,
        "entropy_band": 1.0 - float(entropy[band].mean()) if band.any() else 1.0,
        "maxprob_tumour": float(maxprob[grown].mean()) if grown.any() else 1.0,
        "tumour_voxels": float((lab > 0).sum()),
    }
    if mirrored is not None:
        out["tta_dice"] = whole_tumour_dice(lab, mirrored.argmax(0).numpy())
    return out

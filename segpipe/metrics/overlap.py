"""Segmentation metrics on label maps (numpy), shared by validation and evaluation.

Conventions (also written to every report's summary.json):
- Dice is NaN when reference and prediction are both empty, 0 when only one is.
- HD95 is NaN when either mask is empty (no surface to measure from).
- Sensitivity is NaN when the reference is empty; precision when the prediction is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

EMPTY_CONVENTION = {
    "dice": "NaN when reference and prediction are both empty (left out of the statistics); 0 when only one is empty",
    "hd95_mm": "NaN when either mask is empty",
    "sensitivity": "NaN when the reference is empty",
    "precision": "NaN when the prediction is empty",
}


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty."""
    p = np.count_nonzero(pred)
    r = np.count_nonzero(ref)
    if p + r == 0:
        return float("nan")
    return 2.0 * np.count_nonzero(pred & ref) / (p + r)


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Iterable[int]) -> dict[int, float]:
    """Dice for each label value."""
    return {int(k): dice(pred == k, ref == k) for k in labels}


def dice_per_region(pred: np.ndarray, ref: np.ndarray, regions: dict[str, list[int]]) -> dict[str, float]:
    """Dice for each region, a region being the union of some labels."""
    return {name: dice(np.isin(pred, members), np.isin(ref, members)) for name, members in regions.items()}


def _edges(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The box around a non-empty mask, one voxel wider on each side, from per-axis projections
    (np.nonzero would list every voxel of it: a seventh of evaluate's time on BraTS volumes)."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return tuple(box)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of `pred` to the surface of `ref`, and back.

    Surfaces are the voxels removed by one binary erosion; both masks are cropped to
    the bounding box of their union (plus one voxel) first, which changes no distance.
    """
    union = pred | ref
    if not union.any():
        return np.empty(0), np.empty(0)
    box = _bounding_box(union)
    p, r = pred[box], ref[box]
    if not p.any() or not r.any():
        return np.empty(0), np.empty(0)
    ep, er = _edges(p), _edges(r)
    to_ref = ndimage.distance_transform_edt(~er, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~ep, sampling=spacing)
    return to_ref[ep], to_pred[er]


def hd95_from_distances(d_pred: np.ndarray, d_ref: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance from directed surface distances."""
    if d_pred.size == 0 or d_ref.size == 0:
        return float("nan")
    return float(max(np.percentile(d_pred, 95), np.percentile(d_ref, 95)))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm; NaN when either mask is empty."""
    return hd95_from_distances(*surface_distances(pred, ref, spacing))


@dataclass
class OverlapTally:
    """Voxel counts and surface distances of one structure, pooled over slices or volumes.

    Adding the slices of a patient one by one and reading the scores at the end gives the
    patient's pooled scores: one Dice over all its voxels, not a mean of slice Dice. HD95
    pools the surface distances of the slices where both masks are non-empty; a slice
    where only one is non-empty lowers Dice, sensitivity or precision, not HD95.
    """

    tp: int = 0
    pred: int = 0
    ref: int = 0
    d_pred: list[np.ndarray] = field(default_factory=list)
    d_ref: list[np.ndarray] = field(default_factory=list)
    ref_ml: float = 0.0
    pred_ml: float = 0.0

    def add(self, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], distances: bool = True) -> None:
        """Add one slice or volume."""
        voxel_ml = float(np.prod(spacing)) / 1000.0
        p, r = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
        self.tp += int(np.count_nonzero(pred & ref))
        self.pred += p
        self.ref += r
        self.pred_ml += p * voxel_ml
        self.ref_ml += r * voxel_ml
        if distances and p and r:
            dp, dr = surface_distances(pred, ref, spacing)
            self.d_pred.append(dp)
            self.d_ref.append(dr)

    def scores(self) -> dict[str, float]:
        """Dice, HD95 (mm), volumes (ml), sensitivity and precision."""
        nan = float("nan")
        hd = nan
        if self.d_pred:
            hd = hd95_from_distances(np.concatenate(self.d_pred), np.concatenate(self.d_ref))
        return {
            "dice": (2.0 * self.tp / (self.pred + self.ref)) if self.pred + self.ref else nan,
            "hd95_mm": hd,
            "vol_ref_ml": self.ref_ml,
            "vol_pred_ml": self.pred_ml,
            "sensitivity": self.tp / self.ref if self.ref else nan,
            "precision": self.tp / self.pred if self.pred else nan,
        }

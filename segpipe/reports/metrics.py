"""Overlap metrics on integer label maps (numpy), shared by validation and evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (the case is not scored)."""
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

"""Connected-component clean-up of label maps.

MONAI's KeepLargestConnectedComponent needs scikit-image, which segpipe does not depend
on; scipy.ndimage (already a dependency) does the same job in a few lines.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage


def keep_largest_component(labels: np.ndarray, label_ids: Iterable[int]) -> np.ndarray:
    """For each label in `label_ids`, keep only its largest connected component."""
    out = labels.copy()
    for k in label_ids:
        components, n = ndimage.label(labels == k)
        if n > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != int(np.argmax(sizes)) + 1)] = 0
    return out


def remove_small_components(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Set components (of any non-zero label) smaller than `min_size` voxels to background."""
    if min_size <= 1:
        return labels
    out = labels.copy()
    for k in np.unique(labels):
        if k == 0:
            continue
        components, n = ndimage.label(labels == k)
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < min_size)
        small = small[small > 0]
        if small.size:
            out[np.isin(components, small)] = 0
    return out


def postprocess(labels: np.ndarray, keep_largest: Iterable[int] = (), min_size: int = 0) -> np.ndarray:
    """Both clean-ups, as configured."""
    keep = list(keep_largest)
    if keep:
        labels = keep_largest_component(labels, keep)
    return remove_small_components(labels, min_size)

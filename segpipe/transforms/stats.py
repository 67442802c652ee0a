"""IntensityStatsd: per-channel raw intensity statistics for the dataset fingerprint.

MONAI's `IntensityStatsd` writes to the metadata and has no per-channel foreground
percentiles; nnU-Net-style planning needs them over the labelled foreground.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.transforms import MapTransform


class IntensityStatsd(MapTransform):
    """Store mean, std, 0.5/99.5 percentiles and voxel count of each channel.

    Args:
        keys: the image key (one).
        mask_key: where this key's array is > 0, voxels are foreground; without it
            (or where it is empty), the non-zero voxels of the image are used.
        out_key: the data key the list of per-channel dicts is written to.
    """

    def __init__(self, keys: str, mask_key: str | None = None, out_key: str = "intensity_stats") -> None:
        super().__init__(keys)
        self.mask_key = mask_key
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            mask = None
            if self.mask_key is not None and self.mask_key in d:
                mask = torch.as_tensor(d[self.mask_key])[0] > 0
                if not bool(mask.any()):
                    mask = None
            stats = []
            for channel in image:
                sel = mask if mask is not None else channel != 0
                values = channel[sel].float().numpy() if bool(sel.any()) else channel.float().numpy().ravel()
                if values.size > 200_000:  # percentiles of a fixed-stride sample are ample for planning
                    values = values[:: values.size // 200_000]
                lo, hi = np.percentile(values, [0.5, 99.5])
                stats.append(
                    {
                        "mean": float(values.mean()),
                        "std": float(values.std()),
                        "p00_5": float(lo),
                        "p99_5": float(hi),
                        "voxels": int(sel.sum()),
                    }
                )
            d[self.out_key] = stats
        return d

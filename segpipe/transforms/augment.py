"""Training-time MONAI chains: patch sampling with foreground oversampling, flips, intensity."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import (
    Compose,
    EnsureTyped,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)

KEYS = ["image", "label"]


def training_chain(patch_size: Sequence[int], samples_per_volume: int, pos_neg_ratio: float = 1.0) -> Compose:
    """Pad to the patch, sample `samples_per_volume` patches (pos:neg = ratio), augment.

    Args:
        patch_size: spatial patch size (2 or 3 values).
        samples_per_volume: patches drawn per loaded case.
        pos_neg_ratio: how many patches centred on foreground per background one.
    """
    dims = len(patch_size)
    return Compose(
        [
            EnsureTyped(KEYS, track_meta=False),
            SpatialPadd(KEYS, spatial_size=list(patch_size)),
            RandCropByPosNegLabeld(
                KEYS,
                label_key="label",
                spatial_size=list(patch_size),
                pos=pos_neg_ratio,
                neg=1.0,
                num_samples=samples_per_volume,
            ),
            *[RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in range(dims)],
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        ]
    )

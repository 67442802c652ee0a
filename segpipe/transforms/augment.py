"""Training-time MONAI chains: patch sampling with foreground oversampling, then augmentation
chosen by name in the config (`train.augment`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandHistogramShiftd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    SpatialPadd,
    Transform,
)
from monai.transforms.utils import map_binary_to_indices

from segpipe.errors import SegpipeError

KEYS = ["image", "label"]
INDEX_KEYS = ("fg_indices", "bg_indices")
MAX_INDICES = 100_000  # per class and case: 0.4 MB, where a BraTS volume's background has 3.3 million voxels


class CropIndicesd(Transform):
    """The voxel indices that `RandCropByPosNegLabeld` draws patch centres from, found once per case.

    MONAI's crop searches the whole label on every draw; these are the same indices (MONAI's
    `map_binary_to_indices`; for integer labels its "background" draws range over every voxel, like
    nnU-Net's unforced patches), found once: figshare_2d's batch 15.2 -> 12.6 ms (bench/bench_loader.py).
    Deterministic, so `CacheDataset` keeps them with the case; the crop takes them out of its samples.
    More than `limit` of one kind are thinned to `limit` random draws (fewer where two draws meet),
    the same on every run.
    """

    def __init__(self, limit: int = MAX_INDICES) -> None:
        self.limit = limit

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key, found in zip(INDEX_KEYS, map_binary_to_indices(d["label"])):
            found = np.asarray(found).ravel()
            if found.size > self.limit:
                found = np.unique(found[np.random.default_rng(found.size).integers(0, found.size, self.limit)])
            d[key] = found.astype(np.int32 if found.size == 0 or found[-1] < 2**31 else np.int64)
        return d


def _flip(patch: Sequence[int]) -> list[Transform]:
    return [RandFlipd(KEYS, prob=0.5, spatial_axis=axis) for axis in range(len(patch))]


def _rotate90(patch: Sequence[int]) -> list[Transform]:
    # only in planes where the patch is square, so every sample keeps the patch shape
    planes = [(a, b) for a in range(len(patch)) for b in range(a + 1, len(patch)) if patch[a] == patch[b]]
    return [RandRotate90d(KEYS, prob=0.5, max_k=3, spatial_axes=plane) for plane in planes[:1]]


def _affine(patch: Sequence[int]) -> list[Transform]:
    angle = math.radians(15)
    rotate = (angle,) if len(patch) == 2 else (angle, angle, angle)
    return [
        RandAffined(
            KEYS, prob=0.2, rotate_range=rotate, scale_range=[0.15] * len(patch),
            mode=("bilinear", "nearest"), padding_mode="zeros", spatial_size=list(patch),
        )
    ]


AUGMENTATIONS: dict[str, Callable[[Sequence[int]], list[Transform]]] = {
    "flip": _flip,
    "rotate90": _rotate90,
    "affine": _affine,
    "scale_intensity": lambda _: [RandScaleIntensityd("image", factors=0.1, prob=0.5)],
    "shift_intensity": lambda _: [RandShiftIntensityd("image", offsets=0.1, prob=0.5)],
    "gaussian_noise": lambda _: [RandGaussianNoised("image", prob=0.15, std=0.1)],
    "adjust_contrast": lambda _: [RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5))],
    # how tumour and tissue look varies between patients (scanner, contrast uptake): a random monotone
    # remapping of intensities, and a smooth multiplicative bias field
    "histogram_shift": lambda _: [RandHistogramShiftd("image", num_control_points=(5, 15), prob=0.3)],
    "bias_field": lambda _: [RandBiasFieldd("image", prob=0.3)],
    # nnU-Net's remaining intensity augmentations, with its probabilities: Gaussian blur, a lower
    # resolution simulated (down by up to 2x, nearest, and back up), gamma on the inverted image
    "blur": lambda _: [
        RandGaussianSmoothd("image", sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0), prob=0.2)
    ],
    "low_resolution": lambda patch: [
        RandSimulateLowResolutiond(
            "image", prob=0.25, zoom_range=(0.5, 1.0), upsample_mode="bicubic" if len(patch) == 2 else "trilinear"
        )
    ],
    "inverted_gamma": lambda _: [
        RandAdjustContrastd("image", prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True)
    ],
}


def augmentations(names: Sequence[str], patch_size: Sequence[int]) -> list[Transform]:
    """The MONAI transforms for augmentation names, in the order given.

    Raises:
        SegpipeError: an unknown name (the message lists the known ones).
    """
    out: list[Transform] = []
    for name in names:
        if name not in AUGMENTATIONS:
            raise SegpipeError(f"config key 'train.augment': unknown augmentation {name!r} (known: {', '.join(AUGMENTATIONS)})")
        out.extend(AUGMENTATIONS[name](patch_size))
    return out


def training_chain(
    patch_size: Sequence[int],
    samples_per_volume: int,
    pos_neg_ratio: float = 1.0,
    augment: Sequence[str] = ("flip", "scale_intensity", "shift_intensity"),
) -> Compose:
    """Pad to the patch, sample `samples_per_volume` patches (pos:neg = ratio), augment.

    Works in 2D and 3D alike: the number of spatial dimensions is that of `patch_size`.

    Args:
        patch_size: spatial patch size (2 or 3 values).
        samples_per_volume: patches drawn per loaded case.
        pos_neg_ratio: how many patches centred on foreground per background one.
        augment: augmentation names (see `AUGMENTATIONS`).
    """
    return Compose(
        [
            EnsureTyped(KEYS, track_meta=False),
            SpatialPadd(KEYS, spatial_size=list(patch_size)),
            CropIndicesd(),
            RandCropByPosNegLabeld(
                KEYS, label_key="label", spatial_size=list(patch_size), pos=pos_neg_ratio, neg=1.0,
                num_samples=samples_per_volume, fg_indices_key=INDEX_KEYS[0], bg_indices_key=INDEX_KEYS[1],
            ),
            *augmentations(augment, patch_size),
        ]
    )


def with_prepared_loading(chain: Compose) -> Compose:
    """`chain` after loading a prepared case's `.npy` files: what `fit` draws its batches through."""
    return Compose([LoadImaged(KEYS, reader="NumpyReader", image_only=True), *chain.transforms])

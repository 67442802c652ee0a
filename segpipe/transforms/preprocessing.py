"""The MONAI transform chain that turns a raw case into network input, and its inverse."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from segpipe.transforms.stats import IntensityStatsd
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)


def _nonzero_any_channel(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Foreground = voxels where any channel is non-zero (the brain in skull-stripped MRI)."""
    return (image != 0).any(0, keepdims=True) if isinstance(image, np.ndarray) else (image != 0).any(0, keepdim=True)


def preprocessing_chain(
    target_spacing: Sequence[float],
    *,
    with_label: bool = True,
    orientation: str = "RAS",
    crop_foreground: bool = True,
    normalize_nonzero: bool = True,
    record_stats: bool = False,
) -> Compose:
    """Load, channel-first, reorient, crop to the foreground, normalise, resample.

    Cropping comes before resampling so the resampler touches only the brain. Every
    spatial step is invertible, so `invert_prediction` maps a prediction back onto the
    input's own grid.

    Args:
        target_spacing: voxel size in mm after resampling, in `orientation` axis order.
        with_label: also load and transform the "label" key.
        orientation: axis codes to reorient to.
        crop_foreground: crop to the bounding box of non-zero voxels.
        normalize_nonzero: z-score each channel over its non-zero voxels only.
        record_stats: store raw per-channel intensity statistics (before normalisation)
            under the "intensity_stats" key, for the dataset fingerprint.
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    steps = [
        LoadImaged(keys, image_only=True),
        EnsureChannelFirstd(keys),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
        Orientationd(keys, axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if crop_foreground:
        steps.append(CropForegroundd(keys, source_key="image", select_fn=_nonzero_any_channel, allow_smaller=True))
    if record_stats:
        steps.append(IntensityStatsd("image", mask_key="label" if with_label else None))
    steps.append(NormalizeIntensityd("image", nonzero=normalize_nonzero, channel_wise=True))
    steps.append(Spacingd(keys, pixdim=tuple(float(s) for s in target_spacing), mode=modes))
    if with_label:
        steps.append(CastToTyped("label", dtype=torch.uint8))
    return Compose(steps)


def invert_prediction(chain: Compose, data: dict, pred: torch.Tensor) -> torch.Tensor:
    """Map a (1, ...) label map on the preprocessed grid back onto the input's voxel grid.

    Args:
        chain: the chain that produced `data["image"]` (with the image key only).
        data: the chain's output, whose "image" carries the applied operations.
        pred: integer labels on the preprocessed grid, channel-first.
    """
    from monai.data import MetaTensor

    image = data["image"]
    meta_pred = MetaTensor(pred.float(), meta=dict(image.meta))
    meta_pred.applied_operations = list(image.applied_operations)
    inverted = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=True)(
        {"image": image, "pred": meta_pred}
    )["pred"]
    return torch.as_tensor(inverted).round().to(torch.uint8)

"""The MONAI transform chain that turns a raw case into network input, and its inverse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    CastToTyped,
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from segpipe.transforms.checks import CheckCased, CheckResampledSized, GuardFilesd
from segpipe.transforms.stats import Contiguousd, IntensityStatsd, LabelVoxelsd, NormalizeNonzeroChannelwised


def _nonzero_any_channel(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Foreground = voxels where any channel is non-zero (the brain in skull-stripped MRI)."""
    return (image != 0).any(0, keepdims=True) if isinstance(image, np.ndarray) else (image != 0).any(0, keepdim=True)


def preprocessing_chain(
    target_spacing: Sequence[float] | None,
    *,
    with_label: bool = True,
    orientation: str | None = "RAS",
    crop_foreground: bool = True,
    normalize_nonzero: bool = True,
    record_stats: bool = False,
    record_qc: bool = False,
    image_reader: Any = None,
    label_reader: Any = None,
    label_mapping: dict[int, int] | None = None,
    labels: dict[int, str] | None = None,
) -> Compose:
    """Load, channel-first, reorient, crop to the foreground, normalise, resample.

    Cropping comes before resampling so the resampler touches only the brain. Every
    spatial step is invertible, so `segpipe.transforms.inversion.invert_to_input` maps a prediction back onto the
    input's own grid.

    Args:
        target_spacing: voxel size in mm after resampling, in `orientation` axis order;
            None keeps the input grid (2D slices).
        with_label: also load and transform the "label" key.
        orientation: axis codes to reorient to; None keeps the stored axes (2D slices).
        crop_foreground: crop to the bounding box of voxels non-zero in any channel (with a
            label, its non-zero voxels before and after go under "labelled_voxels" and
            "labelled_voxels_cropped": not "label_...", which MONAI's Spacingd takes for the
            label's metadata).
        normalize_nonzero: z-score each channel over its non-zero voxels only.
        record_stats: store raw per-channel intensity statistics (before normalisation)
            under the "intensity_stats" key, for the dataset fingerprint.
        record_qc: store the raw image's quality-control features (segpipe.qc.features)
            under the "qc_features" key, for out-of-distribution checks.
        image_reader, label_reader: MONAI readers for LoadImaged (None: by file suffix).
        label_mapping: label value substitutions applied on load (e.g. BraTS 1/2/4).
        labels: the declared label values; given, a label with values that are not
            integers, not mapped or not declared is refused (as `--verify-only` reports it).
    """
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    steps: list = [GuardFilesd(keys), LoadImaged("image", reader=image_reader, image_only=True)]
    if with_label:
        # the label as stored (LoadImaged's float32 would round 1.00000001 to 1 before CheckCased sees it)
        steps.append(LoadImaged("label", reader=label_reader, image_only=True, dtype=None))
    steps += [EnsureChannelFirstd(keys), CheckCased(labels=labels, label_mapping=label_mapping or None),
              EnsureTyped(keys, dtype=torch.float32, track_meta=True)]
    if with_label and label_mapping:
        src = sorted(label_mapping)
        steps.append(MapLabelValued("label", orig_labels=src, target_labels=[label_mapping[k] for k in src], dtype=np.float32))
    if orientation:
        steps.append(Orientationd(keys, axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if crop_foreground:
        if with_label:
            steps.append(LabelVoxelsd("label", "labelled_voxels"))
        steps.append(CropForegroundd(keys, source_key="image", select_fn=_nonzero_any_channel, allow_smaller=True))
        if with_label:
            steps.append(LabelVoxelsd("label", "labelled_voxels_cropped"))
    # NIfTI volumes load channel-last in memory and cropping yields a strided view; one copy
    # of the (smaller) cropped block into channel-first order makes the per-channel masked
    # statistics and normalisation below several times faster. Values are unchanged.
    steps.append(Contiguousd(keys))
    if record_stats:
        steps.append(IntensityStatsd("image", mask_key="label" if with_label else None))
    if record_qc:
        from segpipe.qc.features import QCFeaturesd

        steps.append(QCFeaturesd("image"))
    if normalize_nonzero:  # MONAI's NormalizeIntensityd(nonzero=True, channel_wise=True), bit for bit, faster
        steps.append(NormalizeNonzeroChannelwised("image"))
    else:
        steps.append(NormalizeIntensityd("image", nonzero=False, channel_wise=True))
    if target_spacing:
        pixdim = tuple(float(s) for s in target_spacing)
        steps += [CheckResampledSized(pixdim), Spacingd(keys, pixdim=pixdim, mode=modes)]
    if with_label:
        steps.append(CastToTyped("label", dtype=torch.uint8))
    return Compose(steps)


def chain_for(settings: dict[str, Any], layout: str, *, with_label: bool, record_stats: bool = False,
              record_qc: bool = False, label_mapping: dict[int, int] | None = None, path: Any = None,
              labels: dict[int, str] | None = None, label_path: Any = None) -> Compose:
    """The chain a prepared dataset's recorded settings describe, for files of `layout` (readers
    chosen for the image at `path` and the label at `label_path`)."""
    from segpipe.data.loading import monai_reader

    return preprocessing_chain(
        settings["target_spacing"],
        with_label=with_label,
        orientation=settings["orientation"],
        crop_foreground=settings["crop_foreground"],
        normalize_nonzero=settings["normalize_nonzero"],
        record_stats=record_stats,
        record_qc=record_qc,
        image_reader=monai_reader(layout, "image", path),
        label_reader=monai_reader(layout, "label", label_path),
        label_mapping=label_mapping,
        labels=labels,
    )

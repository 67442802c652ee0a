"""CheckCased: refuse a case whose voxels or geometry cannot be right, before it is cached."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from segpipe.errors import SegpipeError


def _source(tensor: Any) -> str:
    name = getattr(tensor, "meta", {}).get("filename_or_obj", "input")
    return str(name[0] if isinstance(name, (list, tuple)) else name)


class GuardFilesd(Transform):
    """Before LoadImaged: every file of `keys` passes `segpipe.data.guard.check_read`
    (inside the inputs, header-named files too, within the size limits, real-valued)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        from segpipe.data.guard import check_channel_grids, check_read

        for key in self.keys:
            value = data.get(key)
            paths = [p for p in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(p, (str, Path))]
            for path in paths:
                check_read(path)
            check_channel_grids(paths)
        return data


MAX_COARSENING = 20.0  # a target spacing this many times an image's voxel size is a unit slip, not a choice
MIN_SIDE = 8  # axes of fewer voxels (a slab's few slices) are left to the spacing they have


class CheckResampledSized(Transform):
    """Before Spacingd: refuse an image that resampled to `pixdim` would pass the memory
    limit of `segpipe.limits` (a fine `preprocess.target_spacing` turns a small image into
    gigabytes before any check on the file could see it)."""

    def __init__(self, pixdim: tuple[float, ...]) -> None:
        self.pixdim = np.asarray(pixdim, dtype=float)

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        from segpipe.limits import check_image_size

        image = data["image"]
        shape = np.asarray(image.shape[1:], dtype=float)
        affine = np.asarray(getattr(image, "affine", np.eye(len(shape) + 1)), dtype=float)
        spacing = np.linalg.norm(affine[: len(shape), : len(shape)], axis=0)
        target = np.resize(self.pixdim, len(shape))
        sides = np.ceil(shape * spacing / target)
        coarser = (shape >= MIN_SIDE) & (target > MAX_COARSENING * spacing)
        if coarser.any():  # a unit slip (micrometres for mm) leaves a case of a few voxels, its tumour gone
            raise SegpipeError(f"config key 'preprocess.target_spacing': {tuple(float(v) for v in target)} mm is over "
                               f"{MAX_COARSENING:g}x the voxel size of {_source(image)} ({' x '.join(f'{v:.3g}' for v in spacing)} "
                               f"mm) and leaves it {' x '.join(str(int(v)) for v in sides)} voxels; give the spacing in mm")
        check_image_size(f"{_source(image)} resampled to {tuple(float(v) for v in target)} mm",
                         (*(int(v) for v in sides), int(image.shape[0])))
        return data


class CheckCased(Transform):
    """Raise a one-line SegpipeError for what `--verify-only` calls an error: NaN/Inf image
    voxels, a singular affine, a label whose grid (shape or affine) differs from the
    image's, and label values that are not integers, not mapped or not declared (the
    checks of `segpipe.data.validate`). Runs right after loading, before any rounding or
    casting, so the message names the file as the user has it and the values as stored."""

    def __init__(self, labels: dict[int, str] | None = None, label_mapping: dict[int, int] | None = None) -> None:
        self.labels = labels
        self.label_mapping = label_mapping

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        from segpipe.data.validate import affine_problem, grid_problem, image_problem, label_problem

        image = data["image"]
        problem = image_problem(torch.as_tensor(image).numpy()) or affine_problem(np.asarray(getattr(image, "affine", np.eye(4))))
        if problem:
            raise SegpipeError(f"{_source(image)}: {problem}")
        finite = torch.isfinite(torch.as_tensor(image))
        if not bool(finite.all()):
            values = torch.as_tensor(image)[~finite]
            nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            raise SegpipeError(f"{_source(image)}: image has {nan} NaN and {inf} Inf voxel(s)")
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            if label.shape[0] != 1:
                raise SegpipeError(f"{_source(label)}: label has {label.shape[0]} channels (a label map has one)")
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise SegpipeError(
                    f"{_source(label)}: label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])}"
                )
            a, b = np.asarray(getattr(label, "affine", np.eye(4))), np.asarray(getattr(image, "affine", np.eye(4)))
            problem = grid_problem(np.asarray(a, dtype=float), np.asarray(b, dtype=float)) if a.shape == b.shape else None
            if problem:  # verify's words
                raise SegpipeError(f"{_source(label)}: label {problem} of image {Path(_source(image)).name}")
            if self.labels is not None:
                problem = label_problem(np.asarray(torch.as_tensor(label).numpy()), self.labels, self.label_mapping)
                if problem:
                    raise SegpipeError(f"{_source(label)}: {problem}")
        return data

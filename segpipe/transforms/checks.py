"""CheckCased: refuse a case whose voxels or geometry cannot be right, before it is cached."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from segpipe.errors import SegpipeError


def _source(tensor: Any) -> str:
    name = getattr(tensor, "meta", {}).get("filename_or_obj", "input")
    return str(name[0] if isinstance(name, (list, tuple)) else name)


class CheckCased(Transform):
    """Raise a one-line SegpipeError for NaN/Inf image voxels, and for a label whose grid
    (shape or affine) differs from the image's. Runs right after loading, so the message
    names the file as the user has it."""

    def __init__(self, affine_tolerance: float = 1e-3) -> None:
        self.affine_tolerance = affine_tolerance

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        image = data["image"]
        finite = torch.isfinite(torch.as_tensor(image))
        if not bool(finite.all()):
            values = torch.as_tensor(image)[~finite]
            nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
            raise SegpipeError(f"{_source(image)}: image has {nan} NaN and {inf} Inf voxel(s)")
        label = data.get("label")
        if label is not None and not isinstance(label, str):
            if tuple(label.shape[1:]) != tuple(image.shape[1:]):
                raise SegpipeError(
                    f"{_source(label)}: label shape {tuple(label.shape[1:])} differs from image shape {tuple(image.shape[1:])}"
                )
            a, b = np.asarray(getattr(label, "affine", np.eye(4))), np.asarray(getattr(image, "affine", np.eye(4)))
            scale = max(float(np.abs(b).max()), 1.0)
            if a.shape == b.shape and not np.allclose(a, b, atol=self.affine_tolerance * scale):
                raise SegpipeError(f"{_source(label)}: label affine differs from the image's ({_source(image)})")
        return data

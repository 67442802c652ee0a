"""MONAI `ImageReader` for figshare MAT-files (see `segpipe.data.figshare` for the format)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader

from segpipe.data.mat_file import pixel_spacing, read_mat_field
from segpipe.errors import SegpipeError


class FigshareMatReader(ImageReader):
    """MONAI `ImageReader` for figshare MAT-files: `LoadImaged(keys, reader=FigshareMatReader("image"))`.

    Arrays come back as MATLAB shows them, (rows, cols), without a channel axis
    (`original_channel_dim="no_channel"`). The files carry no geometry: the affine
    scales the axes by the set's pixel size for that slice size (`mat_file.pixel_spacing`:
    0.49 mm at 512 x 512, 0.98 mm at 256 x 256). Several files given together are stacked as channels.

    Args:
        field: "image" or "tumorMask" (any 2D field of `cjdata` works).
    """

    def __init__(self, field: str = "image", **kwargs: Any) -> None:
        super().__init__()
        self.field = field
        self.kwargs = kwargs

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return bool(names) and all(str(n).lower().endswith(".mat") for n in names)

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> np.ndarray | list[np.ndarray]:
        paths = [data] if isinstance(data, (str, Path)) else list(data)
        arrays = [read_mat_field(p, self.field) for p in paths]
        return arrays[0] if len(arrays) == 1 else arrays

    def get_data(self, img: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, dict]:
        arrays = img if isinstance(img, list) else [img]
        shape = arrays[0].shape
        for a in arrays[1:]:
            if a.shape != shape:
                raise SegpipeError(f"cjdata.{self.field}: channel files differ in shape ({shape} vs {a.shape})")
        affine = np.diag([*pixel_spacing(shape), 1.0, 1.0])
        meta: dict[str, Any] = {
            "spatial_shape": np.asarray(shape),
            "affine": affine,
            "original_affine": affine.copy(),
            "original_channel_dim": "no_channel",
            "space": "RAS",
        }
        if len(arrays) == 1:
            return arrays[0], meta
        meta["original_channel_dim"] = 0
        return np.stack(arrays, 0), meta

    def __repr__(self) -> str:
        return f"FigshareMatReader(field={self.field!r})"


__all__ = ["FigshareMatReader"]

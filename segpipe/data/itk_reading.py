"""Reading NRRD, MetaImage and DICOM through ITK, whatever component type a file holds.

ITK's Python wrapping has no image type for some component types (int8, int64), so
`itk.imread` fails on them with "itk.Image is not wrapped for input type itk.SLL". A
one-component file of such a type is read as float64 instead, which holds every label value
and every intensity exactly (to 2^53). A file of several components is refused in one line:
read as one type, ITK would fold its components into one value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import itk
from monai.data import ITKReader
from monai.utils import ensure_tuple

from segpipe.errors import SegpipeError


def _fallback_type(path: Path, error: Exception) -> Any:
    """The pixel type to read `path` as when ITK's wrapping lacks its own; `error` is raised
    again when the file's header cannot say."""
    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode) if path.is_file() else None
    if io is None:
        raise error
    io.SetFileName(str(path))
    io.ReadImageInformation()
    components = io.GetNumberOfComponents()
    if components != 1:
        kind = io.GetComponentTypeAsString(io.GetComponentType())
        pixel = io.GetPixelTypeAsString(io.GetPixelType())
        shown = "" if pixel in ("scalar", "vector") else f" in {pixel} pixels"
        raise SegpipeError(f"{path}: {components} components of type {kind}{shown}, which ITK cannot read as they are; "
                           "store one channel per file, or the channels as a float32 vector (NRRD kind 'vector', "
                           "MetaImage ElementNumberOfChannels)")
    return itk.D


def imread(path: str | Path) -> Any:
    """`itk.imread(path)`, reading component types ITK's wrapping lacks as float64."""
    try:
        return itk.imread(str(path))
    except itk.TemplateTypeError as exc:
        return itk.imread(str(path), _fallback_type(Path(path), exc))


def _check_series_read(data: Any, images: Any) -> None:
    """Each DICOM series folder read whole: ITK reads only the first part of a series that its
    own rules split."""
    from segpipe.data.dicom import check_volume_slices

    for path, image in zip(ensure_tuple(data), images if isinstance(images, (list, tuple)) else [images]):
        if Path(path).is_dir():
            size = image.GetLargestPossibleRegion().GetSize()
            check_volume_slices(Path(path), int(size[2]) if len(size) > 2 else 1)


class AnyTypeITKReader(ITKReader):
    """MONAI's ITKReader, reading component types ITK's wrapping lacks as float64, and
    refusing a DICOM series read in part."""

    def read(self, data: Any, **kwargs: Any) -> Any:
        try:
            images = super().read(data, **kwargs)
        except itk.TemplateTypeError as exc:
            pixel_type = _fallback_type(Path(ensure_tuple(data)[0]), exc)
            images = super().read(data, **{**kwargs, "pixel_type": pixel_type})
        _check_series_read(data, images)
        return images

"""How the pipeline loads a case of any layout: the MONAI reader per layout and key.

Contract: the pipeline builds `LoadImaged(key, reader=monai_reader(layout, key, path))`
with `layout = case.attrs.get("layout", dataset.layout)`, then `EnsureChannelFirstd`, then
(for labels) `MapLabelValued` with `dataset.label_mapping`. `load_case` / `load_arrays` do
exactly that and are what verify and the tests use.

Orientation of 2D files (write predictions back the same way):

- PNG ("slices"): MONAI's PILReader (default `reverse_indexing=True`) returns the
  *transpose* of what `numpy.asarray(PIL.Image.open(p))` shows: a (H rows, W cols) PNG
  loads as (1, W, H), axis 0 = x (column), axis 1 = y (row), matching the x-first order
  of NIfTI/ITK arrays. To write a (1, W, H) mask back: `PIL.Image.fromarray(mask[0].T)`
  (or MONAI's PILWriter, which applies the same reversal), giving the original H x W.
- MAT ("figshare"): `FigshareMatReader` returns arrays as MATLAB shows them, (rows, cols),
  i.e. the transpose of the HDF5 dataset; loaded as (1, rows, cols). Write back with
  `segpipe.data.figshare.write_figshare_mat(path, image, mask[0])`, which transposes again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.guard import check_read
from segpipe.errors import SegpipeError, reader_error

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
SPATIAL_DIMS = {"slices": 2, "figshare": 2}
_FIGSHARE_FIELDS = {"image": "image", "label": "tumorMask"}


def monai_reader(layout: str, key: str, path: str | Path | None = None) -> Any:
    """What to pass as `LoadImaged(reader=...)` for `layout` and `key` ("image" or "label").

    Returns:
        None (MONAI's default: NibabelReader for NIfTI) for "decathlon", "brats" and
        NIfTI files of "generic"; "PILReader" for "slices"; a `FigshareMatReader` reading
        `cjdata.image` (key "image") or `cjdata.tumorMask` (key "label") for "figshare";
        an ITKReader (one that reads any component type, `itk_reading`) for "dicom" and for
        NRRD/MHA files (give `path` for "generic").

    Raises:
        SegpipeError: an unknown layout or key.
    """
    if key not in ("image", "label"):
        raise SegpipeError(f"key {key!r}: expected 'image' or 'label'")
    if layout == "slices":
        from monai.data import PILReader

        from segpipe.data.slices import to_declared_mode

        return PILReader(converter=to_declared_mode)
    if layout == "figshare":
        from segpipe.data.mat_reader import FigshareMatReader

        return FigshareMatReader(field=_FIGSHARE_FIELDS[key])
    if layout == "dicom" or (layout in ("decathlon", "brats", "generic", "pairs") and path is not None
                             and str(path).lower().endswith(ITK_SUFFIXES)):
        from segpipe.data.itk_reading import AnyTypeITKReader

        return AnyTypeITKReader()
    if layout in ("decathlon", "brats", "generic", "pairs"):
        return None
    raise SegpipeError(f"layout {layout!r} unknown; known: decathlon, brats, slices, figshare, generic, pairs, dicom")


def layout_of(dataset: Dataset, case: Case) -> str:
    """The layout a case's files are in (inputs of mixed kinds carry their own)."""
    return str(case.attrs.get("layout", dataset.layout))


def _describe(paths: list[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} (one of {len(paths)} channel files)"


def _load(key: str, paths: list[Path], layout: str, mapping: dict[int, int] | None = None) -> Any:
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, MapLabelValued

    reader = monai_reader(layout, key, paths[0])
    steps = [LoadImaged(key, reader=reader, image_only=True), EnsureChannelFirstd(key)]
    if mapping:
        src = sorted(mapping)
        steps.append(MapLabelValued(key, orig_labels=src, target_labels=[mapping[s] for s in src], dtype=np.float32))
    value: Any = str(paths[0]) if len(paths) == 1 else [str(p) for p in paths]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SegpipeError(f"{missing[0]}: missing")
    for path in paths:
        check_read(path)  # inside the inputs, header-named files too; within the size limits
    try:
        return Compose(steps)({key: value})[key]
    except SegpipeError:
        raise
    except Exception as exc:  # MONAI wraps reader errors in RuntimeError; any failure is a bad file
        raise reader_error(exc, _describe(paths), f"cannot load {key}") from None


def load_image(case: Case, layout: str) -> Any:
    """A case's image, MetaTensor (C, *spatial), read as files of `layout`.

    Raises:
        SegpipeError: a missing or unreadable file, naming it.
    """
    return _load("image", list(case.images), layout)


def load_case(dataset: Dataset, case: Case, *, with_label: bool = True) -> dict[str, Any]:
    """{"image": MetaTensor (C, *spatial), "label": MetaTensor (1, *spatial) or None}
    through LoadImaged + EnsureChannelFirstd (+ MapLabelValued for labels).

    Raises:
        SegpipeError: a missing or unreadable file, naming it.
    """
    layout = layout_of(dataset, case)
    out: dict[str, Any] = {"image": load_image(case, layout), "label": None}
    if with_label and case.label is not None:
        out["label"] = _load("label", [case.label], layout, dataset.label_mapping)
    return out


def load_arrays(dataset: Dataset, case: Case) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, label) as numpy arrays, channel-first, labels mapped by `dataset.label_mapping`.

    Raises:
        SegpipeError: a missing or unreadable file, naming it.
    """
    data = load_case(dataset, case)
    image = np.asarray(data["image"].numpy() if hasattr(data["image"], "numpy") else data["image"])
    label = data["label"]
    if label is not None:
        label = np.asarray(label.numpy() if hasattr(label, "numpy") else label)
    return image, label


__all__ = ["monai_reader", "load_image", "load_case", "load_arrays", "layout_of", "SPATIAL_DIMS"]

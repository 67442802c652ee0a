"""Dataset readers: each layout becomes a `Dataset` of `Case` records."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.decathlon import read_decathlon
from segpipe.errors import SegpipeError

__all__ = ["Case", "Dataset", "read_dataset", "read_decathlon", "detect_layout", "LAYOUTS"]

LAYOUTS = {
    "decathlon": "dataset.json + imagesTr/ + labelsTr/ (Medical Segmentation Decathlon)",
    "slices": "training_images/ + training_labels/ PNG slices",
    "figshare": "figshare brain-tumour *.mat files",
    "brats": "BraTS case folders with *_flair ... *_seg.nii.gz (or *-t2f ... *-seg)",
    "dicom": "DICOM series folders",
    "generic": "imagesTr/ + labelsTr/ or images/ + labels/ (NIfTI, NRRD, MHA)",
}


def _reader(layout: str) -> Callable[..., Dataset]:
    if layout == "decathlon":
        return read_decathlon
    if layout == "slices":
        from segpipe.data.slices import read_slices

        return read_slices
    if layout == "figshare":
        from segpipe.data.figshare import read_figshare

        return read_figshare
    if layout == "brats":
        from segpipe.data.brats import read_brats

        return read_brats
    if layout == "dicom":
        from segpipe.data.dicom import read_dicom

        return read_dicom
    if layout == "generic":
        from segpipe.data.generic import read_generic

        return read_generic
    raise SegpipeError(f"layout {layout!r} unknown; known layouts: {', '.join(LAYOUTS)}")


def detect_layout(path: Path) -> str | None:
    """The layout of a dataset folder (first match in the order of `LAYOUTS`), or None.

    `imagesTr/` + `labelsTr/` without dataset.json is not detected (see `read_dataset`);
    `images/` + `labels/` is detected as "generic"."""
    from segpipe.data.brats import is_brats_case_folder
    from segpipe.data.dicom import is_dicom_folder
    from segpipe.data.figshare import is_figshare_folder
    from segpipe.data.generic import generic_folders
    from segpipe.data.paths import visible_dirs
    from segpipe.data.slices import is_slices_folder

    if (path / "dataset.json").is_file():
        return "decathlon"
    if is_slices_folder(path):
        return "slices"
    if is_figshare_folder(path):
        return "figshare"
    if is_brats_case_folder(path) or any(is_brats_case_folder(d) for d in visible_dirs(path)):
        return "brats"
    folders = generic_folders(path)
    if folders is not None and folders[0].name == "images":
        return "generic"
    if is_dicom_folder(path):
        return "dicom"
    return None


def read_dataset(path: str | Path, layout: str | None = None, **options: Any) -> Dataset:
    """Detect the layout of `path` (or use `layout`) and read it with that reader.

    Args:
        path: the dataset folder.
        layout: force a layout instead of detecting it (one of `LAYOUTS`). Needed for
            "generic" with `imagesTr/` + `labelsTr/`: without dataset.json such a folder is
            refused with a hint, since a Decathlon task missing its dataset.json is the
            likelier cause.
        **options: passed to the reader, e.g. `label_set="brats"` (BraTS),
            `patient_pattern=...` (slices), `labels={...}` (slices, generic, dicom).

    Raises:
        SegpipeError: no such folder, no known layout, an option the reader does not take,
            or whatever the reader finds wrong.
    """
    path = Path(path)
    if not path.exists():
        raise SegpipeError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise SegpipeError(f"{path}: expected a dataset folder, got a file")
    try:
        found = layout or detect_layout(path)
    except OSError as exc:
        raise SegpipeError(f"{path}: cannot list the folder ({exc})") from None
    if found is None and (path / "imagesTr").is_dir():
        # A Decathlon task that lost its dataset.json is likelier than a deliberate plain
        # imagesTr/labelsTr pair, so the generic reader is opt-in for that naming.
        raise SegpipeError(
            f"{path}: has imagesTr/ but no dataset.json; restore dataset.json, or read the folders "
            "as plain image/label pairs with layout='generic'"
        )
    if found is None:
        known = "; ".join(f"{k}: {v}" for k, v in LAYOUTS.items())
        raise SegpipeError(f"{path}: no dataset layout recognised (no dataset.json found); segpipe knows {known}")
    reader = _reader(found)
    accepted = set(inspect.signature(reader).parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SegpipeError(
            f"{path}: option(s) {', '.join(unknown)} do not apply to the {found} layout"
            + (f" (it takes {', '.join(sorted(accepted))})" if accepted else "")
        )
    return reader(path, **options)

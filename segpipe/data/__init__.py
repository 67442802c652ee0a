"""Dataset readers: each layout becomes a `Dataset` of `Case` records.

The layouts and their readers are listed once, in `segpipe.data.layouts.LAYOUTS`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.decathlon import read_decathlon
from segpipe.errors import SegpipeError

__all__ = ["Case", "Dataset", "read_dataset", "read_decathlon", "detect_layout"]


def detect_layout(path: Path) -> str | None:
    """The name of a dataset folder's layout (first match in table order), or None.

    `imagesTr/` + `labelsTr/` without dataset.json is not detected (see `read_dataset`);
    `images/` + `labels/` is detected as "generic"."""
    from segpipe.data.layouts import detect

    found = detect(Path(path))
    return found.name if found is not None else None


def read_dataset(path: str | Path, layout: str | None = None, **options: Any) -> Dataset:
    """Detect the layout of `path` (or use `layout`) and read it with that reader.

    Args:
        path: the dataset folder.
        layout: force a layout instead of detecting it (one of `layouts.LAYOUTS`). Needed for
            "generic" with `imagesTr/` + `labelsTr/`: without dataset.json such a folder is
            refused with a hint, since a Decathlon task missing its dataset.json is the
            likelier cause.
        **options: passed to the reader, e.g. `label_set="brats"` (BraTS),
            `patient_pattern=...` (slices), `labels={...}` (slices, generic, pairs, dicom).

    Raises:
        SegpipeError: no such folder, no known layout, an option the reader does not take,
            or whatever the reader finds wrong.
    """
    from segpipe.data.layouts import describe_layouts, detect, layout_named

    path = Path(path)
    if not path.exists():
        raise SegpipeError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise SegpipeError(f"{path}: expected a dataset folder, got a file")
    try:
        found = layout_named(layout) if layout else detect(path)
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
        raise SegpipeError(
            f"{path}: no dataset layout recognised (no dataset.json found); segpipe knows {describe_layouts()}"
        )
    accepted = set(inspect.signature(found.read).parameters) - {"root"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SegpipeError(
            f"{path}: option(s) {', '.join(unknown)} do not apply to the {found.name} layout"
            + (f" (it takes {', '.join(sorted(accepted))})" if accepted else "")
        )
    return found.read(path, **options)

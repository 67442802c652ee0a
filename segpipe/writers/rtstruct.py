"""DICOM RT Structure Set output through rt-utils: one ROI per label and per region,
contoured slice by slice on the source series (radiotherapy planning systems read
RT-STRUCT, not DICOM-SEG)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from segpipe.atomic import write_with
from segpipe.errors import SegpipeError

MISSING_EXTRA = "needs rt-utils: pip install 'segpipe[rtstruct]'"
ROI_COLOURS = [[255, 217, 26], [51, 115, 255], [242, 38, 38], [51, 217, 77], [204, 102, 255], [255, 140, 0]]


def require_rt_utils(option: str = "option --rtstruct"):
    """The rt-utils builder class, or one line naming the extra to install."""
    try:
        from rt_utils import RTStructBuilder
    except ImportError:
        raise SegpipeError(f"{option}: {MISSING_EXTRA}") from None
    return RTStructBuilder


def roi_structures(names: dict[int, str], regions: dict[str, list[int]]) -> dict[str, list[int]]:
    """ROI name -> label values: each label (not background), then each region that is not one label."""
    out = {names.get(k, f"label {k}"): [k] for k in sorted(names) if k != 0}
    for region, members in regions.items():
        if sorted(members) in [sorted(v) for v in out.values()]:
            continue  # a region of one label (enhancing tumour) is that label's ROI
        name = region.replace("_", " ")
        out[f"{name} (region)" if name in out else name] = list(members)
    return out


def write_rtstruct(series: Path, labels: np.ndarray, names: dict[int, str], regions: dict[str, list[int]], path: Path) -> list[str]:
    """Write `labels` (column, row, slice, as segpipe reads a series) as an RT Structure Set.

    Args:
        series: the source series folder.
        labels: integer label map on the series' voxel grid.
        names: label value -> name (0, background, gets no ROI).
        regions: region name -> label values (e.g. whole tumour), one ROI each.
        path: the .dcm file to write (atomically).

    Returns:
        The ROI names, in ROI number order.
    """
    builder = require_rt_utils()
    quiet = io.StringIO()  # rt-utils prints notes on standard output, which --json keeps for JSON
    try:
        with contextlib.redirect_stdout(quiet):
            rt = builder.create_new(dicom_series_path=str(series))
    except Exception as exc:  # rt-utils raises bare Exceptions for unusable series
        raise SegpipeError(f"{series}: cannot make an RT-STRUCT ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    first = rt.series_data[0]
    grid = np.transpose(labels, (1, 0, 2))  # (row, column, slice): rt-utils' mask layout, slices in the same order
    if grid.shape != (int(first.Rows), int(first.Columns), len(rt.series_data)):
        raise SegpipeError(f"{series}: mask shape {labels.shape} does not match the series ({len(rt.series_data)} slices of "
                           f"{first.Columns}x{first.Rows})")
    rois = roi_structures(names, regions)
    with contextlib.redirect_stdout(quiet):
        for i, (name, members) in enumerate(rois.items()):
            rt.add_roi(mask=np.isin(grid, members), name=name, color=ROI_COLOURS[i % len(ROI_COLOURS)],
                       description=f"segpipe: label value(s) {', '.join(map(str, members))}")
    rt.ds.Manufacturer = "segpipe"
    write_with(path, lambda tmp: rt.ds.save_as(tmp))
    return list(rois)


__all__ = ["MISSING_EXTRA", "roi_structures", "require_rt_utils", "write_rtstruct"]

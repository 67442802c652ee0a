"""The one table of dataset layouts: detection, reading, `--help` text and error listings.

Every verb gets its readers here: `preprocess` (`read_dataset`), `infer`
(`segpipe.data.inputs`) and `evaluate` (its references). Detection tries the layouts in
table order and takes the first that matches.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.data import brats, decathlon, dicom, figshare, generic, pairs, slices
from segpipe.data.layout import Layout
from segpipe.errors import SegpipeError

LAYOUTS: tuple[Layout, ...] = (
    decathlon.LAYOUT,
    slices.LAYOUT,
    figshare.LAYOUT,
    brats.LAYOUT,
    dicom.LAYOUT,
    generic.LAYOUT,
    pairs.LAYOUT,
)


def layout_names() -> list[str]:
    """The layouts' names, in detection order."""
    return [layout.name for layout in LAYOUTS]


def layout_named(name: str) -> Layout:
    """The layout called `name`.

    Raises:
        SegpipeError: an unknown name, listing the known ones.
    """
    for layout in LAYOUTS:
        if layout.name == name:
            return layout
    raise SegpipeError(f"layout {name!r} unknown; known layouts: {', '.join(layout_names())}")


def detect(path: Path) -> Layout | None:
    """The first layout (in table order) that recognises the folder, or None."""
    return next((layout for layout in LAYOUTS if layout.detect(path)), None)


def describe_layouts(separator: str = "; ") -> str:
    """`name: description` for every layout, for help texts and error messages."""
    return separator.join(f"{layout.name}: {layout.describe}" for layout in LAYOUTS)


__all__ = ["LAYOUTS", "describe_layouts", "detect", "layout_named", "layout_names"]

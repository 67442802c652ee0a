"""Dataset readers: each layout becomes a `Dataset` of `Case` records."""

from __future__ import annotations

from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.decathlon import Dataset, read_decathlon
from segpipe.errors import SegpipeError

__all__ = ["Case", "Dataset", "read_dataset", "read_decathlon"]


def read_dataset(path: str | Path) -> Dataset:
    """Detect the layout of `path` and read it."""
    path = Path(path)
    if not path.exists():
        raise SegpipeError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "dataset.json").is_file():
        return read_decathlon(path)
    if path.is_dir():
        raise SegpipeError(
            f"{path}: no dataset.json found; segpipe reads the Medical Segmentation Decathlon layout here"
        )
    raise SegpipeError(f"{path}: expected a dataset folder, got a file")

"""Small path helpers shared by the readers."""

from __future__ import annotations

from pathlib import Path

from segpipe.errors import SegpipeError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def case_id_of(path: Path) -> str:
    """File name without its image suffix (`BRATS_001.nii.gz` -> `BRATS_001`)."""
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_hidden_or_resource(path: Path) -> bool:
    """True for dot files, including the macOS `._*` resource files in MSD archives."""
    return path.name.startswith(".")


def is_image_file(path: Path) -> bool:
    """A volume file segpipe can read, not a hidden or resource file."""
    return (
        path.is_file()
        and not is_hidden_or_resource(path)
        and path.name.lower().endswith(IMAGE_SUFFIXES)
    )


def inside(root: Path, relative: str, source: str) -> Path:
    """Resolve `relative` under `root`, refusing anything that escapes it."""
    base = root.resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise SegpipeError(f"{source}: path '{relative}' points outside the dataset folder {root}")
    return target

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
    return path.name.startswith(".") and path.name not in (".", "..")  # a path ending in '..' names a folder, not a dot file


def is_image_file(path: Path) -> bool:
    """A volume file segpipe can read, not a hidden or resource file."""
    return (
        path.is_file()
        and not is_hidden_or_resource(path)
        and path.name.lower().endswith(IMAGE_SUFFIXES)
    )


def inside(root: Path, relative: str, source: str) -> Path:
    """Resolve `relative` under `root`, refusing anything that escapes it."""
    try:
        base = root.resolve()
        target = (base / relative).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise SegpipeError(f"{source}: path {relative!r} is not usable ({exc})") from None
    if target != base and base not in target.parents:
        raise SegpipeError(f"{source}: path '{relative}' points outside the dataset folder {root}")
    return target


def existing_folder(path: str | Path, what: str, hint: str = "") -> Path:
    """`path` when it is a folder; otherwise one line saying it is missing or a file.

    Args:
        what: the kind of folder wanted, as the message names it ("model folder").
        hint: appended to the message, e.g. " (run `segpipe preprocess` first)".
    """
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise SegpipeError(f"{path}: a file, not a {what}{hint}")
    raise SegpipeError(f"{path}: no such {what}{hint}")


def has_suffix(path: Path, *suffixes: str) -> bool:
    """Case-insensitive suffix test on the file name."""
    return path.name.lower().endswith(tuple(s.lower() for s in suffixes))


def is_png_file(path: Path) -> bool:
    """A PNG file, not a hidden or resource file."""
    return path.is_file() and not is_hidden_or_resource(path) and has_suffix(path, ".png")


def is_mat_file(path: Path) -> bool:
    """A MATLAB MAT-file, not a hidden or resource file."""
    return path.is_file() and not is_hidden_or_resource(path) and has_suffix(path, ".mat")


def is_dicom_file(path: Path) -> bool:
    """A DICOM part-10 file (`DICM` at byte 128) or a file named `*.dcm`; header bytes only."""
    if not path.is_file() or is_hidden_or_resource(path):
        return False
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # a link out of the inputs is refused before its header is read
    if has_suffix(path, ".dcm"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def visible_files(folder: Path) -> list[Path]:
    """The folder's regular files, sorted, without hidden or macOS `._*` files."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden_or_resource(p))


def visible_dirs(folder: Path) -> list[Path]:
    """The folder's sub-folders, sorted, without hidden ones."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden_or_resource(p))

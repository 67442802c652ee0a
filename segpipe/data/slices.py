"""Reader for 2D slice folders: `training_images/` + `training_labels/` PNG pairs.

Optional `test_images/` (with or without `test_labels/`). Image and label share the file
name. The patient comes from the file name through a regular expression with a group named
`patient` (default: the `BRATS_<id>` part of `BRATS_<id>_z<slice>.png`), so splits keep all
slices of one patient together.

Orientation: see `segpipe.data.loading` (MONAI's PILReader returns the transpose of what
`numpy.asarray(PIL.Image.open(path))` shows).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.guard import resolve_inside
from segpipe.data.layout import Layout
from segpipe.data.paths import is_png_file
from segpipe.errors import SegpipeError
from segpipe.patterns import bounded_search

DEFAULT_PATIENT_PATTERN = r"^(?P<patient>BRATS_\d+)_z\d+"
DEFAULT_LABELS = {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {2: "RGB", 4: "grayscale+alpha", 6: "RGBA"}  # refused: several channels per pixel


def is_slices_folder(root: Path) -> bool:
    """A folder with `training_images/` or `test_images/`."""
    return (root / "training_images").is_dir() or (root / "test_images").is_dir()


OTHER_IMAGES = (".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2")  # would be left out without a word


def _pngs(folder: Path) -> list[Path]:
    other = next((p for p in sorted(folder.iterdir()) if p.suffix.lower() in OTHER_IMAGES and not p.name.startswith(".")), None)
    if other is not None:
        raise SegpipeError(f"{other}: a {other.suffix} file among the PNG slices; segpipe reads PNG slices only "
                           "(convert it to PNG, or move it out)")
    return sorted((p for p in folder.iterdir() if is_png_file(p)), key=lambda p: p.name)


def _check_png(path: Path) -> bytes:
    """Refuse a file that is not a single-channel PNG; return its first 26 bytes (signature and IHDR)."""
    resolve_inside(path)  # a link out of the dataset is refused before a byte is read
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError as exc:
        raise SegpipeError(f"{path}: cannot read ({exc})") from None
    if head[:8] != PNG_SIGNATURE:
        raise SegpipeError(f"{path}: not a PNG file (bad signature)")
    # IHDR: length, "IHDR", width, height, bit depth, colour type (PNG spec 11.2.2)
    if len(head) >= 26 and head[12:16] == b"IHDR" and head[25] in COLOUR_TYPES:
        raise SegpipeError(
            f"{path}: PNG in {COLOUR_TYPES[head[25]]} colour mode; slices must be single-channel grayscale "
            "(or palette) images, e.g. convert with PIL.Image.open(path).convert('L')"
        )
    return head


def _check_label_png(path: Path) -> None:
    """Refuse a grey label PNG of 2 or 4 bits a pixel: PIL scales its levels to 0..255 (a stored 1 reads as 85 or 17)."""
    head = _check_png(path)
    if len(head) < 26 or head[12:16] != b"IHDR" or head[25] != 0 or head[24] not in (2, 4):  # grey, PNG spec 11.2.2
        return
    bits = head[24]
    step = 255 // (2**bits - 1)
    levels = [0, step, 2 * step, 255] if bits == 2 else [0, step, 2 * step, "...", 255]
    raise SegpipeError(f"{path}: label PNG stored with {bits}-bit grey levels, read as {', '.join(map(str, levels))}: "
                       "store labels as 8-bit grey")


def to_declared_mode(img):  # noqa: ANN001, ANN201 - PIL images
    """PIL converter for MONAI's PILReader: pixels by the PNG's declared mode, not its storage.

    A palette PNG stores indices into a colour table; its pixels mean the table's colours.
    A grey table (R = G = B) converts to those grey levels; `segpipe.data.guard` refuses a
    coloured one before it gets here (MONAI would swallow an error raised here and fall
    back to reading the indices).
    """
    if img.mode not in ("P", "PA"):
        return img
    return Image.fromarray(np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., 0]))


def _cases(images_dir: Path, labels_dir: Path | None, pattern: re.Pattern[str], *, need_labels: bool) -> list[Case]:
    cases: list[Case] = []
    for image in _pngs(images_dir):
        _check_png(image)
        m = bounded_search(pattern, image.stem, "preprocess.patient_pattern")
        if m is None:
            raise SegpipeError(
                f"{image}: file name does not match the patient pattern {pattern.pattern!r}; "
                "pass patient_pattern with a (?P<patient>...) group"
            )
        label = labels_dir / image.name if labels_dir is not None else None
        if label is not None and not label.is_file():
            if need_labels:
                raise SegpipeError(f"{image}: no label {label.name} in {labels_dir}")
            label = None
        if label is not None:
            _check_label_png(label)
        cases.append(Case(case_id=image.stem, patient=m.group("patient"), images=[image], label=label))
    return cases


def read_slices(
    root: str | Path,
    patient_pattern: str = DEFAULT_PATIENT_PATTERN,
    labels: dict[int, str] | None = None,
    modality: str = "t1gd",
) -> Dataset:
    """Read a 2D slice folder.

    Args:
        root: folder with `training_images/` and `training_labels/` (and optionally
            `test_images/`, `test_labels/`).
        patient_pattern: regular expression searched in the file name (without `.png`);
            its `patient` group (else the whole match) names the patient.
        labels: label value -> name; default 0 background, 1 edema, 2 non-enhancing
            tumour, 3 enhancing tumour (the MSD BrainTumour 2D set).
        modality: the name of the single channel.

    Raises:
        SegpipeError: missing folders, images without labels, labels without images,
            files that are not PNG, names the pattern does not match.
    """
    root = Path(root)
    try:
        pattern = re.compile(patient_pattern)
    except re.error as exc:
        raise SegpipeError(f"patient_pattern {patient_pattern!r}: not a valid regular expression ({exc})") from None
    if "patient" not in pattern.groupindex:
        pattern = re.compile(f"(?P<patient>{patient_pattern})")
    if not is_slices_folder(root):
        raise SegpipeError(f"{root}: no training_images/ folder (expected the 2D slice layout)")
    training: list[Case] = []
    if (root / "training_images").is_dir():
        if not (root / "training_labels").is_dir():
            raise SegpipeError(f"{root / 'training_labels'}: missing (training_images/ needs its labels)")
        training = _cases(root / "training_images", root / "training_labels", pattern, need_labels=True)
    test: list[Case] = []
    if (root / "test_images").is_dir():
        test = _cases(root / "test_images", root / "test_labels", pattern, need_labels=False)
    if not training and not test:
        raise SegpipeError(f"{root}: holds no PNG slices")
    label_files = [p for d in ("training_labels", "test_labels") if (root / d).is_dir() for p in _pngs(root / d)]
    return build_dataset(
        root, "slices", training=training, test=test, labels=labels or DEFAULT_LABELS,
        modalities=[modality], spatial_dims=2, label_files=label_files,
    )


LAYOUT = Layout(
    name="slices",
    describe="training_images/ + training_labels/ (and test_images/ + test_labels/) PNG slices",
    detect=is_slices_folder,
    read=read_slices,
)

__all__ = ["LAYOUT", "read_slices", "is_slices_folder", "DEFAULT_PATIENT_PATTERN", "DEFAULT_LABELS"]

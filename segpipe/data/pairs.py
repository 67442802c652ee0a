"""Reader for flat folders of image/label pairs: `<case>_image.nrrd` + `<case>_label.nrrd`.

The way pyradiomics' examples and many lab datasets ship: one folder, one image file per
case and its label beside it, NIfTI, NRRD or MHA. A label is named `<case>_label`,
`<case>_seg` or `<case>_mask`; its image is `<case>_image` or plain `<case>`. Images
without a label are held-out cases (`Dataset.test`); a label without an image is refused.

Labels are declared as in the generic layout: pass `labels`, or the values found in the
first `label_sample` labels are declared ("label <v>").
"""

from __future__ import annotations

from pathlib import Path

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.generic import channel_count, sampled_labels
from segpipe.data.layout import Layout, every_case
from segpipe.data.paths import case_id_of, is_image_file
from segpipe.errors import SegpipeError

LABEL_SUFFIXES = ("_label", "_seg", "_mask")
IMAGE_SUFFIX = "_image"


def split_name(path: Path) -> tuple[str, bool]:
    """(case id, is a label) from a file name: `a_label.nrrd` -> ("a", True)."""
    stem = case_id_of(path)
    lower = stem.lower()
    for suffix in LABEL_SUFFIXES:
        if lower.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], True
    if lower.endswith(IMAGE_SUFFIX) and len(stem) > len(IMAGE_SUFFIX):
        return stem[: -len(IMAGE_SUFFIX)], False
    return stem, False


def _files(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if is_image_file(p)), key=lambda p: p.name)


def is_pairs_folder(root: Path) -> bool:
    """A folder holding at least one `<case>_label|_seg|_mask` file with its image beside it."""
    try:
        if not root.is_dir():
            return False
        named = [split_name(p) for p in _files(root)]
    except OSError:
        return False
    images = {cid for cid, is_label in named if not is_label}
    return any(is_label and cid in images for cid, is_label in named)


def read_pairs(root: str | Path, labels: dict[int, str] | None = None, label_sample: int = 3) -> Dataset:
    """Read a flat folder of image/label pairs.

    Args:
        root: the folder.
        labels: label value -> name; default: the values found in the first
            `label_sample` labels.
        label_sample: how many labels to read when `labels` is not given.

    Raises:
        SegpipeError: no images, two images or two labels for one case, a label without
            an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegpipeError(f"{root}: expected a folder of <case>_image + <case>_label files")
    images: dict[str, Path] = {}
    label_files: dict[str, Path] = {}
    for path in _files(root):
        cid, is_label = split_name(path)
        found = label_files if is_label else images
        if cid in found:
            kind = "label" if is_label else "image"
            raise SegpipeError(f"{path}: a second {kind} for case '{cid}' (also {found[cid].name})")
        found[cid] = path
    if not images:
        raise SegpipeError(f"{root}: holds no NIfTI, NRRD or MHA images")
    cases = [Case(case_id=cid, patient=cid, images=[path], label=label_files.get(cid)) for cid, path in images.items()]
    training = [c for c in cases if c.label is not None]
    test = [c for c in cases if c.label is None]
    return build_dataset(
        root, "pairs", training=training, test=test,
        labels=labels if labels is not None else sampled_labels(training, label_sample),
        modalities=[f"channel {i}" for i in range(channel_count(cases[0].images[0]))],
        label_files=label_files.values(),
    )


LAYOUT = Layout(
    name="pairs",
    describe="one folder of <case>_image + <case>_label (or _seg, _mask) files, NIfTI, NRRD or MHA",
    detect=is_pairs_folder,
    read=read_pairs,
    inputs=every_case,
)

__all__ = ["LAYOUT", "read_pairs", "is_pairs_folder", "split_name", "LABEL_SUFFIXES"]

"""Reader for plain image/label folders without a dataset.json.

Layouts: `imagesTr/` + `labelsTr/` (optional `imagesTs/`), or `images/` + `labels/`, with
NIfTI, NRRD or MHA files. Images and labels pair by case id:

- the label has the image's name (`X.nii.gz` + `X.nii.gz`), or
- nnU-Net channel files `X_0000.nii.gz`, `X_0001.nii.gz`, ... form one case `X` (channels
  in suffix order) whose label is `X.nii.gz`. Channel naming is used when every image
  file in the folder ends in `_<4 digits>`.

Labels: there is no dataset.json to declare them, so pass `labels`; by default the
values found in the first `label_sample` label files (header-cheap NIfTI reads) are
declared, named "background" for 0 and "label <v>" otherwise. `segpipe.data.verify`
then reports any value in the other labels that the sample missed; reading every label
here would make opening a large dataset slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.layout import Layout
from segpipe.data.paths import case_id_of, is_image_file
from segpipe.errors import SegpipeError, reader_error

PAIRS = (("imagesTr", "labelsTr"), ("images", "labels"))
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def generic_folders(root: Path) -> tuple[Path, Path] | None:
    """The (images, labels) folder pair of a generic layout, or None."""
    for images, labels in PAIRS:
        if (root / images).is_dir() and (root / labels).is_dir():
            return root / images, root / labels
    return None


def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def group_channels(files: list[Path]) -> tuple[dict[str, list[Path]], int]:
    """Case id -> channel files (nnU-Net `_0000` naming if every file uses it), channel count.

    Raises:
        SegpipeError: channel numbering with gaps or different channel counts per case.
    """
    ids = [case_id_of(p) for p in files]
    if files and all(_CHANNEL_RE.match(i) for i in ids):
        groups: dict[str, dict[int, Path]] = {}
        for path, cid in zip(files, ids):
            m = _CHANNEL_RE.match(cid)
            assert m is not None
            groups.setdefault(m.group("case"), {})[int(m.group("channel"))] = path
        out: dict[str, list[Path]] = {}
        count = None
        for case, channels in groups.items():
            if sorted(channels) != list(range(len(channels))):
                raise SegpipeError(
                    f"{next(iter(channels.values())).parent}: case '{case}' has channel files "
                    f"{', '.join(f'_{c:04d}' for c in sorted(channels))}; expected _0000 to _{len(channels) - 1:04d} without gaps"
                )
            if count is not None and len(channels) != count:
                raise SegpipeError(f"{channels[0]}: case '{case}' has {len(channels)} channel files, other cases {count}")
            count = len(channels)
            out[case] = [channels[c] for c in sorted(channels)]
        return out, count or 1
    out = {}
    for path, cid in zip(files, ids):
        if cid in out:
            raise SegpipeError(f"{path}: case id '{cid}' also used by {out[cid][0].name}")
        out[cid] = [path]
    return out, 1


def sampled_labels(cases: list[Case], label_sample: int) -> dict[int, str]:
    """Label names for the values found in the first `label_sample` cases' labels."""
    values: set[int] = {0}
    for case in [c for c in cases if c.label is not None][: max(1, label_sample)]:
        assert case.label is not None
        values |= label_values(case.label)
    return {v: "background" if v == 0 else f"label {v}" for v in sorted(values)}


def _held_out(root: Path, images: str, labels: str) -> tuple[list[Case], list[Path]]:
    """Cases of a held-out folder (`imagesTs/`) with their labels where `labelsTs/` has
    them, and every label file of `labelsTs/`."""
    groups, _ = group_channels(_image_files(root / images))
    label_files = {case_id_of(p): p for p in _image_files(root / labels)} if (root / labels).is_dir() else {}
    cases = [Case(case_id=cid, patient=cid, images=files, label=label_files.get(cid)) for cid, files in groups.items()]
    return cases, list(label_files.values())


def label_values(path: Path) -> set[int]:
    """The integer values stored in a label file (NIfTI through nibabel, others through ITK)."""
    from segpipe.data.guard import check_read

    check_read(path)
    try:
        if path.name.lower().endswith((".nii", ".nii.gz")):
            import nibabel as nib

            data = np.asanyarray(nib.load(str(path)).dataobj)
        else:
            import itk

            from segpipe.data.itk_reading import imread

            data = itk.array_view_from_image(imread(path))
    except Exception as exc:
        raise reader_error(exc, path, "cannot read label") from None
    values = np.unique(np.asarray(data))
    return {int(v) for v in values if float(v).is_integer()}


def channel_count(path: Path) -> int:
    """Channels of a single-file image from its NIfTI header (4D = last axis); 1 otherwise."""
    if path.name.lower().endswith((".nii", ".nii.gz")):
        import nibabel as nib

        from segpipe.data.guard import check_read

        check_read(path)
        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:
            raise SegpipeError(f"{path}: not a readable NIfTI file ({type(exc).__name__})") from None
        return int(shape[3]) if len(shape) >= 4 else 1
    return 1


def read_generic(root: str | Path, labels: dict[int, str] | None = None, label_sample: int = 3) -> Dataset:
    """Read an image/label folder pair.

    Args:
        root: folder holding `imagesTr/` + `labelsTr/` or `images/` + `labels/`.
        labels: label value -> name; default: the values found in the first
            `label_sample` labels (see the module docstring).
        label_sample: how many labels to read when `labels` is not given.

    Raises:
        SegpipeError: missing folders, images without labels or labels without images,
            inconsistent channel files, no images.
    """
    root = Path(root)
    folders = generic_folders(root)
    if folders is None:
        raise SegpipeError(f"{root}: no imagesTr/ + labelsTr/ or images/ + labels/ folders")
    images_dir, labels_dir = folders
    groups, channels = group_channels(_image_files(images_dir))
    if not groups:
        raise SegpipeError(f"{images_dir}: holds no NIfTI, NRRD or MHA images")
    label_files = {case_id_of(p): p for p in _image_files(labels_dir)}
    training: list[Case] = []
    for cid, files in groups.items():
        label = label_files.get(cid)
        if label is None:
            raise SegpipeError(f"{files[0]}: no label named '{cid}' with an image suffix in {labels_dir}")
        training.append(Case(case_id=cid, patient=cid, images=files, label=label))
    test: list[Case] = []
    held_out_labels: list[Path] = []
    if images_dir.name == "imagesTr" and (root / "imagesTs").is_dir():
        test, held_out_labels = _held_out(root, "imagesTs", "labelsTs")
    if channels == 1:
        channels = channel_count(training[0].images[0])
    return build_dataset(
        root, "generic", training=training, test=test,
        labels=labels if labels is not None else sampled_labels(training, label_sample),
        modalities=[f"channel {i}" for i in range(channels)], spatial_dims=3,
        label_files=[*label_files.values(), *held_out_labels],
    )


def is_generic_folder(root: Path) -> bool:
    """`images/` + `labels/` (an `imagesTr/` + `labelsTr/` pair is read only when asked for)."""
    folders = generic_folders(root)
    return folders is not None and folders[0].name == "images"


LAYOUT = Layout(
    name="generic",
    describe="images/ + labels/ (or, with --layout generic, imagesTr/ + labelsTr/ + imagesTs/) of NIfTI, NRRD or MHA files",
    detect=is_generic_folder,
    read=read_generic,
)

__all__ = ["LAYOUT", "read_generic", "generic_folders", "group_channels", "label_values", "channel_count", "sampled_labels"]

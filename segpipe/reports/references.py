"""The reference masks `evaluate` scores against, and the images to draw them on.

`--labels` may be a dataset folder of any layout segpipe reads (through the one table of
layouts, `segpipe.data.layouts`), whose labelled cases of every split count, or any folder
of mask files. Either way a case's patient comes from the reader, or else from the slice
patient pattern on the file name, so slices of one patient are pooled the same way
whatever the folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from segpipe.artifacts.files import read_json
from segpipe.artifacts.plan import Plan
from segpipe.data.paths import has_suffix, visible_files
from segpipe.errors import SegpipeError
from segpipe.patterns import bounded_search
from segpipe.reports.masks import is_mask_file, mask_id, masks_by_case

_CHANNEL_OR_IMAGE = re.compile(r"(_\d{4}|_image)$", re.IGNORECASE)


@dataclass
class Reference:
    """A reference mask, its patient and (if known) the image it was drawn on."""

    mask: Path
    patient: str
    image: Path | None = None
    mapping: dict[int, int] | None = None  # label values as stored -> as scored (BraTS layout)
    split: str = "masks"  # the dataset split it came from ("training", "test"), or "masks"


@dataclass
class References:
    """Reference cases by id, and what they were read from."""

    source: Path
    cases: dict[str, Reference]
    labels: dict[int, str] | None = None  # declared by the dataset; None for a folder of masks
    layout: str | None = None  # the dataset layout; None for a folder of masks
    images: Path | None = None  # the folder overlay images came from, if not the dataset
    notes: list[str] = field(default_factory=list)  # doubts about the references, warned by evaluate


def patient_regex(pattern: str | None) -> re.Pattern[str]:
    """The slice patient pattern (default: the `BRATS_<id>` of `BRATS_<id>_z<slice>`),
    with a `patient` group (the whole match when it has none).

    Raises:
        SegpipeError: not a valid regular expression.
    """
    from segpipe.data.slices import DEFAULT_PATIENT_PATTERN

    text = pattern or DEFAULT_PATIENT_PATTERN
    try:
        regex = re.compile(text)
    except re.error as exc:
        raise SegpipeError(f"patient_pattern {text!r}: not a valid regular expression ({exc})") from None
    return regex if "patient" in regex.groupindex else re.compile(f"(?P<patient>{text})")


def patient_of(case_id: str, regex: re.Pattern[str]) -> str:
    """The patient a case id names, or the case id itself when the pattern does not match
    (or matches an empty name, which would pool every such case into one patient)."""
    m = bounded_search(regex, case_id, "evaluate.patient_pattern")
    return m.group("patient") if m and m.group("patient") else case_id


def sibling_images(labels: Path) -> Path | None:
    """The image folder beside a labels folder: `test_labels/` -> `test_images/`,
    `labelsTs/` -> `imagesTs/`, `masks/` -> `images/`; None if there is none."""
    name = labels.name
    for old, new in (("labels", "images"), ("Labels", "Images"), ("label", "image"), ("masks", "images"), ("mask", "image")):
        if old in name:
            candidate = labels.parent / name.replace(old, new)
            if candidate != labels and candidate.is_dir():
                return candidate
    return None


def attach_images(refs: dict[str, Reference], folder: Path) -> int:
    """Give references without an image the file of `folder` with their case id
    (`X.png`, `X.nii.gz`, `X_0000.nii.gz`, `X_image.nrrd`); returns how many were found."""
    found = 0
    for path in visible_files(folder):
        cid = mask_id(path)
        for key in (cid, _CHANNEL_OR_IMAGE.sub("", cid)):
            ref = refs.get(key)
            if ref is not None and ref.image is None:
                ref.image = path
                found += 1
                break
    return found


def _from_dataset(labels: Path, regex: re.Pattern[str], options: dict[str, str]) -> References:
    from segpipe.data import read_dataset

    ds = read_dataset(labels, **options)
    refs: dict[str, Reference] = {}
    for split, cases in (("training", ds.training), ("test", ds.test)):
        for c in cases:
            if c.label is None:
                continue
            patient = patient_of(c.case_id, regex) if c.patient == c.case_id else c.patient
            refs[c.case_id] = Reference(c.label, patient, c.images[0] if c.images else None, ds.label_mapping, split)
    if not refs:
        raise SegpipeError(f"{labels}: a {ds.layout} dataset without labelled cases; nothing to evaluate against")
    return References(labels, refs, ds.labels, ds.layout)


def read_references(labels: str | Path, patient_pattern: str | None = None, images: str | Path | None = None,
                    label_set: str = "msd") -> References:
    """References from a dataset folder (every labelled split) or a folder of masks.

    Args:
        labels: the dataset or mask folder.
        patient_pattern: regex naming the patient in a file name (see `patient_regex`).
        images: folder of the images, for overlays; default: the dataset's own images,
            else the image folder beside a mask folder (`sibling_images`).
        label_set: the label values a BraTS-layout dataset's masks are scored in
            (`segpipe.data.brats`; the predictions' own).

    Raises:
        SegpipeError: no such folder, a file, an unreadable dataset, no masks.
    """
    from segpipe.data import detect_layout

    labels = Path(labels)
    if not labels.exists():
        raise SegpipeError(f"{labels}: no such file or folder")
    if not labels.is_dir():
        raise SegpipeError(f"{labels}: expected a folder of reference masks or a dataset folder")
    regex = patient_regex(patient_pattern)
    layout = detect_layout(labels)
    if layout is not None:
        options = {"patient_pattern": regex.pattern} if layout == "slices" and patient_pattern else {}
        if layout == "brats":
            options["label_set"] = label_set
        refs = _from_dataset(labels, regex, options)
    else:
        files = sorted(p for p in labels.iterdir() if is_mask_file(p))
        if not files:
            raise SegpipeError(f"{labels}: holds no mask files (.nii.gz, .nii, .nrrd, .mha, .png, .mat) and is no dataset folder")
        refs = References(labels, {cid: Reference(p, patient_of(cid, regex)) for cid, p in masks_by_case(files).items()})
        unpooled = all(r.patient == cid for cid, r in refs.cases.items())
        if unpooled and (patient_pattern or any(has_suffix(p, ".png") for p in files)):  # slices, or a pattern asked for
            refs.notes.append(f"the patient pattern '{regex.pattern}' names no patient in the {len(files)} reference "
                              f"name(s) (e.g. {mask_id(files[0])}): each is scored as a patient of its own "
                              "(set evaluate.patient_pattern)")
    folder = Path(images) if images is not None else (sibling_images(labels) if layout is None else None)
    if images is not None and not folder.is_dir():
        raise SegpipeError(f"option --images: {folder} is not a folder")
    if folder is not None and attach_images(refs.cases, folder):
        refs.images = folder
    return refs


def model_label_names(model_dir: str | Path) -> dict[int, str]:
    """Label names from a model folder's plan.json (or its first fold_<k>/).

    Raises:
        SegpipeError: no such folder, no plan.json in it (not a model folder), or a plan.json
            that is not JSON or has no readable `labels` mapping.
    """
    root = Path(model_dir)
    plans = [root / "plan.json", *sorted(root.glob("fold_*/plan.json"))] if root.is_dir() else []
    plan = next((p for p in plans if p.is_file()), None)
    if plan is None:
        raise SegpipeError(f"option --model: {root} is not a model folder (no plan.json in it or in a fold_<k>/ of it)")
    return Plan.from_dict(read_json(plan, "no plan"), plan).label_names


def no_match_error(pred_dir: Path, preds: dict[str, Path], refs: References) -> SegpipeError:
    """One line that shows a prediction's id next to a reference's, so a naming mismatch is obvious."""
    if not preds:
        return SegpipeError(f"{pred_dir}: holds no mask files (.nii.gz, .nii, .nrrd, .mha, .png, .mat)")
    pred_id, pred_path = next(iter(preds.items()))
    ref_id = next(iter(refs.cases))
    return SegpipeError(
        f"{pred_dir}: no prediction matches a reference case in {refs.source} "
        f"(e.g. prediction {pred_path.name} has case id '{pred_id}', a reference has case id '{ref_id}'); "
        "predictions must be named after their reference's case id"
    )


def matched_splits(refs: References, matched: list[str]) -> dict[str, int]:
    """How many of the matched case ids came from each split."""
    counts: dict[str, int] = {}
    for cid in matched:
        split = refs.cases[cid].split
        counts[split] = counts.get(split, 0) + 1
    return counts


__all__ = [
    "Reference", "References", "attach_images", "matched_splits", "model_label_names", "no_match_error",
    "patient_of", "patient_regex", "read_references", "sibling_images",
]

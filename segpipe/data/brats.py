"""Reader for the BraTS challenge layout: one folder per case with one NIfTI file per channel.

BraTS 2021 names the files `<case>_flair`, `_t1`, `_t1ce`, `_t2`, `_seg`; BraTS 2023 names
them `<case>-t2f`, `-t1n`, `-t1c`, `-t2w`, `-seg`. Channels are returned in the Decathlon's
order (FLAIR, T1w, t1gd, T2w) so a model trained on one transfers to the other.

Label sets (`label_set`), applied through `Dataset.label_mapping` when labels are loaded:

- "msd" (default): 1 edema, 2 non-enhancing tumour, 3 enhancing tumour, the Decathlon's
  labels. 2021 files: {1: 2, 2: 1, 4: 3}; 2023 files: {1: 2, 2: 1, 3: 3}.
- "brats": 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour, the BraTS 2021
  convention. 2021 files are used as stored (mapping None); the 2023 files' enhancing
  label 3 is mapped to 4 ({1: 1, 2: 2, 3: 4}), so 2021 and 2023 data share one label set and one set of region definitions.

One dataset must use one naming (the mapping is per dataset). Mappings list every
stored non-zero value, so `verify_dataset` reports a value outside them (e.g. a 3 in a
2021 file) instead of letting it pass as a valid target label.
"""

from __future__ import annotations

import re
from pathlib import Path

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.layout import Layout, every_case
from segpipe.data.paths import visible_dirs, visible_files
from segpipe.errors import SegpipeError

MODALITIES = ["FLAIR", "T1w", "t1gd", "T2w"]
# naming -> (channel suffixes in MODALITIES order, label suffix)
NAMINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "2021": (("_flair", "_t1", "_t1ce", "_t2"), "_seg"),
    "2023": (("-t2f", "-t1n", "-t1c", "-t2w"), "-seg"),
}
LABEL_SETS: dict[str, dict[int, str]] = {
    "msd": {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
    "brats": {0: "background", 1: "necrotic / non-enhancing core", 2: "edema", 4: "enhancing tumour"},
}
MAPPINGS: dict[tuple[str, str], dict[int, int] | None] = {
    ("msd", "2021"): {1: 2, 2: 1, 4: 3},
    ("msd", "2023"): {1: 2, 2: 1, 3: 3},
    ("brats", "2021"): None,
    ("brats", "2023"): {1: 1, 2: 2, 3: 4},
}
NIFTI = (".nii.gz", ".nii")


def label_set_named(names: dict[int, str] | None) -> str | None:
    """The label set whose labels are `names` (a model's), or None if none is."""
    given = {int(k): v for k, v in (names or {}).items()}
    return next((name for name, labels in LABEL_SETS.items() if labels == given), None)

_SEGS = tuple(seg for _, seg in NAMINGS.values())
_SUFFIX_RE = re.compile(r"(_flair|_t1ce|_t1|_t2|_seg|-t2f|-t1n|-t1c|-t2w|-seg)\.nii(\.gz)?$", re.IGNORECASE)


def _split(name: str) -> tuple[str, str] | None:
    """`BraTS2021_00006_t1ce.nii.gz` -> ("BraTS2021_00006", "_t1ce"), or None."""
    m = _SUFFIX_RE.search(name)
    return (name[: m.start()], m.group(1).lower()) if m else None


def is_brats_case_folder(folder: Path) -> bool:
    """A folder holding at least one BraTS channel file (a `*_seg` file alone is a mask,
    e.g. of the pairs layout)."""
    try:
        return folder.is_dir() and any((parts := _split(p.name)) and parts[1] not in _SEGS for p in visible_files(folder))
    except OSError:
        return False


def read_brats_case(folder: Path, *, need_label: bool = False) -> tuple[Case, str]:
    """One case folder -> (Case, naming). The seg file is optional unless `need_label`.

    Raises:
        SegpipeError: a missing or doubled channel file, or mixed 2021/2023 naming.
    """
    found: dict[str, Path] = {}
    prefixes: dict[str, Path] = {}
    for path in visible_files(folder):
        parts = _split(path.name)
        if parts is None:
            continue
        prefix, suffix = parts
        if suffix in found:
            raise SegpipeError(f"{path}: a second '{suffix}' file in case folder {folder} (also {found[suffix].name})")
        found[suffix] = path
        prefixes.setdefault(prefix, path)
    if len(prefixes) > 1:  # another patient's channel copied in
        (a, first), (b, second) = sorted(prefixes.items())[:2]
        raise SegpipeError(f"{folder}: holds the files of more than one case ({first.name} of {a}, {second.name} of {b})")
    namings = {n for n, (chans, seg) in NAMINGS.items() if any(s in found for s in (*chans, seg))}
    if not namings:
        raise SegpipeError(f"{folder}: no BraTS channel files (*_flair, *_t1, *_t1ce, *_t2 or *-t2f, *-t1n, *-t1c, *-t2w)")
    if len(namings) > 1:
        raise SegpipeError(f"{folder}: mixes BraTS 2021 (*_flair) and 2023 (*-t2f) file names")
    naming = namings.pop()
    channels, seg = NAMINGS[naming]
    missing = [s for s in channels if s not in found]
    if missing:
        raise SegpipeError(f"{folder}: missing channel file(s) {', '.join('*' + s + '.nii.gz' for s in missing)}")
    if need_label and seg not in found:
        raise SegpipeError(f"{folder}: missing label file *{seg}.nii.gz")
    case_id = folder.name
    # BraTS 2023 ids are BraTS-GLI-<patient>-<timepoint>; 2021 has one case per patient.
    m = re.fullmatch(r"(BraTS-[A-Za-z]+-\d+)-\d+", case_id)
    patient = m.group(1) if m else case_id
    case = Case(case_id=case_id, patient=patient, images=[found[s] for s in channels], label=found.get(seg),
                attrs={"brats_naming": naming, "brats_prefix": next(iter(prefixes))})
    return case, naming


def read_brats(root: str | Path, label_set: str = "msd") -> Dataset:
    """Read a folder of BraTS case folders, or a single case folder.

    Cases with a seg file go to `training`, cases without one (validation data) to `test`.

    Args:
        root: the dataset folder (or one case folder).
        label_set: "msd" or "brats"; see the module docstring.

    Raises:
        SegpipeError: unknown label set, no case folders, incomplete case, mixed namings.
    """
    root = Path(root)
    if label_set not in LABEL_SETS:
        raise SegpipeError(f"label_set {label_set!r} unknown; choose one of {', '.join(LABEL_SETS)}")
    if not root.is_dir():
        raise SegpipeError(f"{root}: expected a BraTS dataset folder")
    folders = _case_folders(root)
    if not folders:
        raise SegpipeError(f"{root}: no BraTS case folders (folders with *_flair ... *_seg.nii.gz files)")
    training: list[Case] = []
    test: list[Case] = []
    namings: dict[str, Path] = {}
    prefixes: dict[str, Path] = {}
    for folder in folders:
        case, naming = read_brats_case(folder)
        namings.setdefault(naming, folder)
        twin = prefixes.setdefault(case.attrs["brats_prefix"], folder)
        if twin != folder:  # a copied case folder: one patient in training and validation
            raise SegpipeError(f"{folder}: holds case {case.attrs['brats_prefix']}, as {twin.name} does")
        (training if case.label is not None else test).append(case)
    if len(namings) > 1:
        raise SegpipeError(
            f"{root}: mixes BraTS 2021 naming ({namings['2021'].name}) and 2023 naming ({namings['2023'].name}); "
            "read them as two datasets"
        )
    naming = next(iter(namings))
    return build_dataset(
        root, "brats", training=training, test=test, labels=LABEL_SETS[label_set],
        modalities=MODALITIES, label_mapping=MAPPINGS[(label_set, naming)],
    )


def _holds_brats_files(folder: Path) -> bool:
    return any(_split(p.name) for p in visible_files(folder))


def _case_folders(root: Path) -> list[Path]:
    """`root` itself when it is a case folder, else its case folders.

    Raises:
        SegpipeError: a root holding channel files beside case folders, or a sub-folder that
            holds BraTS files without being a case (a seg file alone, channels missing) or a
            case folder one level further down: either would drop cases without a word.
    """
    subs = visible_dirs(root)
    if is_brats_case_folder(root):
        inner = next((d for d in subs if is_brats_case_folder(d)), None)
        if inner is not None:
            raise SegpipeError(f"{root}: holds BraTS channel files beside BraTS case folders ({inner.name}); give the "
                               "cohort folder of case folders, or one case folder")
        return [root]
    folders = []
    for sub in subs:
        if is_brats_case_folder(sub):
            folders.append(sub)
        elif _holds_brats_files(sub):
            read_brats_case(sub)  # names what is missing
            raise SegpipeError(f"{sub}: holds BraTS files but no channel files")
        else:
            nested = next((d for d in visible_dirs(sub) if is_brats_case_folder(d)), None)
            if nested is not None:
                raise SegpipeError(f"{nested}: a BraTS case folder inside {sub.name}/; case folders sit directly in "
                                   f"the cohort folder {root}")
    return folders


def is_brats_folder(root: Path) -> bool:
    """A BraTS case folder, or a folder holding BraTS case folders (a cohort)."""
    try:
        return is_brats_case_folder(root) or any(is_brats_case_folder(d) for d in visible_dirs(root))
    except OSError:
        return False


LAYOUT = Layout(
    name="brats",
    describe="BraTS case folders (2021: *_flair, *_t1, *_t1ce, *_t2, *_seg; 2023: *-t2f, *-t1n, *-t1c, *-t2w, *-seg; "
             "seg optional), or one case folder",
    detect=is_brats_folder,
    read=read_brats,
    inputs=every_case,
)

__all__ = ["LAYOUT", "read_brats", "is_brats_folder", "read_brats_case", "is_brats_case_folder", "MODALITIES", "LABEL_SETS"]

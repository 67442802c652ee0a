"""The figshare layout: a folder of `N.mat` slices (Cheng et al., doi 10.6084/m9.figshare.1512427).

The MAT-file format itself (reading, writing, `cvind.mat`) is `segpipe.data.mat_file`; its
names stay importable from here. `cvind.mat` (5-fold indices, one per slice in file-number
order) becomes `Dataset.folds`. The MONAI reader of these files is
`segpipe.data.mat_reader.FigshareMatReader`, kept apart so that reading the layout does
not import MONAI.
"""

from __future__ import annotations

from pathlib import Path

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.layout import Layout, every_case
from segpipe.data.mat_file import (
    LABELS,
    TUMOUR_TYPES,
    matlab_header,
    read_cvind,
    read_mat_field,
    read_mat_header,
    write_figshare_mat,
)
from segpipe.data.paths import is_mat_file, visible_dirs
from segpipe.errors import SegpipeError


def _mat_files(root: Path) -> list[Path]:
    """`*.mat` in the folder and one level of sub-folders (the figshare zip parts)."""
    files = [p for p in root.iterdir() if is_mat_file(p)]
    for sub in visible_dirs(root):
        files.extend(p for p in sub.iterdir() if is_mat_file(p))
    files = [p for p in files if p.name.lower() != "cvind.mat"]

    def key(p: Path) -> tuple[int, int | str, str]:
        return (0, int(p.stem), p.name) if p.stem.isdigit() else (1, p.stem, p.name)

    return sorted(files, key=key)


def is_figshare_folder(root: Path) -> bool:
    try:
        return root.is_dir() and bool(_mat_files(root))
    except OSError:
        return False


def read_figshare(root: str | Path) -> Dataset:
    """Read a folder of figshare MAT-files (all labelled: every case goes to `training`).

    Each case: `case_id` = file stem ("17"), `patient` = PID, `images` = `label` = the file
    (the image is `cjdata.image`, the label `cjdata.tumorMask`; see `FigshareMatReader`),
    `attrs["tumour_type"]` = meningioma / glioma / pituitary, `attrs["tumour_label"]` = 1-3.

    Raises:
        SegpipeError: no MAT-files, malformed files, duplicate case ids, a cvind.mat whose
            length differs from the number of slices.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegpipeError(f"{root}: expected a folder of figshare MAT-files")
    files = _mat_files(root)
    if not files:
        raise SegpipeError(f"{root}: holds no .mat files")
    cases: list[Case] = []
    for path in files:
        head = read_mat_header(path)
        cid = path.stem
        cases.append(
            Case(case_id=cid, patient=head["pid"], images=[path], label=path,
                 attrs={"tumour_type": head["tumour_type"], "tumour_label": head["tumour_label"]})
        )
    dataset = build_dataset(root, "figshare", training=cases, labels=LABELS, modalities=["T1w-contrast"], spatial_dims=2)
    seen = {c.case_id for c in cases}
    cvind = next((p for p in root.iterdir() if p.is_file() and p.name.lower() == "cvind.mat"), None)
    if cvind is not None:
        values = read_cvind(cvind)
        # Index i (0-based) of cvind belongs to file (i+1).mat.
        dataset.folds = {str(i + 1): int(v) for i, v in enumerate(values) if str(i + 1) in seen}
        if len(values) < max((int(c) for c in seen if c.isdigit()), default=0):
            raise SegpipeError(f"{cvind}: has {len(values)} fold indices but the folder holds slices up to {max(int(c) for c in seen if c.isdigit())}.mat")
        if len(set(dataset.folds.values())) == 1:
            raise SegpipeError(f"{cvind}: puts every slice in fold {next(iter(dataset.folds.values()))}; "
                               "its folds would leave no slice to train on")
    return dataset


LAYOUT = Layout(
    name="figshare",
    describe="figshare brain-tumour MAT-files (N.mat, optional cvind.mat folds; one level of sub-folders)",
    detect=is_figshare_folder,
    read=read_figshare,
    inputs=every_case,
)


__all__ = [
    "LAYOUT",
    "read_figshare",
    "read_mat_field",
    "read_mat_header",
    "write_figshare_mat",
    "matlab_header",
    "read_cvind",
    "LABELS",
    "is_figshare_folder",
    "TUMOUR_TYPES",
]

"""Turn the paths a user gives `infer` into cases: files, folders of files, or datasets.

Each case carries `attrs["layout"]` (the layout whose MONAI reader loads it, see
`segpipe.data.loading.monai_reader`) and `attrs["spatial_dims"]` (2 for PNG and MAT
slices, 3 otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.layout import Layout
from segpipe.data.paths import case_id_of, is_image_file, is_mat_file, is_png_file
from segpipe.errors import SegpipeError

KINDS = ".nii.gz, .nii, .nrrd, .mha, .png, figshare .mat files"


def _case(path: Path, layout: str) -> Case:
    cid = case_id_of(path)
    dims = 2 if layout in ("slices", "figshare") else 3
    return Case(cid, cid, [path], attrs={"layout": layout, "spatial_dims": dims})


def _file_case(path: Path) -> Case | None:
    if is_image_file(path):
        return _case(path, "generic")
    if is_png_file(path):
        return _case(path, "slices")
    if is_mat_file(path) and path.name.lower() != "cvind.mat":
        from segpipe.data.figshare import read_mat_header

        read_mat_header(path)  # fail now, naming the file, if it is not a figshare slice
        return _case(path, "figshare")
    return None


def _dataset_cases(path: Path, layout: Layout) -> list[Case]:
    """The cases `infer` segments in a folder of a known layout (see `Layout.inputs`)."""
    from segpipe.data import read_dataset

    ds = read_dataset(path, layout.name)
    return [
        Case(c.case_id, c.patient, c.images, attrs={**c.attrs, "layout": ds.layout, "spatial_dims": ds.spatial_dims})
        for c in layout.inputs(ds)
    ]


def _folder_cases(path: Path) -> list[Case]:
    from segpipe.data.layouts import detect

    layout = detect(path)
    if layout is not None:
        return _dataset_cases(path, layout)
    files = sorted(p for p in path.iterdir() if p.is_file())
    cases = [c for c in (_file_case(f) for f in files) if c is not None]
    if not cases:
        from segpipe.data.layouts import describe_layouts

        raise SegpipeError(f"{path}: holds no images segpipe can read ({KINDS}; or a dataset folder: {describe_layouts()})")
    return cases


def discover_inputs(paths: Iterable[str | Path]) -> list[Case]:
    """Cases from image files (NIfTI, NRRD, MHA, PNG, figshare MAT), folders of such files,
    or dataset folders of any layout `preprocess` reads (`segpipe.data.layouts`): the
    cases each layout's `inputs` names (Decathlon and slice folders: their test cases,
    else their training cases; BraTS cohorts and case folders, pair folders, MAT folders,
    DICOM series: every case; label files are never segmented). Hidden and macOS `._*`
    files are ignored.

    Raises:
        SegpipeError: a path that does not exist, holds no images, or repeats a case id.
    """
    cases: list[Case] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise SegpipeError(f"{path}: no such file or folder")
        if path.is_dir():
            cases.extend(_folder_cases(path))
        else:
            case = _file_case(path)
            if case is None:
                raise SegpipeError(f"{path}: not an image file segpipe can read ({KINDS})")
            cases.append(case)
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise SegpipeError(f"{case.images[0]}: case id '{case.case_id}' appears twice among the inputs")
        seen.add(case.case_id)
    return cases

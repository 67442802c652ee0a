"""Turn the paths a user gives `infer` into cases: files, folders of files, or datasets.

Each case carries `attrs["layout"]` (the layout whose MONAI reader loads it, see
`segpipe.data.loading.monai_reader`) and `attrs["spatial_dims"]` (2 for PNG and MAT
slices, 3 otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.decathlon import read_decathlon
from segpipe.data.paths import case_id_of, is_image_file, is_mat_file, is_png_file
from segpipe.errors import SegpipeError

KINDS = ".nii.gz, .nii, .nrrd, .mha, .png, figshare .mat, a DICOM series folder or a BraTS case folder"


def _case(path: Path, layout: str, images: list[Path] | None = None, case_id: str | None = None) -> Case:
    cid = case_id or case_id_of(path)
    dims = 2 if layout in ("slices", "figshare") else 3
    return Case(cid, cid, images or [path], attrs={"layout": layout, "spatial_dims": dims})


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


def _folder_cases(path: Path) -> list[Case]:
    from segpipe.data.brats import is_brats_case_folder, read_brats_case
    from segpipe.data.dicom import check_series, dicom_files, series_folders

    if (path / "dataset.json").is_file():
        ds = read_decathlon(path)
        cases = ds.test or [Case(c.case_id, c.patient, c.images) for c in ds.training]
        return [Case(c.case_id, c.patient, c.images, attrs={"layout": "decathlon", "spatial_dims": 3}) for c in cases]
    if is_brats_case_folder(path):
        case, _ = read_brats_case(path)
        return [Case(case.case_id, case.patient, case.images, attrs={"layout": "brats", "spatial_dims": 3})]
    if dicom_files(path):
        info = check_series(path)
        case = _case(path, "dicom", [path], path.name)
        case.attrs.update({k: v for k, v in info.items() if k != "patient"})
        return [case]
    files = sorted(p for p in path.iterdir() if p.is_file())
    cases = [c for c in (_file_case(f) for f in files) if c is not None]
    if not cases:
        series = series_folders(path)
        for folder in series:
            check_series(folder)
            cases.append(_case(folder, "dicom", [folder], folder.name))
    if not cases:
        raise SegpipeError(f"{path}: holds no images segpipe can read ({KINDS})")
    return cases


def discover_inputs(paths: Iterable[str | Path]) -> list[Case]:
    """Cases from image files (NIfTI, NRRD, MHA, PNG, figshare MAT), folders of such files,
    DICOM series folders (or folders of series folders), BraTS case folders (the four
    channel files; the seg file is ignored), or Decathlon folders (their test list, else
    their training list). Hidden and macOS `._*` files are ignored.

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

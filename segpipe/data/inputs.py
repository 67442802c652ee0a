"""Turn the paths a user gives `infer` into cases: files, folders of files, or datasets."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.decathlon import read_decathlon
from segpipe.data.paths import case_id_of, is_image_file
from segpipe.errors import SegpipeError


def discover_inputs(paths: Iterable[str | Path]) -> list[Case]:
    """Cases from image files, folders of image files, or Decathlon folders (their test list,
    else their training list). Hidden and macOS `._*` files are ignored.

    Raises:
        SegpipeError: a path that does not exist, holds no images, or repeats a case id.
    """
    cases: list[Case] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise SegpipeError(f"{path}: no such file or folder")
        if path.is_dir() and (path / "dataset.json").is_file():
            ds = read_decathlon(path)
            cases.extend(ds.test or [Case(c.case_id, c.patient, c.images) for c in ds.training])
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if is_image_file(p))
            if not files:
                raise SegpipeError(f"{path}: holds no NIfTI, NRRD or MHA images")
            cases.extend(Case(case_id_of(f), case_id_of(f), [f]) for f in files)
        elif is_image_file(path):
            cases.append(Case(case_id_of(path), case_id_of(path), [path]))
        else:
            raise SegpipeError(f"{path}: not an image file segpipe can read (.nii.gz, .nii, .nrrd, .mha)")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise SegpipeError(f"{case.images[0]}: case id '{case.case_id}' appears twice among the inputs")
        seen.add(case.case_id)
    return cases

"""Dataset integrity report, in the manner of nnU-Net's `verify_dataset_integrity`.

`verify_dataset(dataset)` reads every case once and reports, naming the file:

errors: missing files; image/label shape mismatch; spacing or affine mismatch (between a
label and its image, or between channel files; relative tolerance 1e-3); label values not
declared in `dataset.labels` (after `label_mapping`); NaN or Inf voxels; a channel count
that differs from the number of modalities or between cases; duplicate case ids.
warnings: empty labels (background only); constant images (a channel with one value).

NIfTI files are read with nibabel (header for geometry, data once); other formats go
through the MONAI chain of `segpipe.data.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.guard import check_channel_grids, check_read
from segpipe.data.loading import load_case
from segpipe.data.validate import affine_problem, dims_problem, grid_problem, image_problem, label_problem, label_values
from segpipe.errors import SegpipeError


@dataclass(frozen=True)
class Finding:
    """One problem: the file it concerns and what is wrong."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class VerifyReport:
    """Findings of `verify_dataset`; `usable` is False when there is any error."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    cases: int = 0

    @property
    def usable(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """One line per finding (`ERROR <file>: ...`, `WARNING <file>: ...`), then a summary."""
        lines = [f"ERROR {f}" for f in self.errors] + [f"WARNING {f}" for f in self.warnings]
        verdict = "usable" if self.usable else "NOT usable"
        lines.append(
            f"{self.cases} case(s) checked: {len(self.errors)} error(s), {len(self.warnings)} warning(s); dataset is {verdict}"
        )
        return "\n".join(lines)


@dataclass
class _Volume:
    """What verify needs of one case: per-channel arrays, spatial shape, affine."""

    channels: list[np.ndarray]
    shape: tuple[int, ...]
    affine: np.ndarray
    sources: list[Path]  # the file of each channel


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def _nifti_image(paths: list[Path]) -> _Volume:
    """The channels of NIfTI image files whose grids `check_channel_grids` found alike."""
    import nibabel as nib

    channels: list[np.ndarray] = []
    sources: list[Path] = []
    shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = None
    for path in paths:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
        if len(paths) == 1 and data.ndim == 4:
            spatial, chans = data.shape[:3], [data[..., c] for c in range(data.shape[3])]
        else:
            spatial, chans = data.shape, [data]
        if shape is None:
            shape, affine = tuple(spatial), np.asarray(img.affine, dtype=float)
        channels.extend(chans)
        sources.extend([path] * len(chans))
    assert shape is not None and affine is not None
    return _Volume(channels, shape, affine, sources)


def _nifti_label(path: Path, mapping: dict[int, int] | None) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data, tuple(data.shape), np.asarray(img.affine, dtype=float)


def _meta_volume(tensor: Any, paths: list[Path]) -> _Volume:
    arr = np.asarray(tensor)
    affine = np.asarray(getattr(tensor, "affine", np.eye(4)), dtype=float)
    sources = paths if len(paths) == arr.shape[0] else [paths[0]] * arr.shape[0]
    return _Volume([arr[c] for c in range(arr.shape[0])], tuple(arr.shape[1:]), affine, sources)


def _check_case(dataset: Dataset, case: Case, report: VerifyReport, channel_counts: dict[int, Path]) -> None:
    files = [*case.images, *([case.label] if case.label is not None else [])]
    missing = [p for p in files if not Path(p).exists()]
    for path in missing:
        report.errors.append(Finding(Path(path), f"missing (case '{case.case_id}')"))
    if missing:
        return
    try:
        for path in files:
            check_read(path)  # inside the inputs (links, header-named files), within the size limits
        check_channel_grids(list(case.images))  # the words preprocess refuses the case with
    except SegpipeError as exc:
        where, _, what = str(exc).partition(": ")
        report.errors.append(Finding(Path(where), what))
        return

    nifti = all(_is_nifti(Path(p)) for p in files) and "layout" not in case.attrs
    label_data: np.ndarray | None = None
    label_shape: tuple[int, ...] | None = None
    label_affine: np.ndarray | None = None
    try:
        if nifti:
            volume = _nifti_image(list(case.images))
            if case.label is not None:
                label_data, label_shape, label_affine = _nifti_label(case.label, dataset.label_mapping)
        else:
            # labels unmapped, so values outside the mapping can be told apart
            data = load_case(replace(dataset, label_mapping=None), case)
            volume = _meta_volume(data["image"], list(case.images))
            if data["label"] is not None:
                lab = data["label"]
                label_data = np.asarray(lab)[0]
                label_shape = tuple(label_data.shape)
                label_affine = np.asarray(getattr(lab, "affine", np.eye(4)), dtype=float)
    except SegpipeError as exc:
        report.errors.append(Finding(Path(str(exc).split(": ", 1)[0]), str(exc).split(": ", 1)[-1]))
        return
    except Exception as exc:  # a corrupt file nibabel cannot parse
        report.errors.append(Finding(Path(case.images[0]), f"cannot read ({type(exc).__name__}: {exc})"))
        return

    image_name = Path(case.images[0])
    problem = (dims_problem(volume.shape, dataset.spatial_dims) or image_problem(np.stack(volume.channels))
               or affine_problem(volume.affine))
    if problem:
        report.errors.append(Finding(image_name, problem))
        return
    n = len(volume.channels)
    if dataset.modalities and n != len(dataset.modalities):
        report.errors.append(Finding(image_name, f"has {n} channel(s), the dataset declares {len(dataset.modalities)} modalities"))
    first = channel_counts.setdefault(n, image_name)
    if len(channel_counts) > 1 and first == image_name:
        other_n, other = next((k, v) for k, v in channel_counts.items() if k != n)
        report.errors.append(Finding(image_name, f"has {n} channel(s) but {other.name} has {other_n}"))

    for c, (arr, src) in enumerate(zip(volume.channels, volume.sources)):
        where = f"channel {c}" if n > 1 else "image"
        if arr.dtype.kind == "f":
            with np.errstate(over="ignore"):  # as preprocess holds it: a float64 1e300 is Inf in float32
                arr = arr.astype(np.float32, copy=False)
            bad = ~np.isfinite(arr)
            if bad.any():
                nans = int(np.isnan(arr).sum())
                report.errors.append(Finding(src, f"{where} has {nans} NaN and {int(bad.sum()) - nans} Inf voxel(s)"))
                continue
        if arr.size and arr.min() == arr.max():
            report.warnings.append(Finding(src, f"{where} is constant ({arr.flat[0]:g})"))

    if case.label is None or label_data is None:
        return
    label = Path(case.label)
    if label_shape != volume.shape:
        report.errors.append(Finding(label, f"label shape {label_shape} differs from image shape {volume.shape} ({image_name.name})"))
        return
    assert label_affine is not None
    problem = grid_problem(label_affine, volume.affine)
    if problem:
        report.errors.append(Finding(label, f"label {problem} of image {image_name.name}"))
    problem = label_problem(label_data, dataset.labels, dataset.label_mapping)
    if problem:
        report.errors.append(Finding(label, problem))
        return
    values, _ = label_values(label_data)
    if values <= {0.0}:
        report.warnings.append(Finding(label, "label is empty (background only)"))


def verify_dataset(dataset: Dataset, *, progress: bool = False) -> VerifyReport:
    """Check every case of `dataset` (training and test) and return the findings.

    Args:
        dataset: what a reader returned.
        progress: show a progress bar (tqdm) over the cases.
    """
    report = VerifyReport()
    cases = dataset.cases
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            report.errors.append(
                Finding(Path(case.images[0]) if case.images else dataset.root,
                        f"duplicate case id '{case.case_id}' (also {seen[case.case_id].images[0] if seen[case.case_id].images else '?'})")
            )
        else:
            seen[case.case_id] = case
    from segpipe.progress import progress as bar

    iterator: Any = bar(cases, quiet=not progress, desc="verify", unit="case")
    channel_counts: dict[int, Path] = {}
    for case in iterator:
        if not case.images:
            report.errors.append(Finding(dataset.root, f"case '{case.case_id}' has no image files"))
            continue
        _check_case(dataset, case, report, channel_counts)
        report.cases += 1
    return report


__all__ = ["verify_dataset", "VerifyReport", "Finding"]

"""Reader for DICOM series: a folder whose sub-folders each hold one series, or a folder
that is itself one series.

One `Case` per series with `images=[series_folder]`; MONAI's ITKReader reads the folder
as one volume with its geometry, slices sorted by position. The headers (pydicom, pixel
data deferred) are checked first: one SeriesInstanceUID per folder, evenly spaced slice
positions, and slices that all hold pixels of one size and orientation at a positive
spacing, so a mixed or incomplete series fails with one clear line instead of a silently
wrong volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.layout import Layout, every_case
from segpipe.data.paths import is_dicom_file, visible_dirs, visible_files
from segpipe.errors import SegpipeError

SPACING_TOLERANCE = 0.1  # relative deviation of a slice gap from the typical gap


def dicom_files(folder: Path) -> list[Path]:
    try:
        return [p for p in visible_files(folder) if is_dicom_file(p)]
    except OSError:
        return []


def is_dicom_folder(root: Path) -> bool:
    """A series folder, or a folder with at least one series sub-folder."""
    if not root.is_dir():
        return False
    return bool(dicom_files(root)) or any(dicom_files(d) for d in visible_dirs(root))


def check_series(folder: Path) -> dict[str, object]:
    """Check one series folder from its headers.

    Returns:
        {"series_uid", "patient", "modality", "slices", "spacing"} (spacing between slices
        in mm, or None for a single slice).

    Raises:
        SegpipeError: unreadable headers, several series in the folder, missing geometry,
            slices at the same position, or uneven slice spacing (a missing slice).
    """
    import pydicom

    files = dicom_files(folder)
    if not files:
        raise SegpipeError(f"{folder}: holds no DICOM files")
    headers = []
    for path in files:
        try:
            headers.append((path, pydicom.dcmread(path, defer_size=1024)))  # pixel data: its tag, not its bytes
        except Exception as exc:
            raise SegpipeError(f"{path}: not a readable DICOM file ({type(exc).__name__})") from None
    uids = {str(h.get("SeriesInstanceUID", "")) for _, h in headers}
    if len(uids) > 1:
        raise SegpipeError(
            f"{folder}: holds {len(uids)} series (SeriesInstanceUID {', '.join(sorted(uids)[:3])}); put each series in its own folder"
        )
    first = headers[0][1]
    info: dict[str, object] = {
        "series_uid": uids.pop(),
        "patient": str(first.get("PatientID", "") or ""),
        "modality": str(first.get("Modality", "") or ""),
        "slices": len(headers),
        "spacing": None,
    }
    _check_slices(headers)
    if len(headers) == 1:
        return info
    try:
        orient = np.array([float(v) for v in first.ImageOrientationPatient], dtype=float)
        normal = np.cross(orient[:3], orient[3:])
        positions = sorted(
            (float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])), p.name) for p, h in headers
        )
    except Exception:
        raise SegpipeError(
            f"{folder}: slices lack ImagePositionPatient / ImageOrientationPatient; cannot order the series"
        ) from None
    z = np.array([p for p, _ in positions])
    gaps = np.diff(z)
    if np.any(gaps < 1e-4):
        i = int(np.argmin(gaps))
        raise SegpipeError(f"{folder}: slices {positions[i][1]} and {positions[i + 1][1]} share position {z[i]:g} mm")
    step = float(np.median(gaps))
    bad = np.nonzero(np.abs(gaps - step) > SPACING_TOLERANCE * step)[0]
    if bad.size:
        i = int(bad[0])
        missing = round(gaps[i] / step) - 1
        what = f"about {missing} missing slice(s)" if missing >= 1 else "uneven spacing"
        raise SegpipeError(
            f"{folder}: gap of {gaps[i]:g} mm between slices at {z[i]:g} mm ({positions[i][1]}) and "
            f"{z[i + 1]:g} mm ({positions[i + 1][1]}), expected {step:g} mm: {what}"
        )
    info["spacing"] = step
    return info


def _check_slices(headers: list) -> None:
    """Each slice holds pixels of the first slice's size and orientation, at a positive pixel
    spacing: ITK would drop a slice without pixels or of another size (stretching the slice
    gap), stack other orientations on the first's, and read a zero spacing as 1 mm."""
    first_path, first = headers[0]
    size = (first.get("Rows"), first.get("Columns"))
    orient = first.get("ImageOrientationPatient")
    for path, h in headers:
        if not any(k in h for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise SegpipeError(f"{path}: slice has no pixel data")
        if (h.get("Rows"), h.get("Columns")) != size:
            raise SegpipeError(f"{path}: slice of {h.get('Rows')} x {h.get('Columns')} pixels, the series' "
                               f"{first_path.name} has {size[0]} x {size[1]}")
        theirs = h.get("ImageOrientationPatient")
        if orient is not None and theirs is not None and not np.allclose(
                np.asarray(theirs, dtype=float), np.asarray(orient, dtype=float), atol=1e-4):
            raise SegpipeError(f"{path}: ImageOrientationPatient {list(map(float, theirs))} differs from the series' "
                               f"{first_path.name} ({list(map(float, orient))})")
        spacing = h.get("PixelSpacing")
        if spacing is not None:
            values = np.asarray(spacing, dtype=float).ravel()
            if values.size != 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
                raise SegpipeError(f"{path}: PixelSpacing {list(map(float, values))} is not two positive sizes in mm")


def series_folders(root: Path) -> list[Path]:
    """`root` itself when it holds DICOM files, else its sub-folders that do."""
    if dicom_files(root):
        return [root]
    return [d for d in visible_dirs(root) if dicom_files(d)]


def read_dicom(root: str | Path, labels: dict[int, str] | None = None) -> Dataset:
    """Read DICOM series as unlabelled cases (in `test`): DICOM carries no segmentation
    that this reader pairs (DICOM-SEG would need highdicom).

    Case id = series folder name; patient = PatientID (else the case id);
    `attrs` holds series_uid, modality, slices, spacing.

    Raises:
        SegpipeError: no series found, or a series that fails `check_series`.
    """
    root = Path(root)
    if not root.is_dir():
        raise SegpipeError(f"{root}: expected a DICOM series folder")
    folders = series_folders(root)
    if not folders:
        raise SegpipeError(f"{root}: holds no DICOM series")
    cases: list[Case] = []
    for folder in folders:
        info = check_series(folder)
        cases.append(
            Case(case_id=folder.name, patient=str(info["patient"]) or folder.name, images=[folder],
                 attrs={k: v for k, v in info.items() if k != "patient"})
        )
    return build_dataset(
        root, "dicom", training=[], test=cases, labels=labels or {0: "background"},
        modalities=[str(cases[0].attrs.get("modality") or "image")],
    )


LAYOUT = Layout(
    name="dicom",
    describe="DICOM series: a series folder, or a folder of series folders (unlabelled)",
    detect=is_dicom_folder,
    read=read_dicom,
    inputs=every_case,
)

__all__ = ["LAYOUT", "read_dicom", "check_series", "is_dicom_folder", "series_folders"]

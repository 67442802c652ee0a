"""Reader for DICOM series: a folder whose sub-folders each hold one series, or a folder
that is itself one series.

One `Case` per series with `images=[series_folder]`; MONAI's ITKReader reads the folder
as one volume with its geometry, slices sorted by position. The headers (pydicom, pixel
data deferred) are checked first: one SeriesInstanceUID per folder, evenly spaced slice
(and enhanced-image frame) positions, and slices that all hold pixels of one size and
orientation at a positive spacing and share every tag ITK splits a series by or takes from
the first slice, so a mixed or incomplete series fails with one clear line instead of a
silently wrong volume. After the read, `check_volume_slices` refuses a volume that holds
fewer slices than the folder's files (ITK split the series by a rule of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.headers import frame_count
from segpipe.data.layout import Layout, every_case
from segpipe.data.paths import is_dicom_file, visible_dirs, visible_files
from segpipe.errors import SegpipeError
from segpipe.limits import check_image_size

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
            slices at the same position, uneven slice spacing (a missing slice), or slices
            that differ in a tag of `_SPLIT_TAGS` or `_VALUE_TAGS`.
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
        _name_file_without_uid(headers)
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
    orient, points = _check_slices(headers)
    if len(headers) == 1:
        return info
    _check_alike(folder, headers)
    several = [path for path, h in headers if frame_count(path, h) > 1]
    if several:
        raise SegpipeError(f"{several[0]}: a file of several frames beside {len(headers) - 1} other file(s) of the "
                           "series; ITK would stack the files as channels (put each multi-frame file in its own folder)")
    if orient is None or any(point is None for point in points):
        raise SegpipeError(
            f"{folder}: slices lack ImagePositionPatient / ImageOrientationPatient; cannot order the series"
        )
    info["spacing"] = _check_stack(folder, orient, points, [p.name for p, _ in headers], "slices")
    return info


def _check_stack(where: Path, orient: np.ndarray, points: list, names: list[str], what: str) -> float:
    """Slice origins (`points`, named by `names`) on one line along the slice normal, evenly
    spaced, none shared; returns the spacing in mm. `what` names the items ("slices", "frames")."""
    normal = np.cross(orient[:3], orient[3:])
    positions = sorted((float(np.dot(normal, point)), name) for point, name in zip(points, names))
    z = np.array([p for p, _ in positions])
    _check_not_sheared(where, normal, np.array(points))
    gaps = np.diff(z)
    if np.any(gaps < 1e-4):
        i = int(np.argmin(gaps))
        raise SegpipeError(f"{where}: {what} {positions[i][1]} and {positions[i + 1][1]} share position {z[i]:g} mm")
    step = float(np.median(gaps))
    bad = np.nonzero(np.abs(gaps - step) > SPACING_TOLERANCE * step)[0]
    if bad.size:
        i = int(bad[0])
        missing = round(gaps[i] / step) - 1
        problem = f"about {missing} missing {what[:-1]}(s)" if missing >= 1 else "uneven spacing"
        raise SegpipeError(
            f"{where}: gap of {gaps[i]:g} mm between {what} at {z[i]:g} mm ({positions[i][1]}) and "
            f"{z[i + 1]:g} mm ({positions[i + 1][1]}), expected {step:g} mm: {problem}"
        )
    return step


# Tags every slice of a series must share. GDCM's series details (which MONAI's ITKReader
# uses) split a series where the first four differ and ITK reads only the first part; the
# others ITK takes from the first slice for the whole volume.
_SPLIT_TAGS = ("SeriesNumber", "SequenceName", "SliceThickness", "SeriesDate")
_VALUE_TAGS = ("PixelSpacing", "PixelRepresentation", "BitsAllocated", "BitsStored", "SamplesPerPixel",
               "PhotometricInterpretation", "RescaleSlope", "RescaleIntercept")


def _tag_value(h: object, key: str) -> object:
    """A header value comparable between slices: numbers as floats (`2` and `2.0` alike), text stripped."""
    value = h.get(key)  # type: ignore[attr-defined]
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    return tuple(float(v) if isinstance(v, (int, float)) else str(v).strip() for v in items if v is not None)


def _shown(value: object) -> str:
    shown = "\\".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)  # type: ignore[attr-defined]
    return shown or "absent"


def _check_alike(folder: Path, headers: list) -> None:
    """Every slice shares the first's `_SPLIT_TAGS` and `_VALUE_TAGS`, else one line naming the
    tag and two files that differ in it."""
    first_path, first = headers[0]
    for key in (*_SPLIT_TAGS, *_VALUE_TAGS):
        want = _tag_value(first, key)
        for path, h in headers[1:]:
            theirs = _tag_value(h, key)
            if theirs == want:
                continue
            effect = ("ITK would split the series there and read only part of it" if key in _SPLIT_TAGS
                      else f"ITK would read every slice with {first_path.name}'s value")
            raise SegpipeError(f"{folder}: slices differ in {key} ({first_path.name}: {_shown(want)}, "
                               f"{path.name}: {_shown(theirs)}); {effect}")


def _name_file_without_uid(headers: list) -> None:
    """A folder that seems to hold several series because a file lacks its SeriesInstanceUID:
    name that file (a file cut short reads as a header without the UID or pixel data)."""
    for path, h in headers:
        if str(h.get("SeriesInstanceUID", "") or ""):
            continue
        if not any(k in h for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise SegpipeError(f"{path}: DICOM file holds neither a SeriesInstanceUID nor pixel data "
                               f"(cut short or damaged, {path.stat().st_size} bytes)")
        raise SegpipeError(f"{path}: DICOM file has no SeriesInstanceUID, unlike the other files of its folder")


def check_volume_slices(folder: Path, slices: int) -> None:
    """After ITK read a series folder: its volume holds every frame of the folder's files.
    ITK (GDCM) splits a series by rules of its own and reads the first part only.

    Raises:
        SegpipeError: the volume holds fewer slices than the files hold frames.
    """
    import pydicom

    frames = 0
    for path in dicom_files(folder):
        frames += frame_count(path, pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"]))
    if slices < frames:
        raise SegpipeError(f"{folder}: ITK read {slices} of the series' {frames} slices (it split the series by "
                           "a header field that differs between slices); refused")


def _check_not_sheared(folder: Path, normal: np.ndarray, points: np.ndarray) -> None:
    """Slice origins (`points`, one row a slice) on one line along the slice normal: a tilted
    gantry shifts each slice in its own plane, and ITK would read the series on an unsheared
    grid, with the slice gap taken as the distance between origins (too long) and the shear lost."""
    along = points @ normal
    order = np.argsort(along)
    if len(points) < 2 or np.ptp(along) <= 0:
        return
    steps = np.diff(points[order], axis=0)
    in_plane = steps - np.outer(steps @ normal, normal)
    shift = float(np.abs(in_plane).max())
    if shift > 1e-2 * max(float(np.median(np.diff(along[order]))), 1e-6) + 1e-3:
        angle = np.degrees(np.arctan2(np.linalg.norm(in_plane, axis=1).max(), np.abs(steps @ normal).max()))
        raise SegpipeError(f"{folder}: slice origins are shifted in the slice plane from one slice to the next "
                           f"(a gantry tilt of about {angle:.1f} degrees); segpipe reads only unsheared series "
                           "(resample it first, e.g. with dcm2niix)")


def _check_slices(headers: list) -> tuple[np.ndarray | None, list[np.ndarray | None]]:
    """Each slice holds pixels of the first slice's size and orientation, at a positive pixel
    spacing: ITK would drop a slice without pixels or of another size (stretching the slice
    gap), stack other orientations on the first's, and read a zero spacing as 1 mm.

    Returns:
        The first slice's ImageOrientationPatient and each slice's ImagePositionPatient
        (None where absent).
    """
    first_path, first = headers[0]
    size = (first.get("Rows"), first.get("Columns"))
    orient = _numbers(first_path, first, "ImageOrientationPatient")
    positions = []
    for path, h in headers:
        if not any(k in h for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise SegpipeError(f"{path}: slice has no pixel data")
        _check_pixel_data(path, h)
        theirs = _finite(path, h, "ImageOrientationPatient")
        positions.append(_finite(path, h, "ImagePositionPatient"))
        if (h.get("Rows"), h.get("Columns")) != size:
            raise SegpipeError(f"{path}: slice of {h.get('Rows')} x {h.get('Columns')} pixels, the series' "
                               f"{first_path.name} has {size[0]} x {size[1]}")
        if orient is not None and theirs is not None and not np.allclose(theirs, orient, atol=1e-4):
            raise SegpipeError(f"{path}: ImageOrientationPatient {theirs.tolist()} differs from the series' "
                               f"{first_path.name} ({orient.tolist()})")
        _check_frames(path, h)
        spacing = _numbers(path, h, "PixelSpacing")
        if spacing is not None and (not np.all(np.isfinite(spacing)) or np.any(spacing <= 0)):
            raise SegpipeError(f"{path}: PixelSpacing {spacing.tolist()} is not two positive sizes in mm")
    return orient, positions


_COUNTS = {"ImageOrientationPatient": 6, "ImagePositionPatient": 3, "PixelSpacing": 2, "SpacingBetweenSlices": 1}


def _numbers(path: Path, h: object, key: str) -> np.ndarray | None:
    """A numeric header value (`_COUNTS[key]` numbers) as floats, None when absent, or one line
    naming a value that is not numbers or has another count."""
    value = h.get(key)  # type: ignore[attr-defined]
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) else [value]
    try:
        numbers = np.array([float(v) for v in items], dtype=float)
    except (TypeError, ValueError):
        numbers = None
    if numbers is None or numbers.size != _COUNTS[key]:
        shown = "\\".join(str(v) for v in items)[:80]
        raise SegpipeError(f"{path}: {key} '{shown}' is not {_COUNTS[key]} number(s)")
    return numbers


def _finite(path: Path, h: object, key: str) -> np.ndarray | None:
    """`_numbers`, refusing a value that is not finite."""
    values = _numbers(path, h, key)
    if values is not None and not np.all(np.isfinite(values)):
        raise SegpipeError(f"{path}: {key} {values.tolist()} is not finite")
    return values


def _check_frames(path: Path, h: object) -> None:
    """A file of several frames says how far apart they lie: per-frame positions (an enhanced
    image's functional groups) or SpacingBetweenSlices. Without either, ITK takes 1 mm."""
    frames = frame_count(path, h)
    if frames < 2:
        return
    if "PerFrameFunctionalGroupsSequence" in h:  # type: ignore[operator]
        _check_frame_positions(path, h)
        return
    gap = _numbers(path, h, "SpacingBetweenSlices")
    if gap is None:
        raise SegpipeError(f"{path}: {frames} frames without per-frame positions or SpacingBetweenSlices: the "
                           "distance between frames is unknown (ITK would take 1 mm)")
    if not 0 < gap[0] < float("inf"):
        raise SegpipeError(f"{path}: SpacingBetweenSlices {gap[0]:g} is not a positive distance in mm")


def _group_item(h: object, group: str) -> object | None:
    """The first item of a functional group sequence of `h` (an enhanced image's shared or
    per-frame item), or None."""
    items = h.get(group) if h is not None else None  # type: ignore[attr-defined]
    return items[0] if items else None


def _check_frame_positions(path: Path, h: object) -> None:
    """An enhanced image's frames evenly spaced along their normal, as a series' slices must be
    (ITK takes one spacing for all): a missing frame is named, not stretched over."""
    shared = _group_item(h, "SharedFunctionalGroupsSequence")
    frames = list(h.PerFrameFunctionalGroupsSequence)  # type: ignore[attr-defined]
    planes = [_group_item(f, "PlanePositionSequence") for f in frames]
    orientation = _group_item(frames[0], "PlaneOrientationSequence") or _group_item(shared, "PlaneOrientationSequence")
    if orientation is None or any(p is None for p in planes):
        return  # no positions to check
    orient = _finite(path, orientation, "ImageOrientationPatient")
    points = [_finite(path, p, "ImagePositionPatient") for p in planes]
    if orient is None or any(p is None for p in points):
        return
    _check_stack(path, orient, points, [f"frame {k + 1}" for k in range(len(points))], "frames")


def _check_pixel_data(path: Path, h: object) -> None:
    """Native pixel data at least as long as rows x columns x samples x frames (ITK reads past
    a short one into whatever memory holds); compressed pixel data that pydicom can decode
    must decode (GDCM dies of a floating-point exception on a malformed RLE stream). Syntaxes
    pydicom has no decoder for here are left to ITK."""
    meta = getattr(h, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is not None and syntax.is_compressed:
        try:
            h.pixel_array  # type: ignore[attr-defined]
        except Exception as exc:
            text = str(exc)
            if "missing dependencies" in text or "not supported" in text:
                return
            reason = [line.strip() for line in text.splitlines() if line.strip()][-1:] or [type(exc).__name__]
            raise SegpipeError(f"{path}: compressed pixel data ({syntax.name}) cannot be decoded ({reason[0][:200]})") from None
        return
    element = h.get_item("PixelData") if "PixelData" in h else None  # type: ignore[attr-defined]
    length = getattr(element, "length", None)
    if length is None or length == 0xFFFFFFFF:
        return
    get = h.get  # type: ignore[attr-defined]
    rows, cols, samples = int(get("Rows", 0) or 0), int(get("Columns", 0) or 0), int(get("SamplesPerPixel", 1) or 1)
    frames = frame_count(path, h)
    check_image_size(path, (cols, rows, frames))
    need = (rows * cols * samples * frames * int(get("BitsAllocated", 16) or 16) + 7) // 8
    if length < need:
        raise SegpipeError(f"{path}: pixel data is cut short ({length} of {need} bytes)")


def series_folders(root: Path) -> list[Path]:
    """`root` itself when it holds DICOM files, else its sub-folders that do.

    Raises:
        SegpipeError: `root` holds DICOM files and series sub-folders (ITK would read the
            files only; the sub-folders would be dropped).
    """
    subfolders = [d for d in visible_dirs(root) if dicom_files(d)]
    if not dicom_files(root):
        return subfolders
    if subfolders:
        raise SegpipeError(f"{root}: holds DICOM files beside series sub-folders ({subfolders[0].name}"
                           f"{', ...' if len(subfolders) > 1 else ''}); move the files into a series folder of their own")
    return [root]


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

__all__ = ["LAYOUT", "read_dicom", "check_series", "check_volume_slices", "is_dicom_folder", "series_folders"]

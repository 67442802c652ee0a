"""DICOM-SEG output through highdicom: one segment per label, referencing the source series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe import __version__
from segpipe.atomic import write_with
from segpipe.errors import SegpipeError


def _sorted_series(folder: Path) -> list:
    """The series' datasets in the order ITK stacks them: by position along the slice normal."""
    import pydicom

    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            datasets.append(pydicom.dcmread(path))
        except Exception:  # non-DICOM files in a series folder are skipped, as ITK does
            continue
    if not datasets:
        raise SegpipeError(f"{folder}: no DICOM files for the DICOM-SEG to reference")
    row, col = (np.asarray(datasets[0].ImageOrientationPatient[i : i + 3], float) for i in (0, 3))
    normal = np.cross(row, col)
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))


def write_dicom_seg(series: Path, labels: np.ndarray, names: dict[int, str], path: Path) -> None:
    """Write `labels` (x, y, slice as segpipe reads a series) as a DICOM Segmentation object.

    Args:
        series: the source series folder.
        labels: integer label map on the series' voxel grid, axes (column, row, slice).
        names: label value -> name (0, background, is not a segment).
        path: the .dcm file to write.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:
        raise SegpipeError("option --dicom-seg: needs highdicom (pip install 'segpipe[dicom]')") from None
    sources = _sorted_series(series)
    frames = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))).astype(np.uint8)  # (slice, row, column)
    if frames.shape != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise SegpipeError(f"{series}: mask shape {frames.shape} does not match the series ({len(sources)} slices)")
    present = [k for k in sorted(names) if k != 0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name="segpipe", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=names[k],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, k in enumerate(present)
    ]
    remap = np.zeros(max(present + [0]) + 1, np.uint8)
    for i, k in enumerate(present):
        remap[k] = i + 1
    try:
        seg = _segmentation(hd, sources, remap[np.clip(frames, 0, len(remap) - 1)], segments)
    except AttributeError as exc:  # a source file lacks a patient or study attribute DICOM-SEG must copy
        raise SegpipeError(f"{series}: cannot make a DICOM-SEG ({exc})") from None
    write_with(path, lambda tmp: seg.save_as(tmp))


def _segmentation(hd, sources: list, pixel_array: np.ndarray, segments: list):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="segpipe",
        manufacturer_model_name="segpipe",
        software_versions=__version__,
        device_serial_number="0",
        omit_empty_frames=False,
    )

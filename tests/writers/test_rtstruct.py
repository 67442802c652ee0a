"""infer --rtstruct: an RT Structure Set through rt-utils, read back and rasterised on a
DICOM series made from the real BraTS 2021 case."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from segpipe.errors import SegpipeError
from tests.conftest import shared_data

Z = slice(40, 116)  # the slices holding the case's tumour (z 44-111)


def write_real_series(folder: Path, volume: np.ndarray, patient: str = "BraTS2021_00006") -> Path:
    """One CT-like DICOM file per slice: pixel (row r, column c) of slice k is volume[c, r, k],
    1 mm pixels, slice k at z = k mm, files written in reverse order."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    n = volume.shape[2]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient, "Test^Patient", "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20260101", "120000", "1", "A1", ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype(np.int16)).tobytes()
        ds.save_as(folder / f"IM{n - k:04d}", enforce_file_format=True)
    return folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def real_case(tmp_path_factory):
    import nibabel as nib

    case = shared_data("BraTS2021") / "BraTS2021_00006"
    t1ce = np.asarray(nib.load(str(case / "BraTS2021_00006_t1ce.nii.gz")).dataobj)[:, :, Z]
    seg = np.asarray(nib.load(str(case / "BraTS2021_00006_seg.nii.gz")).dataobj).astype(np.uint8)[:, :, Z]
    return write_real_series(tmp_path_factory.mktemp("dicom") / "BraTS2021_00006", t1ce), t1ce, seg


def test_rtstruct_contours_rasterise_back_to_the_real_mask(real_case, tmp_path):
    pytest.importorskip("rt_utils")
    import pydicom
    from rt_utils import RTStructBuilder

    from segpipe.artifacts.plan import BRATS_REGIONS
    from segpipe.writers.rtstruct import write_rtstruct

    series, _, seg = real_case
    names = {0: "background", 1: "necrotic core", 2: "edema", 4: "enhancing tumour"}
    rois = write_rtstruct(series, seg, names, BRATS_REGIONS, tmp_path / "rt.dcm")
    assert rois == ["necrotic core", "edema", "enhancing tumour", "whole tumour", "tumour core"]  # ET region = ET label
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    assert ds.Modality == "RTSTRUCT" and ds.Manufacturer == "segpipe"
    assert [r.ROIName for r in ds.StructureSetROISequence] == rois
    source_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    referenced = {c.ReferencedSOPInstanceUID for roi in ds.ROIContourSequence for contour in roi.ContourSequence
                  for c in contour.ContourImageSequence}
    assert referenced <= source_uids and len(referenced) > 20
    rt = RTStructBuilder.create_from(dicom_series_path=str(series), rt_struct_path=str(tmp_path / "rt.dcm"))
    structures = {"necrotic core": [1], "edema": [2], "enhancing tumour": [4], "whole tumour": [1, 2, 4], "tumour core": [1, 4]}
    assert set(rois) == set(structures)
    for name, members in structures.items():
        back = rt.get_roi_mask_by_name(name)  # (row, column, slice)
        want = np.transpose(np.isin(seg, members), (1, 0, 2))
        assert back.shape == want.shape
        assert dice(back, want) >= 0.95, name


def test_infer_rtstruct_matches_the_series_pixels(real_case, tiny_model, tmp_path, monkeypatch):
    """Through `segpipe infer --rtstruct`: labels made from the series as segpipe reads it
    (ITK) come back from the RT-STRUCT on the right rows, columns and slices."""
    pytest.importorskip("rt_utils")
    import pydicom
    from click.testing import CliRunner
    from monai.transforms import LoadImage
    from rt_utils import RTStructBuilder

    import segpipe.pipeline.infer as infer_module
    from segpipe.cli import cli

    series, t1ce, _ = real_case
    threshold = float(np.percentile(t1ce[t1ce > 0], 98))

    def oracle(segmenter, case, sliding_window, with_probabilities=False):
        image = LoadImage(reader="ITKReader", image_only=True)(str(case.images[0]))
        array = np.asarray(image)
        return (array > threshold).astype(np.uint8), image.meta.get("original_affine"), None

    monkeypatch.setattr(infer_module, "segment_case", oracle)
    out = CliRunner().invoke(cli, ["infer", "-m", str(tiny_model), "-i", str(series), "-o", str(tmp_path / "pred"),
                                   "--rtstruct", "--json"])
    assert out.exit_code == 0, out.output
    assert out.output.lstrip().startswith("{")  # rt-utils' own prints stay off standard output
    path = tmp_path / "pred" / "BraTS2021_00006_rtstruct.dcm"
    assert path.is_file() and (tmp_path / "pred" / "BraTS2021_00006.nii.gz").is_file()
    rt = RTStructBuilder.create_from(dicom_series_path=str(series), rt_struct_path=str(path))
    first = rt.get_roi_names()[0]
    back = rt.get_roi_mask_by_name(first)
    files = sorted((pydicom.dcmread(p) for p in series.iterdir()), key=lambda d: float(d.ImagePositionPatient[2]))
    bright = np.stack([d.pixel_array > threshold for d in files], axis=-1)  # (row, column, slice), straight from the pixels
    assert bright.sum() > 1000 and dice(back, bright) >= 0.95
    assert not [p for p in (tmp_path / "pred").iterdir() if ".partial" in p.name]


def test_rtstruct_without_rt_utils_names_the_extra(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from segpipe.cli import cli

    monkeypatch.setitem(sys.modules, "rt_utils", None)
    from segpipe.writers.rtstruct import require_rt_utils

    with pytest.raises(SegpipeError, match=r"segpipe\[rtstruct\]"):
        require_rt_utils()
    (tmp_path / "model").mkdir()
    (tmp_path / "in").mkdir()
    out = CliRunner().invoke(cli, ["infer", "-m", str(tmp_path / "model"), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                                   "--rtstruct"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == ["error: option --rtstruct: needs rt-utils: pip install 'segpipe[rtstruct]'"]

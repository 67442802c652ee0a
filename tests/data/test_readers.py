"""Dataset readers on small generated files: every layout, layout detection, loading, errors."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import ITKReader
from PIL import Image

from segpipe.data import read_dataset
from segpipe.data.dataset import Dataset
from segpipe.data.decathlon import Dataset as DecathlonDataset
from segpipe.data.figshare import read_mat_field, write_figshare_mat
from segpipe.data.inputs import discover_inputs
from segpipe.data.loading import load_arrays, load_case, monai_reader
from segpipe.data.mat_reader import FigshareMatReader
from segpipe.errors import SegpipeError
from tests.builders import make_brats, make_figshare, make_generic, make_slices, write_dicom_series, write_nifti

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------- Dataset record


def test_dataset_moved_with_new_defaults():
    assert DecathlonDataset is Dataset
    ds = Dataset(root=Path("."), name="x", modalities=[], labels={0: "bg"}, training=[])
    assert (ds.spatial_dims, ds.label_mapping, ds.folds, ds.layout) == (3, None, None, "decathlon")


# ---------------------------------------------------------------- BraTS


def test_brats_2021_channels_in_decathlon_order_and_msd_labels(tmp_path):
    ds = read_dataset(make_brats(tmp_path / "brats"))
    assert ds.layout == "brats" and len(ds.training) == 2 and ds.modalities == ["FLAIR", "T1w", "t1gd", "T2w"]
    case = ds.training[0]
    assert case.case_id == case.patient == "BraTS2021_00001"
    assert [p.name.split("_")[-1] for p in case.images] == ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"]
    image, label = load_arrays(ds, case)
    assert image.shape == (4, 6, 5, 4) and [image[c, 0, 0, 0] for c in range(4)] == [1, 2, 3, 4]
    # BraTS 1 core, 2 edema, 4 enhancing -> MSD 2 non-enhancing, 1 edema, 3 enhancing
    assert (label[0, 1, 1, 1], label[0, 2, 1, 1], label[0, 3, 1, 1]) == (2, 1, 3)
    assert set(np.unique(label)) <= set(ds.labels)


def test_brats_2023_naming_and_brats_label_set(tmp_path):
    root = make_brats(tmp_path / "b23", cases=("BraTS-GLI-00005-000", "BraTS-GLI-00005-001"), naming="2023")
    ds = read_dataset(root, label_set="brats")
    assert [c.patient for c in ds.training] == ["BraTS-GLI-00005"] * 2
    assert ds.label_mapping == {1: 1, 2: 2, 3: 4} and 4 in ds.labels
    _, label = load_arrays(ds, ds.training[0])
    assert sorted(np.unique(label)) == [0, 1, 2, 4]
    ds = read_dataset(root)
    _, label = load_arrays(ds, ds.training[0])
    assert (label[0, 1, 1, 1], label[0, 2, 1, 1], label[0, 3, 1, 1]) == (2, 1, 3)


def test_brats_single_case_folder_and_errors(tmp_path):
    root = make_brats(tmp_path / "b", cases=("C1",))
    assert [c.case_id for c in read_dataset(root / "C1").training] == ["C1"]
    with pytest.raises(SegpipeError, match="label_set"):
        read_dataset(root, label_set="nope")
    (root / "C1" / "C1_t1ce.nii.gz").unlink()
    with pytest.raises(SegpipeError, match=r"C1: missing channel file\(s\) \*_t1ce"):
        read_dataset(root)
    make_brats(tmp_path / "mix", cases=("A",))
    make_brats(tmp_path / "mix", cases=("B",), naming="2023")
    with pytest.raises(SegpipeError, match="mixes BraTS 2021"):
        read_dataset(tmp_path / "mix")


def test_brats_case_without_seg_is_a_test_case(tmp_path):
    root = make_brats(tmp_path / "b", cases=("A", "B"))
    (root / "B" / "B_seg.nii.gz").unlink()
    ds = read_dataset(root)
    assert [c.case_id for c in ds.training] == ["A"] and [c.case_id for c in ds.test] == ["B"]


# ---------------------------------------------------------------- 2D slices


def test_slices_patients_orientation_and_labels(tmp_path):
    ds = read_dataset(make_slices(tmp_path / "s"))
    assert ds.layout == "slices" and ds.spatial_dims == 2 and len(ds.training) == 4
    assert {c.patient for c in ds.training} == {"BRATS_001", "BRATS_002"}
    assert ds.labels[3] == "enhancing tumour"
    image, label = load_arrays(ds, ds.training[0])
    png = np.asarray(Image.open(ds.training[0].images[0]))
    assert png.shape == (5, 7) and image.shape == (1, 7, 5)  # PILReader: (x, y), the transpose
    np.testing.assert_array_equal(image[0], png.T)
    assert label[0, 2, 1] == 3
    # writing a mask back: PIL.Image.fromarray(mask[0].T) restores the file's own layout
    assert np.asarray(Image.fromarray(label[0].T.astype(np.uint8))).shape == png.shape


def test_slices_pattern_labels_and_errors(tmp_path):
    root = make_slices(tmp_path / "s", patients=("case7",))
    with pytest.raises(SegpipeError, match="does not match the patient pattern"):
        read_dataset(root)
    ds = read_dataset(root, patient_pattern=r"^(?P<patient>case\d+)_z", labels={0: "bg", 3: "t"})
    assert {c.patient for c in ds.training} == {"case7"} and ds.labels == {0: "bg", 3: "t"}
    (root / "training_labels" / "case7_z10.png").unlink()
    with pytest.raises(SegpipeError, match=r"case7_z10.png: no label case7_z10.png"):
        read_dataset(root, patient_pattern="case7")
    with pytest.raises(SegpipeError, match="do not apply to the slices layout"):
        read_dataset(root, label_set="msd")


# ---------------------------------------------------------------- figshare MAT-files


def test_figshare_reader_header_pid_type_and_transpose(tmp_path):
    root = make_figshare(tmp_path / "f")
    assert (root / "1.mat").read_bytes()[:10] == b"MATLAB 7.3"
    ds = read_dataset(root)
    assert ds.layout == "figshare" and ds.spatial_dims == 2 and ds.labels == {0: "background", 1: "tumour"}
    assert [c.case_id for c in ds.training] == ["1", "2", "3", "4"]
    assert [c.patient for c in ds.training] == ["P1", "P1", "P2", "P2"]
    assert [c.attrs["tumour_type"] for c in ds.training] == ["glioma", "pituitary", "meningioma", "glioma"]
    assert ds.folds is None
    import h5py

    with h5py.File(root / "1.mat") as fh:  # stored transposed, as MATLAB does
        assert fh["cjdata/image"].shape == (8, 6)
    image, label = load_arrays(ds, ds.training[0])
    assert image.shape == label.shape == (1, 6, 8)
    assert image[0, 0, 1] == 2 and label[0, 1, 2] == 1 and label[0, 2, 1] == 0
    np.testing.assert_array_equal(read_mat_field(root / "1.mat", "tumorBorder"), [3, 2, 5, 2, 5, 3])


def test_a_pid_padded_with_nuls_or_spelt_decomposed_is_the_same_patient(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    image, mask = np.ones((6, 6), np.int16), np.eye(6, dtype=bool)
    for name, pid in (("1", "Zoë"), ("2", "Zoë\x00\x00"), ("3", "Zoe\u0308")):  # MATLAB pads with NULs
        write_figshare_mat(root / f"{name}.mat", image, mask, pid=pid)
    assert {c.patient for c in read_dataset(root).training} == {"Zoë"}
    write_figshare_mat(root / "4.mat", image, mask, pid="Zo\x07e")
    with pytest.raises(SegpipeError, match="4.mat.*PID holds control characters"):
        read_dataset(root)


@pytest.mark.parametrize("name", ["9.mat", "9.nii.gz", "9.png"])
def test_a_missing_file_is_named_missing_not_corrupt(tmp_path, name):
    """The read guard words a file that is not there before any reader calls it corrupt."""
    from segpipe.data.guard import check_read

    make_figshare(tmp_path / "f")
    with pytest.raises(SegpipeError, match=rf"{name}: no such file$"):
        check_read(tmp_path / "f" / name)
    if name.endswith(".mat"):
        with pytest.raises(SegpipeError, match=r"9.mat: no such file$"):
            read_mat_field(tmp_path / "f" / "9.mat", "image")


def test_figshare_cvind_folds(tmp_path):
    import h5py

    root = make_figshare(tmp_path / "f")
    with h5py.File(root / "cvind.mat", "w", userblock_size=512) as fh:
        fh["cvind"] = np.array([[1.0, 2.0, 3.0, 1.0]])
    ds = read_dataset(root)
    assert ds.folds == {"1": 1, "2": 2, "3": 3, "4": 1} and len(ds.training) == 4


def test_figshare_monai_reader_contract(tmp_path):
    from monai.transforms import EnsureChannelFirstd, LoadImaged

    root = make_figshare(tmp_path / "f", n=1)
    reader = monai_reader("figshare", "label")
    assert isinstance(reader, FigshareMatReader) and reader.field == "tumorMask"
    assert reader.verify_suffix(str(root / "1.mat")) and not reader.verify_suffix("x.png")
    arr, meta = reader.get_data(reader.read(root / "1.mat"))
    assert arr.shape == (6, 8) and meta["original_channel_dim"] == "no_channel"
    np.testing.assert_array_equal(meta["spatial_shape"], [6, 8])
    np.testing.assert_allclose(meta["affine"], np.diag([250.88 / 8, 250.88 / 8, 1, 1]))  # the set's field of view
    out = EnsureChannelFirstd("l")(LoadImaged("l", reader=reader)({"l": str(root / "1.mat")}))
    assert tuple(out["l"].shape) == (1, 6, 8)


@pytest.mark.parametrize("size, mm", [(512, 0.49), (256, 0.98)])
def test_figshare_slices_of_either_size_span_the_sets_field_of_view(tmp_path, size, mm):
    """The set's 512 x 512 slices have 0.49 mm pixels; its 256 x 256 ones cover the same field."""
    from segpipe.reports.masks import load_mask

    write_figshare_mat(tmp_path / "1.mat", np.zeros((size, size), np.int16), np.eye(size, dtype=bool), pid="p")
    reader = monai_reader("figshare", "image")
    _, meta = reader.get_data(reader.read(tmp_path / "1.mat"))
    np.testing.assert_allclose(np.diag(meta["affine"]), [mm, mm, 1, 1])
    mask, spacing = load_mask(tmp_path / "1.mat")  # evaluate measures distances on the same grid
    assert mask.shape == (size, size) and spacing == pytest.approx((mm, mm))


def test_figshare_errors_name_the_file(tmp_path):
    root = make_figshare(tmp_path / "f", n=2)
    (root / "2.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(SegpipeError, match=r"2.mat: not a MATLAB v7.3"):
        read_dataset(root)
    import h5py

    with h5py.File(root / "2.mat", "w") as fh:
        fh["cjdata/image"] = np.zeros((4, 4), np.int16)
    with pytest.raises(SegpipeError, match=r"2.mat: cjdata.tumorMask is missing"):
        read_dataset(root)
    write_figshare_mat(root / "2.mat", np.zeros((4, 4)), np.zeros((4, 5)), pid="x")
    with pytest.raises(SegpipeError, match=r"2.mat: cjdata.image is \(4, 4\) but cjdata.tumorMask is \(4, 5\)"):
        read_dataset(root)
    write_figshare_mat(root / "2.mat", np.zeros((4, 4)), np.zeros((4, 4)), pid="x", label=7)
    with pytest.raises(SegpipeError, match=r"2.mat: cjdata.label is 7"):
        read_dataset(root)


# ---------------------------------------------------------------- generic folders


def test_generic_same_names_and_sampled_labels(tmp_path):
    ds = read_dataset(make_generic(tmp_path / "g"))
    assert ds.layout == "generic" and [c.case_id for c in ds.training] == ["a", "b"]
    assert ds.labels == {0: "background", 1: "label 1", 2: "label 2"} and ds.modalities == ["channel 0"]
    image, label = load_arrays(ds, ds.training[0])
    assert image.shape == (1, 6, 5, 4) and label.shape == (1, 6, 5, 4)


def test_generic_nnunet_channels_need_explicit_layout_for_imagesTr(tmp_path):
    root = make_generic(tmp_path / "g", nnunet=True, images="imagesTr", labels="labelsTr")
    with pytest.raises(SegpipeError, match="no dataset.json.*layout='generic'"):
        read_dataset(root)
    ds = read_dataset(root, layout="generic", labels={0: "bg", 1: "a", 2: "b"})
    assert [len(c.images) for c in ds.training] == [2, 2] and ds.modalities == ["channel 0", "channel 1"]
    assert [p.name for p in ds.training[0].images] == ["a_0000.nii.gz", "a_0001.nii.gz"]
    image, _ = load_arrays(ds, ds.training[0])
    assert image.shape == (2, 6, 5, 4) and image[1].max() == 2
    (root / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(SegpipeError, match="case 'b' has 1 channel files"):
        read_dataset(root, layout="generic")


def test_generic_nrrd_uses_itk_and_errors(tmp_path):
    import itk

    root = tmp_path / "g"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    itk.imwrite(itk.image_from_array(np.ones((4, 5, 6), np.float32)), str(root / "images" / "c.nrrd"))
    itk.imwrite(itk.image_from_array(np.ones((4, 5, 6), np.uint8)), str(root / "labels" / "c.mha"))
    ds = read_dataset(root)
    assert isinstance(monai_reader("generic", "image", ds.training[0].images[0]), ITKReader)
    image, label = load_arrays(ds, ds.training[0])
    assert image.shape == label.shape == (1, 6, 5, 4) and ds.labels == {0: "background", 1: "label 1"}
    write_nifti(root / "images" / "d.nii.gz", np.zeros((2, 2, 2)))
    with pytest.raises(SegpipeError, match=r"d.nii.gz: no label named 'd'"):
        read_dataset(root)


def test_compressed_nrrd_and_metaimage_pass_the_guard_with_their_values(tmp_path):
    """The read guard inflates compressed data to check it; sound files (ITK's own, a long
    header, `Key: value` MetaImage fields) are read with their values."""
    import itk

    from segpipe.data.guard import check_read

    values = (np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) % 50) + 1
    root = tmp_path / "g"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for name in ("a.nrrd", "b.mha", "c.mhd"):
        itk.imwrite(itk.image_from_array(values), str(root / "images" / name), compression=True)
        itk.imwrite(itk.image_from_array(np.ones((4, 5, 6), np.uint8)), str(root / "labels" / f"{name[0]}.nii.gz"))
    header = (root / "images" / "c.mhd").read_text()
    (root / "images" / "c.mhd").write_text(header.replace(" = ", ": "))
    nrrd = (root / "images" / "a.nrrd").read_bytes()
    first, rest = nrrd.split(b"\n", 1)
    (root / "images" / "a.nrrd").write_bytes(first + b"\n" + b"# a comment line\n" * 6000 + rest)
    assert "CompressedData = True" in header
    ds = read_dataset(root)
    for case in ds.training:
        check_read(case.images[0])
        image, _ = load_arrays(ds, case)
        np.testing.assert_array_equal(image[0], values.transpose(2, 1, 0))


# ---------------------------------------------------------------- DICOM


def test_rle_compressed_series_reads_and_a_malformed_one_is_refused_without_crashing(tmp_path):
    """GDCM dies of a floating-point exception on a malformed RLE stream (no message, exit
    136): the headers check decodes compressed slices with pydicom first. In a subprocess,
    so that a regression fails this test, not the whole run."""
    import subprocess
    import sys

    import pydicom
    from pydicom.uid import RLELossless

    plain = write_dicom_series(tmp_path / "plain" / "s1", n=4, shape=(16, 16))
    packed = write_dicom_series(tmp_path / "rle" / "s1", n=4, shape=(16, 16))
    for path in packed.iterdir():
        ds = pydicom.dcmread(path)
        ds.compress(RLELossless)
        ds.save_as(path)
    (a, _), (b, _) = (load_arrays(ds, ds.test[0]) for ds in (read_dataset(plain.parent), read_dataset(packed.parent)))
    np.testing.assert_array_equal(a, b)
    victim = next(packed.iterdir())
    ds = pydicom.dcmread(victim)
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\0" * 64])  # an RLE header of 0 segments
    ds.save_as(victim)
    done = subprocess.run([sys.executable, "-m", "segpipe", "preprocess", "-i", str(packed.parent), "--verify-only"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert f"{victim}: compressed pixel data (RLE Lossless) cannot be decoded" in done.stderr + done.stdout


def test_dicom_series_folders(tmp_path):
    write_dicom_series(tmp_path / "d" / "s1", n=5)
    write_dicom_series(tmp_path / "d" / "s2", n=3, patient="P2")
    ds = read_dataset(tmp_path / "d")
    assert ds.layout == "dicom" and [c.case_id for c in ds.test] == ["s1", "s2"]
    assert [c.patient for c in ds.test] == ["P1", "P2"] and ds.test[0].attrs["spacing"] == 2.0
    assert ds.test[0].images == [tmp_path / "d" / "s1"] and isinstance(monai_reader("dicom", "image"), ITKReader)
    image, label = load_arrays(ds, ds.test[0])
    assert label is None and image.shape == (1, 6, 8, 5)
    assert [image[0, 0, 0, k] for k in range(5)] == [0, 10, 20, 30, 40]  # sorted by position
    single = read_dataset(tmp_path / "d" / "s2")
    assert [c.case_id for c in single.test] == ["s2"]


def _multi_frame(folder: Path, **extra) -> Path:
    """One file of 4 frames, from a one-slice series."""
    import pydicom

    path = next(write_dicom_series(folder, n=1).iterdir())
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 4
    ds.PixelData = np.arange(4 * 8 * 6, dtype=np.int16).tobytes()
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.save_as(path)
    return path


def test_dicom_multi_frame_needs_its_frame_spacing(tmp_path):
    import pydicom

    _multi_frame(tmp_path / "ok" / "s", SpacingBetweenSlices=2.5)
    ds = read_dataset(tmp_path / "ok")
    image = load_case(ds, ds.test[0], with_label=False)["image"]
    assert tuple(image.shape) == (1, 6, 8, 4) and float(image.pixdim[2]) == 2.5
    legacy = _multi_frame(tmp_path / "legacy" / "s")  # ITK would take 1 mm between its frames
    with pytest.raises(SegpipeError, match=rf"{legacy}: 4 frames without per-frame positions or SpacingBetweenSlices"):
        read_dataset(tmp_path / "legacy")
    stacked = write_dicom_series(tmp_path / "stacked" / "s", n=2)  # two files of 4 frames: ITK made 2 channels
    for path in sorted(stacked.iterdir()):
        ds = pydicom.dcmread(path)
        ds.NumberOfFrames, ds.SpacingBetweenSlices, ds.PixelData = 4, 2.0, np.zeros(4 * 8 * 6, np.int16).tobytes()
        ds.save_as(path)
    with pytest.raises(SegpipeError, match=r"a file of several frames beside 1 other file\(s\) of the series"):
        read_dataset(tmp_path / "stacked")
    for gap, words in (("-2", r"SpacingBetweenSlices -2 is not a positive distance in mm"),
                       (["1", "2"], r"SpacingBetweenSlices '1\\2' is not 1 number\(s\)")):
        shutil.rmtree(tmp_path / "gap", ignore_errors=True)
        _multi_frame(tmp_path / "gap" / "s", SpacingBetweenSlices=gap)
        with pytest.raises(SegpipeError, match=words):
            read_dataset(tmp_path / "gap")
    odd = _multi_frame(tmp_path / "odd" / "s", NumberOfFrames="4.5")
    with pytest.raises(SegpipeError, match=rf"{odd}: NumberOfFrames '4.5' is not a whole number"):
        read_dataset(tmp_path / "odd")


@pytest.mark.parametrize("key, value, written, words", [
    ("PixelSpacing", [1.25, 1.25], b"abcd\\efgh", r"PixelSpacing 'abcd\\efgh' is not 2 number\(s\)"),
    ("ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, 1.0, 0.125], b"1\\0\\0\\0\\1", r"is not 6 number\(s\)"),
    ("ImagePositionPatient", [0.0, 0.0, 7.375], b"0\\0\\zzzzz", r"ImagePositionPatient '0\\0\\zzzzz' is not 3"),
])
def test_dicom_header_numbers_that_are_not_numbers(tmp_path, key, value, written, words):
    """A numeric header field holding text or the wrong count is named in one line (it was an internal error)."""
    import pydicom

    series = write_dicom_series(tmp_path / "d" / "s", n=3)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        setattr(ds, key, value)
        ds.save_as(path)
        stored = "\\".join(str(v) for v in ds[key].value).encode()  # as pydicom wrote it
        raw = path.read_bytes()
        assert stored in raw, stored
        path.write_bytes(raw.replace(stored, written.ljust(len(stored))))
    with pytest.raises(SegpipeError, match=rf"IM\d+: {key} .*{words}" if not words.startswith(key) else words):
        read_dataset(tmp_path / "d")


def test_dicom_missing_slice_and_mixed_series(tmp_path):
    write_dicom_series(tmp_path / "gap" / "s", n=6, skip=(3,))
    with pytest.raises(SegpipeError, match=r"gap/s: gap of 4 mm between slices at 4 mm .* and 8 mm .*expected 2 mm: about 1 missing"):
        read_dataset(tmp_path / "gap")
    write_dicom_series(tmp_path / "mix" / "s", n=3)
    write_dicom_series(tmp_path / "other", n=3)
    for f in (tmp_path / "other").iterdir():
        f.rename(tmp_path / "mix" / "s" / f"X{f.name}")
    with pytest.raises(SegpipeError, match=r"mix/s: holds 2 series"):
        read_dataset(tmp_path / "mix")


def test_a_series_itk_reads_in_part_is_refused_after_the_read(tmp_path):
    """Whatever rule makes ITK (GDCM) split a series, a volume of fewer slices than the folder's
    files is refused: here SeriesNumber, read past the header checks."""
    import pydicom

    from segpipe.data.itk_reading import AnyTypeITKReader

    series = write_dicom_series(tmp_path / "d" / "s", n=4)
    for path in series.iterdir():
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = 1 if ds.InstanceNumber < 3 else 2
        ds.save_as(path)
    with pytest.raises(SegpipeError, match=rf"{series}: ITK read 2 of the series' 4 slices"):
        AnyTypeITKReader().read(str(series))
    whole = write_dicom_series(tmp_path / "whole" / "s", n=4)
    assert tuple(AnyTypeITKReader().read(str(whole)).GetLargestPossibleRegion().GetSize()) == (6, 8, 4)


def test_enhanced_frames_evenly_spaced_read_with_their_spacing(tmp_path):
    from tests.builders import write_enhanced_dicom

    write_enhanced_dicom(tmp_path / "d" / "s" / "f.dcm", [0.0, 2.5, 5.0, 7.5])
    ds = read_dataset(tmp_path / "d")
    image = load_case(ds, ds.test[0], with_label=False)["image"]
    assert tuple(image.shape) == (1, 6, 8, 4) and float(image.pixdim[2]) == 2.5


# ---------------------------------------------------------------- detection, inputs


def test_detection_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegpipeError, match="no dataset layout recognised.*decathlon.*slices.*figshare.*brats.*dicom.*generic"):
        read_dataset(tmp_path / "empty")
    with pytest.raises(SegpipeError, match="layout 'zip' unknown"):
        read_dataset(tmp_path / "empty", layout="zip")
    with pytest.raises(SegpipeError, match="unknown"):
        monai_reader("zip", "image")


def test_discover_inputs_new_kinds(tmp_path):
    brats = make_brats(tmp_path / "b", cases=("C1",))
    slices = make_slices(tmp_path / "s", patients=("BRATS_009",), slices=(1,))
    fig = make_figshare(tmp_path / "f", n=2)
    write_dicom_series(tmp_path / "dcm" / "ser", n=3)
    cases = discover_inputs([brats / "C1", slices / "training_images", fig / "1.mat", tmp_path / "dcm" / "ser"])
    assert [c.case_id for c in cases] == ["C1", "BRATS_009_z1", "1", "ser"]
    by_id = {c.case_id: c for c in cases}
    assert len(by_id["C1"].images) == 4 and by_id["C1"].label is None and by_id["C1"].attrs["layout"] == "brats"
    assert by_id["BRATS_009_z1"].attrs == {"layout": "slices", "spatial_dims": 2}
    assert by_id["1"].attrs["layout"] == "figshare" and by_id["ser"].images == [tmp_path / "dcm" / "ser"]
    assert [c.case_id for c in discover_inputs([fig])] == ["1", "2"]
    assert [c.case_id for c in discover_inputs([tmp_path / "dcm"])] == ["ser"]
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("x")
    with pytest.raises(SegpipeError, match="nothing: holds no images"):
        discover_inputs([tmp_path / "nothing"])
    with pytest.raises(SegpipeError, match="readme.txt: not an image file"):
        discover_inputs([tmp_path / "nothing" / "readme.txt"])


# ---------------------------------------------------------------- fuzz: only SegpipeError escapes

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_keyed = st.dictionaries(st.sampled_from(["labels", "modality", "training", "test", "name"]), _json, max_size=5)
_entries = st.lists(
    st.dictionaries(st.sampled_from(["image", "label"]), st.sampled_from(["./imagesTr/a.nii.gz", "../x", "", "a\x00b", "/etc/passwd", "._a.nii.gz"]) | _json),
    max_size=3,
)


@FUZZ
@given(meta=st.one_of(_json, _keyed, st.fixed_dictionaries({"labels": _json, "modality": _json, "training": _entries, "test": _json})))
def test_fuzz_dataset_json(meta):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "imagesTr").mkdir()
        write_nifti(root / "imagesTr" / "a.nii.gz", np.zeros((2, 2, 2)))
        (root / "dataset.json").write_text(json.dumps(meta))
        try:
            read_dataset(root)
        except SegpipeError:
            pass


@FUZZ
@given(data=st.binary(max_size=700), with_header=st.booleans())
def test_fuzz_mat_bytes(data, with_header):
    from segpipe.data.figshare import matlab_header

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "1.mat").write_bytes((matlab_header() + b"\x89HDF\r\n\x1a\n" if with_header else b"") + data)
        try:
            ds = read_dataset(root)
            load_arrays(ds, ds.training[0])
        except SegpipeError:
            pass


_array = st.sampled_from([np.int16, np.uint8, np.float64, np.uint16, np.int8]).flatmap(
    lambda dt: st.lists(st.integers(0, 4), min_size=0, max_size=3).map(lambda shape: np.ones(shape, dt))
)


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["image", "tumorMask", "label", "PID", "tumorBorder", "other"]), _array, max_size=6))
def test_fuzz_mat_structure(fields):
    import h5py

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with h5py.File(root / "1.mat", "w", userblock_size=512) as fh:
            group = fh.create_group("cjdata")
            for name, arr in fields.items():
                group.create_dataset(name, data=arr)
        try:
            ds = read_dataset(root)
            load_arrays(ds, ds.training[0])
        except SegpipeError:
            pass


@FUZZ
@given(image=st.binary(max_size=300), label=st.binary(max_size=300), signature=st.booleans())
def test_fuzz_slice_files(image, label, signature):
    prefix = b"\x89PNG\r\n\x1a\n" if signature else b""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, data in (("training_images", image), ("training_labels", label)):
            (root / folder).mkdir()
            (root / folder / "BRATS_001_z1.png").write_bytes(prefix + data)
        try:
            ds = read_dataset(root)
            load_arrays(ds, ds.training[0])
        except SegpipeError:
            pass


def _raw_nrrd(path: Path, array: np.ndarray, kind: str, spacing=(2.0, 1.0, 1.5)) -> Path:
    """A raw NRRD of `array` (x, y, z) stored as `kind` (e.g. int8, int64: types ITK's Python wrapping lacks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    directions = " ".join(f"({','.join(str(s if i == j else 0) for j in range(3))})" for i, s in enumerate(spacing))
    header = (f"NRRD0004\ntype: {kind}\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {' '.join(map(str, array.shape))}\nencoding: raw\nendian: little\n"
              f"space directions: {directions}\nspace origin: (1,2,3)\n\n")
    path.write_bytes(header.encode() + np.asfortranarray(array).astype(np.dtype(kind).newbyteorder("<")).tobytes("F"))
    return path


def test_itk_files_of_every_integer_type_are_read(tmp_path):
    """int8 images and int64 masks (no ITK Python wrapping) are read as their values, everywhere ITK reads."""
    from segpipe.reports.masks import load_mask_grid
    from segpipe.writers.masks import write_itk_like

    rng = np.random.default_rng(0)
    image = rng.integers(-100, 100, (6, 5, 4))
    label = np.zeros((6, 5, 4), np.int64)
    label[1:4, 1:3, 1:3] = 2
    root = tmp_path / "g"
    _raw_nrrd(root / "images" / "c.nrrd", image, "int8")
    _raw_nrrd(root / "labels" / "c.nrrd", label, "int64")
    ds = read_dataset(root)
    loaded_image, loaded_label = load_arrays(ds, ds.training[0])
    np.testing.assert_array_equal(loaded_image[0], image)
    np.testing.assert_array_equal(loaded_label[0] > 0, label > 0)
    mask, spacing, _ = load_mask_grid(root / "labels" / "c.nrrd")
    np.testing.assert_array_equal(mask, label)
    assert spacing == (2.0, 1.0, 1.5)
    write_itk_like(root / "images" / "c.nrrd", label.astype(np.uint8), tmp_path / "out.nrrd")
    written = __import__("itk").imread(str(tmp_path / "out.nrrd"))
    assert tuple(written.GetSpacing()) == (2.0, 1.0, 1.5) and tuple(written.GetOrigin()) == (1.0, 2.0, 3.0)


def test_preprocess_reads_a_label_by_its_own_suffix(tmp_path):
    """A NIfTI image beside a NRRD label: the label gets ITK's reader, not the image's."""
    from segpipe.config import load_config
    from segpipe.pipeline.preprocess import preprocess

    root = tmp_path / "g"
    label = np.zeros((6, 5, 4), np.int64)
    label[1:4, 1:3, 1:3] = 1
    for cid in ("a", "b"):
        write_nifti(root / "images" / f"{cid}.nii.gz", np.random.default_rng(0).random((6, 5, 4)).astype(np.float32),
                    np.eye(4))
    write_nifti(root / "labels" / "a.nii.gz", label.astype(np.uint8), np.eye(4))
    # the same grid in ITK's LPS words: x and y flipped
    header = ("NRRD0004\ntype: int64\ndimension: 3\nspace: left-posterior-superior\nsizes: 6 5 4\nencoding: raw\n"
              "endian: little\nspace directions: (-1,0,0) (0,-1,0) (0,0,1)\nspace origin: (0,0,0)\n\n")
    (root / "labels" / "b.nrrd").write_bytes(header.encode() + label.astype("<i8").tobytes("F"))
    result = preprocess(root, tmp_path / "out", load_config(), quiet=True)
    assert result.cases == 2 and not result.failed

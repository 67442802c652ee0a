"""The integrity report: one generated broken dataset per finding, each naming its file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.data import read_dataset
from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.data.verify import verify_dataset
from tests.builders import AFFINE, label_volume, make_brats, make_figshare, make_slices, write_nifti

LABELS = {0: "background", 1: "edema", 2: "core"}


def clean_dataset(root: Path, cases: int = 3, channels: int = 2) -> Dataset:
    rng = np.random.default_rng(0)
    out = []
    for i in range(cases):
        cid = f"c{i}"
        img = write_nifti(root / "imagesTr" / f"{cid}.nii.gz", rng.random((6, 5, 4, channels)).astype(np.float32))
        lab = write_nifti(root / "labelsTr" / f"{cid}.nii.gz", label_volume())
        out.append(Case(cid, cid, [img], lab))
    return Dataset(root, "t", [f"m{c}" for c in range(channels)], dict(LABELS), out)


def only(report, kind="errors"):
    findings = getattr(report, kind)
    assert len(findings) == 1, report.format()
    return findings[0]


def test_clean_dataset_is_usable(tmp_path):
    report = verify_dataset(clean_dataset(tmp_path))
    assert report.usable and not report.errors and not report.warnings
    assert report.format() == "3 case(s) checked: 0 error(s), 0 warning(s); dataset is usable"


def test_missing_file(tmp_path):
    ds = clean_dataset(tmp_path)
    ds.training[1].label.unlink()
    f = only(verify_dataset(ds))
    assert f.path.name == "c1.nii.gz" and "missing" in f.message


def test_shape_mismatch(tmp_path):
    ds = clean_dataset(tmp_path)
    write_nifti(ds.training[2].label, np.zeros((6, 5, 3), np.uint8))
    report = verify_dataset(ds)
    f = only(report)
    assert f.path == ds.training[2].label and "label shape (6, 5, 3) differs from image shape (6, 5, 4)" in f.message
    assert not report.usable and f"ERROR {ds.training[2].label}: label shape" in report.format()
    assert report.format().splitlines()[-1].endswith("1 error(s), 0 warning(s); dataset is NOT usable")


@pytest.mark.parametrize("affine, words", [(np.diag([1.0, 1.0, 3.0, 1.0]), "spacing"), (AFFINE + np.eye(4)[3] * 0, None)])
def test_spacing_and_affine_mismatch(tmp_path, affine, words):
    ds = clean_dataset(tmp_path)
    if words is None:
        affine = AFFINE.copy()
        affine[:3, 3] = [5.0, 0.0, 0.0]
        words = "affine differs"
    write_nifti(ds.training[0].label, label_volume(), affine)
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].label and words in f.message


def test_tiny_affine_differences_are_tolerated(tmp_path):
    ds = clean_dataset(tmp_path)
    write_nifti(ds.training[0].label, label_volume(), AFFINE * (1 + 1e-5))
    assert verify_dataset(ds).usable


def test_undeclared_label_values(tmp_path):
    ds = clean_dataset(tmp_path)
    write_nifti(ds.training[1].label, label_volume(values=(1, 7)))
    f = only(verify_dataset(ds))
    assert f.path == ds.training[1].label and "label values 7 not declared" in f.message


def test_nan_and_inf_voxels(tmp_path):
    ds = clean_dataset(tmp_path)
    data = np.ones((6, 5, 4, 2), np.float32)
    data[0, 0, 0, 1] = np.nan
    data[1, 0, 0, 1] = np.inf
    write_nifti(ds.training[0].images[0], data)
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].images[0] and "channel 1 has 1 NaN and 1 Inf" in f.message


def test_channel_count_differs_from_modalities_and_between_cases(tmp_path):
    ds = clean_dataset(tmp_path)
    write_nifti(ds.training[2].images[0], np.ones((6, 5, 4, 3), np.float32) * np.arange(3))
    errors = verify_dataset(ds).errors
    assert {f.path for f in errors} == {ds.training[2].images[0]}
    assert any("3 channel(s), the dataset declares 2" in f.message for f in errors)
    assert any("has 3 channel(s) but c0.nii.gz has 2" in f.message for f in errors)


def test_duplicate_case_ids(tmp_path):
    ds = clean_dataset(tmp_path)
    ds.training.append(Case("c0", "c0", ds.training[1].images, ds.training[1].label))
    f = only(verify_dataset(ds))
    assert f.path == ds.training[1].images[0] and "duplicate case id 'c0'" in f.message


def test_empty_label_and_constant_image_are_warnings(tmp_path):
    ds = clean_dataset(tmp_path)
    write_nifti(ds.training[0].label, np.zeros((6, 5, 4), np.uint8))
    write_nifti(ds.training[1].images[0], np.full((6, 5, 4, 2), 3.0, np.float32))
    report = verify_dataset(ds)
    assert report.usable and not report.errors
    assert {(f.path, f.message) for f in report.warnings} == {
        (ds.training[0].label, "label is empty (background only)"),
        (ds.training[1].images[0], "channel 0 is constant (3)"),
        (ds.training[1].images[0], "channel 1 is constant (3)"),
    }


def test_channel_files_with_different_shapes(tmp_path):
    ds = read_dataset(make_brats(tmp_path / "b", cases=("A",)))
    write_nifti(ds.training[0].images[2], np.ones((6, 5, 5), np.int16))
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].images[2] and "channel shape (6, 5, 5) differs" in f.message


def test_brats_labels_checked_after_mapping(tmp_path):
    ds = read_dataset(make_brats(tmp_path / "b"))
    assert verify_dataset(ds).usable  # 1/2/4 on disk map to the declared 1/2/3
    write_nifti(ds.training[0].label, label_volume(values=(1, 3)))
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].label and "label values 3 not in the label mapping" in f.message
    ds = read_dataset(tmp_path / "b", label_set="brats")  # stored as-is: 3 is not a BraTS label
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].label and "label values 3 not declared" in f.message


def test_slices_and_figshare_through_monai(tmp_path):
    ds = read_dataset(make_slices(tmp_path / "s"))
    assert verify_dataset(ds).usable
    bad = np.zeros((5, 7), np.uint8)
    bad[0, 0] = 9
    Image.fromarray(bad).save(ds.training[1].label)
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(ds.training[2].label)
    errors = verify_dataset(ds).errors
    assert [f.path for f in errors] == [ds.training[1].label, ds.training[2].label]
    assert errors[0].message.startswith("label values 9 not declared")
    assert errors[1].message.startswith("label shape (6, 5) differs from image shape (7, 5)")
    fig = read_dataset(make_figshare(tmp_path / "f"))
    assert verify_dataset(fig).usable


def test_unreadable_file_is_an_error_not_a_crash(tmp_path):
    ds = clean_dataset(tmp_path)
    ds.training[0].images[0].write_bytes(b"not gzip at all")
    f = only(verify_dataset(ds))
    assert f.path == ds.training[0].images[0]

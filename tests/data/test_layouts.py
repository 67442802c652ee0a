"""The one table of layouts: detection, reading, help and errors from it; the shared
checks of `build_dataset`; the pairs layout; `infer -i` reading every layout."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import cli
from segpipe.data import detect_layout, read_dataset
from segpipe.data.build import build_dataset
from segpipe.data.case import Case
from segpipe.data.inputs import discover_inputs
from segpipe.data.layouts import LAYOUTS, describe_layouts, layout_named, layout_names
from segpipe.data.loading import load_arrays
from segpipe.errors import SegpipeError
from tests.builders import label_volume, make_brats, make_figshare, make_generic, make_pairs, make_slices, write_dicom_series, write_nifti




def test_every_layout_has_one_entry_and_drives_help_and_errors(tmp_path):
    names = layout_names()
    assert len(set(names)) == len(names) == len(LAYOUTS) and "pairs" in names
    assert all(layout_named(n).name == n for n in names)
    with pytest.raises(SegpipeError, match="layout 'nope' unknown; known layouts: decathlon, slices"):
        layout_named("nope")
    help_text = CliRunner().invoke(cli, ["preprocess", "--help"]).output
    for layout in LAYOUTS:
        assert layout.name in help_text
    (tmp_path / "empty").mkdir()
    with pytest.raises(SegpipeError) as err:
        read_dataset(tmp_path / "empty")
    assert describe_layouts() in str(err.value)


def test_detection_follows_the_table(tmp_path):
    folders = {
        "slices": make_slices(tmp_path / "s"),
        "figshare": make_figshare(tmp_path / "f", n=2),
        "brats": make_brats(tmp_path / "b"),
        "generic": make_generic(tmp_path / "g"),
        "pairs": make_pairs(tmp_path / "p"),
        "dicom": write_dicom_series(tmp_path / "d" / "s1", n=3).parent,
    }
    for name, folder in folders.items():
        assert detect_layout(folder) == name
        assert read_dataset(folder).layout == name
    # a folder of masks, of images only, or of BraTS seg files alone is no pairs folder
    write_nifti(tmp_path / "m" / "x.nii.gz", label_volume())
    write_nifti(tmp_path / "m" / "y_seg.nii.gz", label_volume())
    assert detect_layout(tmp_path / "m") is None


def test_build_dataset_checks_ids_and_orphan_labels(tmp_path):
    a = Case("x", "x", [tmp_path / "i1.nii.gz"], tmp_path / "l1.nii.gz")
    b = Case("x", "x", [tmp_path / "i2.nii.gz"])
    with pytest.raises(SegpipeError, match=r"i2.nii.gz: case id 'x' also used by .*i1.nii.gz"):
        build_dataset(tmp_path, "generic", training=[a], test=[b], labels={0: "background"}, modalities=["c"])
    with pytest.raises(SegpipeError, match=r"l2.nii.gz: label without an image"):
        build_dataset(tmp_path, "generic", training=[a], labels={0: "background"}, modalities=["c"],
                      label_files=[tmp_path / "l1.nii.gz", tmp_path / "l2.nii.gz"])
    ds = build_dataset(tmp_path, "generic", training=[a], labels={1: "t", 0: "background"}, modalities=["c"],
                       label_files=[tmp_path / "l1.nii.gz"])
    assert ds.labels == {0: "background", 1: "t"} and ds.name == tmp_path.name and ds.training == [a]


def test_every_reader_refuses_an_orphan_label(tmp_path):
    slices = make_slices(tmp_path / "s")
    (slices / "training_labels" / "BRATS_001_z10.png").rename(slices / "training_labels" / "BRATS_001_z99.png")
    with pytest.raises(SegpipeError, match="BRATS_001_z10.png: no label"):
        read_dataset(slices)
    slices = make_slices(tmp_path / "s2")
    (slices / "test_images").mkdir()
    (slices / "test_labels").mkdir()
    shutil.copy(slices / "training_labels" / "BRATS_001_z10.png", slices / "test_labels" / "BRATS_001_z10.png")
    with pytest.raises(SegpipeError, match=r"test_labels/BRATS_001_z10.png: label without an image"):
        read_dataset(slices)
    generic = make_generic(tmp_path / "g")
    write_nifti(generic / "labels" / "zz.nii.gz", label_volume())
    with pytest.raises(SegpipeError, match="zz.nii.gz: label without an image"):
        read_dataset(generic)
    pairs = make_pairs(tmp_path / "p")
    write_nifti(pairs / "lonely_mask.nii.gz", label_volume())
    with pytest.raises(SegpipeError, match="lonely_mask.nii.gz: label without an image"):
        read_dataset(pairs)


@pytest.mark.parametrize("label_suffix,image_suffix,ext", [
    ("_label", "_image", ".nrrd"), ("_seg", "", ".nii.gz"), ("_mask", "_image", ".mha"), ("_label", "_image", ".nii"),
])
def test_pairs_layout(tmp_path, label_suffix, image_suffix, ext):
    root = make_pairs(tmp_path / "p", label_suffix=label_suffix, image_suffix=image_suffix, ext=ext)
    ds = read_dataset(root)
    assert ds.layout == "pairs" and ds.spatial_dims == 3
    assert [c.case_id for c in ds.training] == ["a", "b"] and [c.case_id for c in ds.test] == ["u"]
    assert ds.training[0].label.name == f"a{label_suffix}{ext}" and ds.test[0].label is None
    assert ds.labels == {0: "background", 1: "label 1", 2: "label 2"}
    image, label = load_arrays(ds, ds.training[0])
    assert image.shape == label.shape == (1, 6, 5, 4)
    assert np.array_equal(label[0], label_volume((6, 5, 4), (1, 2)))


def test_pairs_errors(tmp_path):
    root = make_pairs(tmp_path / "p", unlabelled=())
    write_nifti(root / "a_seg.nii.gz", label_volume())
    with pytest.raises(SegpipeError, match=r"a_seg.nii.gz: a second label for case 'a' \(also a_label.nii.gz\)"):
        read_dataset(root)
    root = make_pairs(tmp_path / "q", unlabelled=())
    write_nifti(root / "a.nii.gz", np.zeros((6, 5, 4), np.float32))
    with pytest.raises(SegpipeError, match=r"a_image.nii.gz: a second image for case 'a' \(also a.nii.gz\)"):
        read_dataset(root)


def test_pairs_verify_only_and_preprocess_from_the_cli(tmp_path):
    root = make_pairs(tmp_path / "p", cases=("a", "b", "c"), shape=(12, 10, 8))
    runner = CliRunner()
    verify = runner.invoke(cli, ["preprocess", "-i", str(root), "--verify-only", "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["usable"] is True and json.loads(verify.output)["cases"] == 4  # 3 pairs + 1 unlabelled image
    out = runner.invoke(cli, ["preprocess", "-i", str(root), "-o", str(tmp_path / "prep"), "-j", "1", "--json",
                              "--set", "preprocess.folds=3"])
    assert out.exit_code == 0, out.output
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == ["a", "b", "c"]
    assert manifest["cases"]["a"]["label_source"].endswith("a_label.nii.gz")


def test_infer_inputs_read_every_layout(tmp_path, synthetic_dataset):
    brats23 = make_brats(tmp_path / "b23", cases=("BraTS-GLI-00001-000", "BraTS-GLI-00002-000"), naming="2023")
    for f in (brats23 / "BraTS-GLI-00002-000").glob("*-seg.nii.gz"):
        f.unlink()  # a validation case: no seg
    brats21 = make_brats(tmp_path / "b21", cases=("BraTS2021_00001",))
    cohort = discover_inputs([brats23])
    assert [c.case_id for c in cohort] == ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
    assert all(len(c.images) == 4 and c.attrs["layout"] == "brats" and c.label is None for c in cohort)
    assert cohort[0].images[0].name.endswith("-t2f.nii.gz")  # channels in the Decathlon order
    assert [c.case_id for c in discover_inputs([brats21])] == ["BraTS2021_00001"]

    pairs = discover_inputs([make_pairs(tmp_path / "p", ext=".nrrd")])
    assert [(c.case_id, c.images[0].name, c.attrs["layout"]) for c in pairs] == [
        ("a", "a_image.nrrd", "pairs"), ("b", "b_image.nrrd", "pairs"), ("u", "u_image.nrrd", "pairs")]
    assert [c.case_id for c in discover_inputs([synthetic_dataset])] == ["SYN_006", "SYN_007"]  # imagesTs
    assert len(discover_inputs([synthetic_dataset / "imagesTr"])) == 6
    generic = discover_inputs([make_generic(tmp_path / "g")])
    assert [c.case_id for c in generic] == ["a", "b"] and generic[0].attrs["layout"] == "generic"
    slices = make_slices(tmp_path / "s")
    assert len(discover_inputs([slices])) == 4 and discover_inputs([slices])[0].attrs["spatial_dims"] == 2
    fig = discover_inputs([make_figshare(tmp_path / "f", n=3)])
    assert [(c.case_id, c.patient, c.attrs["layout"]) for c in fig] == [("1", "P1", "figshare"), ("2", "P1", "figshare"), ("3", "P2", "figshare")]


def test_decathlon_test_cases_take_their_labelsTs(synthetic_dataset):
    ds = read_dataset(synthetic_dataset)
    assert [c.label.name for c in ds.test] == ["SYN_006.nii.gz", "SYN_007.nii.gz"]
    assert all(c.label.parent.name == "labelsTs" for c in ds.test)
    assert nib.load(str(ds.test[0].label)).shape == nib.load(str(ds.test[0].images[0])).shape[:3]

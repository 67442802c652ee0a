import json
import shutil

import pytest

from segpipe.data import read_dataset
from segpipe.data.inputs import discover_inputs
from segpipe.errors import SegpipeError


@pytest.fixture
def dataset_copy(synthetic_dataset, tmp_path):
    return shutil.copytree(synthetic_dataset, tmp_path / "ds")


def test_reads_cases_labels_and_modalities(synthetic_dataset):
    ds = read_dataset(synthetic_dataset)
    assert len(ds.training) == 6 and len(ds.test) == 2
    assert ds.modalities == ["FLAIR", "T1w", "t1gd", "T2w"]
    assert ds.labels[3] == "enhancing tumour"
    case = ds.training[0]
    assert case.case_id == "SYN_000" and case.patient == "SYN_000"
    assert case.images[0].is_file() and case.label.is_file()


def test_macos_resource_files_are_ignored(dataset_copy):
    (dataset_copy / "imagesTr" / "._SYN_000.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    meta = json.loads((dataset_copy / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/._SYN_000.nii.gz", "label": "./labelsTr/._SYN_000.nii.gz"})
    (dataset_copy / "dataset.json").write_text(json.dumps(meta))
    assert len(read_dataset(dataset_copy).training) == 6
    assert [c.case_id for c in discover_inputs([dataset_copy / "imagesTr"])] == [f"SYN_{i:03d}" for i in range(6)]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: (d / "dataset.json").unlink(), "no dataset.json"),
        (lambda d: (d / "dataset.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "dataset.json").write_text("[1, 2]"), "JSON object"),
        (lambda d: (d / "dataset.json").write_text('{"training": [], "modality": {"0": "T1"}}'), "missing key"),
        (lambda d: (d / "imagesTr" / "SYN_002.nii.gz").unlink(), "SYN_002.nii.gz: listed in dataset.json"),
    ],
)
def test_broken_datasets_fail_clearly(dataset_copy, mutate, message):
    mutate(dataset_copy)
    with pytest.raises(SegpipeError, match=message):
        read_dataset(dataset_copy)


def test_paths_escaping_the_folder_are_refused(dataset_copy, tmp_path):
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"x")
    meta = json.loads((dataset_copy / "dataset.json").read_text())
    meta["training"][0]["image"] = "../secret.nii.gz"
    (dataset_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegpipeError, match="outside the dataset folder"):
        read_dataset(dataset_copy)


def test_duplicate_case_ids_are_refused(dataset_copy):
    meta = json.loads((dataset_copy / "dataset.json").read_text())
    meta["training"].append(meta["training"][0])
    (dataset_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegpipeError, match="duplicate case id 'SYN_000'"):
        read_dataset(dataset_copy)


def test_missing_path_and_file_instead_of_folder(tmp_path):
    with pytest.raises(SegpipeError, match="no such file"):
        read_dataset(tmp_path / "nope")
    f = tmp_path / "f.txt"
    f.write_text("x")
    with pytest.raises(SegpipeError, match="got a file"):
        read_dataset(f)


def test_a_byte_order_mark_is_read_past(dataset_copy):
    """Windows editors write a UTF-8 byte-order mark; json.loads refuses one."""
    path = dataset_copy / "dataset.json"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(read_dataset(dataset_copy).training) == 6


def test_infer_refuses_a_dataset_listing_no_test_images_beside_an_imagesTs_folder(dataset_copy):
    """An empty 'test' list with images in imagesTs/: which to segment is unclear, and the
    training cases would pass for a test run; with imagesTs/ empty, the training cases are taken."""
    meta = json.loads((dataset_copy / "dataset.json").read_text())
    meta["test"] = []
    (dataset_copy / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SegpipeError, match=r"dataset.json: 'test' lists no images, yet imagesTs/ holds 2 \(e.g. SYN_006"):
        discover_inputs([dataset_copy])
    assert len(discover_inputs([dataset_copy / "imagesTs"])) == 2
    for image in (dataset_copy / "imagesTs").iterdir():
        image.unlink()
    assert [c.case_id for c in discover_inputs([dataset_copy])] == [f"SYN_{i:03d}" for i in range(6)]

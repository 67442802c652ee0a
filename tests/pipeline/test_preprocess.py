import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from segpipe.errors import SegpipeError
from segpipe.artifacts.prepared import load_prepared
from segpipe.pipeline.preprocess import preprocess
from tests.conftest import tiny_config


def test_prepared_folder_contents(prepared_dataset, synthetic_dataset):
    prepared = load_prepared(prepared_dataset)
    plan, splits, manifest = prepared.plan, prepared.splits, prepared.manifest
    assert plan["in_channels"] == 4 and plan["out_channels"] == 4
    assert plan["target_spacing"] == [1.0, 1.0, 1.2]  # median of the synthetic headers
    assert len(plan["fingerprint"]["intensity"]) == 4
    assert sum(plan["fingerprint"]["class_frequency"].values()) == pytest.approx(1.0)
    assert len(manifest["cases"]) == 6
    assert {cid for f in splits for cid in f["val"]} == set(manifest["cases"])
    entry = manifest["cases"]["SYN_000"]
    image = np.load(prepared_dataset / entry["image"])
    label = np.load(prepared_dataset / entry["label"])
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert image.shape[0] == 4 and image.shape[1:] == label.shape[1:]
    raw = nib.load(str(synthetic_dataset / "imagesTr" / "SYN_000.nii.gz")).shape
    assert all(c <= r for c, r in zip(image.shape[1:], raw[:3]))  # cropped to the brain
    brain = image[0] != 0
    for channel in image:  # z-scored over the brain
        assert abs(channel[brain].mean()) < 0.05 and abs(channel[brain].std() - 1) < 0.05
    ref = np.asarray(nib.load(str(synthetic_dataset / "labelsTr" / "SYN_000.nii.gz")).dataobj)
    # cropping drops only background: tumour voxel counts are unchanged
    assert np.bincount(label.ravel(), minlength=4)[1:].tolist() == np.bincount(ref.ravel(), minlength=4)[1:].tolist()


def test_rerun_is_incremental(synthetic_dataset, tmp_path):
    data = shutil.copytree(synthetic_dataset, tmp_path / "ds")
    out = tmp_path / "prep"
    first = preprocess(data, out, tiny_config(), quiet=True)
    assert (first.cases, first.reused) == (6, 0)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "cases").iterdir()}
    second = preprocess(data, out, tiny_config(), quiet=True)
    assert (second.cases, second.reused) == (6, 6)
    # change one case's image: only that case is redone
    img = nib.load(str(data / "imagesTr" / "SYN_001.nii.gz"))
    arr = np.asarray(img.dataobj) * 1.5
    nib.save(nib.Nifti1Image(arr, img.affine), str(data / "imagesTr" / "SYN_001.nii.gz"))
    third = preprocess(data, out, tiny_config(), quiet=True)
    assert third.reused == 5
    changed = {n for n, m in mtimes.items() if (out / "cases" / n).stat().st_mtime_ns != m}
    assert changed == {"SYN_001_image.npy", "SYN_001_label.npy"}
    assert not list((out / "cases").glob(".*partial*"))


def test_settings_change_recomputes(synthetic_dataset, tmp_path):
    out = tmp_path / "prep"
    preprocess(synthetic_dataset, out, tiny_config(), quiet=True)
    again = preprocess(synthetic_dataset, out, tiny_config(**{"preprocess.target_spacing": "[2, 2, 2]"}), quiet=True)
    assert again.reused == 0
    assert json.loads((out / "plan.json").read_text())["target_spacing"] == [2.0, 2.0, 2.0]


def test_undeclared_label_values_are_refused(synthetic_dataset, tmp_path):
    data = shutil.copytree(synthetic_dataset, tmp_path / "ds")
    path = data / "labelsTr" / "SYN_003.nii.gz"
    lab = nib.load(str(path))
    arr = np.asarray(lab.dataobj).copy()
    arr[arr == 3] = 7
    nib.save(nib.Nifti1Image(arr, lab.affine), str(path))
    with pytest.raises(SegpipeError, match=r"SYN_003.nii.gz: label values 7 not declared"):
        preprocess(data, tmp_path / "prep", tiny_config(), quiet=True)


def test_load_prepared_errors(tmp_path):
    with pytest.raises(SegpipeError, match="run `segpipe preprocess` first"):
        load_prepared(tmp_path / "nothing")
    (tmp_path / "p").mkdir()
    with pytest.raises(SegpipeError, match="plan.json: missing"):
        load_prepared(tmp_path / "p")


def test_keep_going_leaves_bad_cases_out(synthetic_dataset, tmp_path):
    from click.testing import CliRunner

    from segpipe.cli import cli

    data = shutil.copytree(synthetic_dataset, tmp_path / "ds")
    (data / "imagesTr" / "SYN_004.nii.gz").write_text("truncated")
    img = nib.load(str(data / "labelsTr" / "SYN_001.nii.gz"))
    arr = np.asarray(img.dataobj).copy()
    arr[tuple(np.argwhere(arr == 1)[0])] = 9  # inside the brain, so the crop keeps it
    nib.save(nib.Nifti1Image(arr, img.affine), str(data / "labelsTr" / "SYN_001.nii.gz"))
    strict = CliRunner().invoke(cli, ["preprocess", "-i", str(data), "-o", str(tmp_path / "p1"), "-q", "--workers", "1"])
    assert strict.exit_code == 1 and strict.output.count("\n") == 1
    result = CliRunner().invoke(cli, ["preprocess", "-i", str(data), "-o", str(tmp_path / "p2"), "-q", "--keep-going", "--workers", "1"])
    assert result.exit_code == 1
    assert "skipped 2 case(s)" in result.output and "SYN_004" in result.output and "SYN_001" in result.output
    prepared = load_prepared(tmp_path / "p2")
    splits, manifest = prepared.splits, prepared.manifest
    assert sorted(manifest["cases"]) == ["SYN_000", "SYN_002", "SYN_003", "SYN_005"]
    assert sorted(c for f in splits for c in f["val"]) == sorted(manifest["cases"])
    assert sorted(p.name for p in (tmp_path / "p2" / "cases").iterdir()) == sorted(
        f"{c}_{k}.npy" for c in manifest["cases"] for k in ("image", "label")
    )


@pytest.mark.parametrize("cvind, why", [([1, 2, 2, 3], "they put patient P1's cases in folds [1, 2]"),
                                        ([1, 1, 2, 2], "they give no fold for case 4b")])
def test_the_datasets_own_folds_left_unused_are_named(tmp_path, cvind, why):
    import h5py
    from click.testing import CliRunner

    from segpipe.cli import cli
    from tests.builders import make_figshare

    root = make_figshare(tmp_path / "f")  # 1.mat, 2.mat of patient P1; 3.mat, 4.mat of P2
    with h5py.File(root / "cvind.mat", "w", userblock_size=512) as fh:
        fh["cvind"] = np.array([cvind], dtype=float)
    if "4b" in why:  # a file renamed: cvind.mat's index i is the slice (i + 1).mat
        (root / "4.mat").rename(root / "4b.mat")
    result = CliRunner().invoke(cli, ["preprocess", "-i", str(root), "-o", str(tmp_path / "p"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert f"note: {root}: the dataset's own folds are not used ({why})" in result.output
    summary = json.loads(CliRunner().invoke(cli, ["preprocess", "-i", str(root), "-o", str(tmp_path / "j"), "--json",
                                                  "--workers", "1"]).output)
    assert len(summary["notes"]) == 1 and "patient-grouped folds instead" in summary["notes"][0]

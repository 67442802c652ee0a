"""A corpus of bad inputs, each run through the real CLI.

Every user error must end with ONE line `error: <file or option>: <what is wrong>`, a
non-zero exit status, no traceback, and no partial file in the output folder.

Integrity problems inside a dataset (shape, affine, channels, labels, NaN/Inf, empty or
constant volumes) are what `segpipe preprocess --verify-only` reports: a multi-line report
with one `ERROR <file>: ...` / `WARNING <file>: ...` line per finding, exit 1 when the
dataset is unusable. For each of those the tests also pin what plain `segpipe preprocess`
does: an ERROR finding must make it fail with one line naming the file (it must not cache
a broken case); a WARNING (empty label, constant image) lets it succeed.

Every input is generated in tmp_path. A few cases run as real `python -m segpipe`
processes, so what a user sees on stderr is checked without click's test runner.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tests._corpus import (
    AFFINE, SHAPE, assert_error, assert_no_partials, brain_voxel, clone, edit_json, fill, load, make_dataset,
    no_space, one_line_error, partials, run, run_subprocess, save, tmpfs,
)
from tests.builders import make_brats, make_figshare, make_slices, write_dicom_series, write_nifti



# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("bad") / "Task97")


@pytest.fixture
def ds(base: Path, tmp_path: Path) -> Path:
    """A fresh copy of the clean dataset to break."""
    return clone(base, tmp_path / "ds")


def verify(dataset: Path) -> tuple[int, list[str]]:
    result = run("preprocess", "-i", dataset, "--verify-only", "-q")
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def finding(lines: list[str], kind: str, path: Path, phrase: str) -> str:
    """The report line `<kind> <path>: ...phrase...`."""
    hits = [line for line in lines if line.startswith(f"{kind} {path}:") and phrase in line]
    assert hits, f"no '{kind} {path}: ...{phrase}...' line in:\n" + "\n".join(lines)
    return hits[0]


def preprocess(dataset: Path, out: Path):  # noqa: ANN201 - click Result
    return run("preprocess", "-i", dataset, "-o", out, "-q", "-j", "1", "--set", "preprocess.folds=3")


def assert_refused(dataset: Path, out: Path, *fragments: str) -> str:
    """Plain preprocess fails with one line, leaves no partial file and no plan.json
    (a folder without plan.json is not a prepared dataset, so fit refuses it)."""
    line = assert_error(preprocess(dataset, out), *fragments)
    assert_no_partials(out)
    assert not (out / "plan.json").exists(), "a refused dataset must not look prepared"
    return line


# ---------------------------------------------------------------- unreadable files


def test_truncated_nifti(ds: Path, tmp_path: Path) -> None:
    bad = ds / "imagesTr" / "SYN_001.nii.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, "cannot read")
    assert_refused(ds, tmp_path / "out", str(bad), "ended before the end-of-stream")


def test_text_file_named_nii_gz(ds: Path, tmp_path: Path) -> None:
    bad = ds / "labelsTr" / "SYN_002.nii.gz"
    bad.write_text("this is not an image\n")
    code, lines = verify(ds)
    assert code == 1 and any(str(bad) in line and "not a gzip file" in line for line in lines), lines
    assert_refused(ds, tmp_path / "out", str(bad), "not a gzip file")


def test_truncated_and_text_images_at_infer(tiny_model: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.nii.gz").write_text("hello")
    assert_error(run("infer", "-m", tiny_model, "-i", inputs / "notes.nii.gz", "-o", tmp_path / "o", "-q"),
                 str(inputs / "notes.nii.gz"), "cannot read image")
    assert_no_partials(tmp_path / "o")
    assert not list((tmp_path / "o").glob("*.nii.gz"))


# ---------------------------------------------------------------- integrity: shape, affine, channels


def test_image_label_shape_mismatch(ds: Path, tmp_path: Path) -> None:
    bad = save(ds / "labelsTr" / "SYN_001.nii.gz", np.zeros((16, 16, 10), np.uint8))
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, "label shape (16, 16, 10) differs from image shape (16, 16, 12)")
    assert_refused(ds, tmp_path / "out", str(bad), "shape")


def test_image_label_affine_mismatch(ds: Path, tmp_path: Path) -> None:
    label, _ = load(ds / "labelsTr" / "SYN_000.nii.gz")
    moved = AFFINE.copy()
    moved[:3, 3] += [5.0, 0.0, 0.0]
    bad = save(ds / "labelsTr" / "SYN_000.nii.gz", label, moved)
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, "affine differs")
    assert_refused(ds, tmp_path / "out", str(bad), "affine")


def test_channel_count_differs_between_cases(ds: Path, tmp_path: Path) -> None:
    image, affine = load(ds / "imagesTr" / "SYN_001.nii.gz")
    bad = save(ds / "imagesTr" / "SYN_001.nii.gz", image[..., :3], affine)
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, "has 3 channel(s), the dataset declares 4 modalities")
    finding(lines, "ERROR", bad, "has 3 channel(s) but SYN_000.nii.gz has 4")
    assert_refused(ds, tmp_path / "out", str(bad), "channel")


def test_channel_count_differs_from_the_model_at_infer(tiny_model: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    image, affine = load(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz")
    bad = save(tmp_path / "two.nii.gz", image[..., :2], affine)
    out = tmp_path / "pred"
    assert_error(run("infer", "-m", tiny_model, "-i", bad, "-o", out, "-q"),
                 str(bad), "has 2 channel(s), the model expects 4")
    assert_no_partials(out)
    assert not (out / "two.nii.gz").exists()


def test_a_2d_image_for_a_3d_model_names_the_file(tiny_model: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"  # four channels, as the model wants, but a slice
    Image.fromarray(np.full((24, 24, 4), 200, np.uint8), mode="RGBA").save(flat)
    out = tmp_path / "pred"
    assert_error(run("infer", "-m", tiny_model, "-i", flat, "-o", out, "-q"), str(flat), "a 3D model cannot segment 2D images")
    assert_no_partials(out)


@pytest.mark.parametrize("shape, shift, words", [
    ((6, 5, 5), 0.0, "channel shape (6, 5, 5) differs from BraTS2021_00001_flair.nii.gz (6, 5, 4)"),
    ((6, 5, 4), 3.0, "channel affine differs (origin"),
], ids=["shape", "origin"])
def test_a_brats_modality_on_another_grid_is_named(tmp_path: Path, shape: tuple, shift: float, words: str) -> None:
    """MONAI's concatenation named the first modality, in its own words; now the odd one is named."""
    root = make_brats(tmp_path / "brats")
    odd = root / "BraTS2021_00001" / "BraTS2021_00001_t2.nii.gz"
    affine = nib.load(str(root / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz")).affine.copy()
    affine[0, 3] += shift
    write_nifti(odd, np.ones(shape, np.int16), affine)
    code, lines = verify(root)
    assert code == 1
    finding(lines, "ERROR", odd, words)  # --verify-only in the same words
    assert_error(run("preprocess", "-i", root, "-o", tmp_path / "out", "-q", "-j", "1"), str(odd), words)
    assert not (tmp_path / "out" / "plan.json").exists()


def test_a_nifti_of_five_dimensions_is_refused_in_its_own_words(ds: Path, tiny_model: Path, tmp_path: Path) -> None:
    """(X, Y, Z, 1, 1) read as 'too small to segment', (X, Y, Z, 2, 3) as a shape mismatch with its label."""
    image, affine = load(ds / "imagesTr" / "SYN_001.nii.gz")
    bad = save(ds / "imagesTr" / "SYN_001.nii.gz", image[..., :1, None], affine)
    words = "NIfTI of 5 dimensions"
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, words)
    assert_refused(ds, tmp_path / "out", str(bad), words, "2D or 3D images")
    out = tmp_path / "pred"
    assert_error(run("infer", "-m", tiny_model, "-i", bad, "-o", out, "-q"), str(bad), words)
    assert_no_partials(out)


# ---------------------------------------------------------------- integrity: values


def test_label_values_outside_the_declared_set(ds: Path, tmp_path: Path) -> None:
    label, affine = load(ds / "labelsTr" / "SYN_002.nii.gz")
    label[brain_voxel(label)] = 7
    bad = save(ds / "labelsTr" / "SYN_002.nii.gz", label, affine)
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, "label values 7 not declared (declared: 0, 1, 2, 3)")
    assert_refused(ds, tmp_path / "out", str(bad), "label values 7 not declared")  # the words of --verify-only


@pytest.mark.parametrize("value, words", [(np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")], ids=["nan", "inf"])
def test_nan_and_inf_voxels(ds: Path, tmp_path: Path, value: float, words: str) -> None:
    image, affine = load(ds / "imagesTr" / "SYN_001.nii.gz")
    label, _ = load(ds / "labelsTr" / "SYN_001.nii.gz")
    image[(*brain_voxel(label), 2)] = value
    bad = save(ds / "imagesTr" / "SYN_001.nii.gz", image, affine)
    code, lines = verify(ds)
    assert code == 1
    finding(lines, "ERROR", bad, f"channel 2 has {words} voxel(s)")
    assert_refused(ds, tmp_path / "out", str(bad), "NaN" if np.isnan(value) else "Inf")


def test_empty_label_is_a_warning(ds: Path, tmp_path: Path) -> None:
    """Warning: the dataset stays usable and plain preprocess succeeds (a scan without tumour is valid)."""
    bad = save(ds / "labelsTr" / "SYN_000.nii.gz", np.zeros(SHAPE, np.uint8))
    code, lines = verify(ds)
    assert code == 0
    finding(lines, "WARNING", bad, "label is empty (background only)")
    assert lines[-1].endswith("0 error(s), 1 warning(s); dataset is usable")
    result = preprocess(ds, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert_no_partials(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["cases"]["SYN_000"]["label_counts"].keys() == {"0"}


def test_constant_image_is_a_warning(ds: Path, tmp_path: Path) -> None:
    """Warning: plain preprocess succeeds, and the normalised cache holds no NaN (std 0 must not divide)."""
    bad = save(ds / "imagesTr" / "SYN_002.nii.gz", np.full((*SHAPE, 4), 5.0, np.float32))
    code, lines = verify(ds)
    assert code == 0
    for c in range(4):
        finding(lines, "WARNING", bad, f"channel {c} is constant (5)")
    result = preprocess(ds, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    cached = np.load(tmp_path / "out" / "cases" / "SYN_002_image.npy")
    assert np.isfinite(cached).all()
    assert_no_partials(tmp_path / "out")


# ---------------------------------------------------------------- dataset.json


def test_dataset_json_not_json(ds: Path, tmp_path: Path) -> None:
    (ds / "dataset.json").write_text('{"labels": {"0": "background",}')
    for result in (run("preprocess", "-i", ds, "--verify-only", "-q"), preprocess(ds, tmp_path / "out")):
        assert_error(result, str(ds / "dataset.json"), "not valid JSON", "line 1")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_dataset_json_lacks_keys(ds: Path, tmp_path: Path) -> None:
    edit_json(ds / "dataset.json", lambda m: (m.pop("modality"), m.pop("training")))
    assert_error(preprocess(ds, tmp_path / "out"), str(ds / "dataset.json"), "missing key(s) 'modality', 'training'")
    edit_json(ds / "dataset.json", lambda m: m.update(modality={"0": "x"}, training="imagesTr"))
    assert_error(preprocess(ds, tmp_path / "out"), str(ds / "dataset.json"), "'training' must be a list")


def test_dataset_json_naming_two_labels_alike(ds: Path, tmp_path: Path) -> None:
    """Label names are the reports' columns: two labels under one name would be scored as one."""
    edit_json(ds / "dataset.json", lambda m: m.update(labels={"0": "background", "1": "tumour", "2": "tumour"}))
    words = (str(ds / "dataset.json"), "'labels' names 'tumour' twice (labels 1 and 2)")
    assert_refused(ds, tmp_path / "out", *words)
    assert_error(run("evaluate", "-q", "-p", ds / "labelsTr", "-l", ds, "-o", tmp_path / "report"), *words)
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("escape", ["../../../../etc/passwd", "/etc/passwd", "imagesTr/../../outside.nii.gz", "link"])
def test_dataset_json_path_escaping_the_folder(ds: Path, tmp_path: Path, escape: str) -> None:
    outside = save(tmp_path / "outside.nii.gz", np.zeros(SHAPE, np.float32))
    if escape == "link":  # a symlink inside the folder that points out of it
        (ds / "imagesTr" / "link.nii.gz").symlink_to(outside)
        escape = "./imagesTr/link.nii.gz"
    edit_json(ds / "dataset.json", lambda m: m["training"][1].update(image=escape))
    line = assert_error(preprocess(ds, tmp_path / "out"), str(ds / "dataset.json"), "training[1].image",
                        "points outside the dataset folder")
    assert escape in line
    assert_error(run("preprocess", "-i", ds, "--verify-only", "-q"), "points outside the dataset folder")


def test_duplicate_case_ids(ds: Path, tmp_path: Path) -> None:
    edit_json(ds / "dataset.json", lambda m: m["training"].append(dict(m["training"][0])))
    assert_error(preprocess(ds, tmp_path / "out"), str(ds / "dataset.json"), "duplicate case id 'SYN_000'", "training[3]")
    assert_error(run("preprocess", "-i", ds, "--verify-only", "-q"), "duplicate case id 'SYN_000'")


# ---------------------------------------------------------------- DICOM, MAT, PNG


def test_dicom_series_with_a_missing_slice(tiny_model: Path, tmp_path: Path) -> None:
    """The reader refuses the series at once, so --verify-only too fails with one line."""
    series = write_dicom_series(tmp_path / "dcm" / "s1", n=6, skip=(3,))
    for args in (("preprocess", "-i", tmp_path / "dcm", "--verify-only", "-q"),
                 ("infer", "-m", tiny_model, "-i", series, "-o", tmp_path / "pred", "-q")):
        assert_error(run(*args), str(series), "gap of 4 mm", "about 1 missing slice")
    assert_no_partials(tmp_path / "pred")


def test_dicom_folder_mixing_two_series(tiny_model: Path, tmp_path: Path) -> None:
    series = write_dicom_series(tmp_path / "dcm" / "s1", n=3)
    for f in write_dicom_series(tmp_path / "other", n=3).iterdir():
        f.rename(series / f"X{f.name}")
    for args in (("preprocess", "-i", tmp_path / "dcm", "--verify-only", "-q"),
                 ("infer", "-m", tiny_model, "-i", series, "-o", tmp_path / "pred", "-q")):
        assert_error(run(*args), str(series), "holds 2 series", "put each series in its own folder")


def _without_pixels(ds) -> None:  # noqa: ANN001 - a pydicom Dataset
    del ds.PixelData


def _other_size(ds) -> None:  # noqa: ANN001
    ds.Rows, ds.Columns, ds.PixelData = 6, 8, np.full((6, 8), 7, np.int16).tobytes()


def _other_orientation(ds) -> None:  # noqa: ANN001
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def _zero_spacing(ds) -> None:  # noqa: ANN001
    ds.PixelSpacing = [0.0, 0.0]


@pytest.mark.parametrize("edit, words", [
    (_without_pixels, "slice has no pixel data"),
    (_other_size, "slice of 6 x 8 pixels, the series' IM0001 has 8 x 6"),
    (_other_orientation, "ImageOrientationPatient [0.0, 1.0, 0.0, 1.0, 0.0, 0.0] differs from the series' IM0001"),
    (_zero_spacing, "PixelSpacing [0.0, 0.0] is not two positive sizes in mm"),
], ids=["no-pixels", "other-size", "other-orientation", "zero-spacing"])
def test_a_dicom_slice_unlike_the_series_is_named(tiny_model: Path, tmp_path: Path, edit, words: str) -> None:
    """ITK dropped a slice without pixels or of another size (stretching the volume's slice gap),
    stacked another orientation on the first's and read a zero spacing as 1 mm, all silently."""
    import pydicom

    series = write_dicom_series(tmp_path / "dcm" / "s1", n=5)
    odd = series / "IM0003"
    ds = pydicom.dcmread(odd)
    edit(ds)
    ds.save_as(odd)
    for args in (("preprocess", "-i", tmp_path / "dcm", "--verify-only", "-q"),
                 ("infer", "-m", tiny_model, "-i", series, "-o", tmp_path / "pred", "-q")):
        assert_error(run(*args), str(odd), words)
    assert_no_partials(tmp_path / "pred")


def test_mat_file_without_cjdata(tiny_model: Path, tmp_path: Path) -> None:
    import h5py

    from segpipe.data.figshare import matlab_header

    root = make_figshare(tmp_path / "fig", n=3)
    bad = root / "2.mat"
    with h5py.File(bad, "w", userblock_size=512) as fh:
        fh["something_else"] = np.zeros((4, 4))
    with open(bad, "r+b") as fh:
        fh.write(matlab_header())
    for args in (("preprocess", "-i", root, "-o", tmp_path / "out", "-q", "-j", "1"),
                 ("preprocess", "-i", root, "--verify-only", "-q"),
                 ("infer", "-m", tiny_model, "-i", bad, "-o", tmp_path / "pred", "-q")):
        assert_error(run(*args), str(bad), "no struct 'cjdata'")
    assert_no_partials(tmp_path / "out", tmp_path / "pred")


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_png_of_the_wrong_mode(tmp_path: Path, mode: str) -> None:
    root = make_slices(tmp_path / "sl", patients=("BRATS_001", "BRATS_002", "BRATS_003"), size=(16, 16))
    bad = root / "training_images" / "BRATS_002_z10.png"
    Image.fromarray(np.full((16, 16), 40, np.uint8)).convert(mode).save(bad)
    names = {"RGB": "RGB", "RGBA": "RGBA", "LA": "grayscale+alpha"}
    for args in (("preprocess", "-i", root, "--verify-only", "-q"),
                 ("preprocess", "-i", root, "-o", tmp_path / "out", "-q", "-j", "1")):
        assert_error(run(*args), str(bad), f"PNG in {names[mode]} colour mode", "grayscale")
    assert_no_partials(tmp_path / "out")


def test_png_of_the_wrong_size(tmp_path: Path) -> None:
    root = make_slices(tmp_path / "sl", patients=("BRATS_001", "BRATS_002", "BRATS_003"), size=(16, 16))
    bad = root / "training_labels" / "BRATS_003_z20.png"
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(bad)
    code, lines = verify(root)
    assert code == 1
    finding(lines, "ERROR", bad, "label shape (12, 16) differs from image shape (16, 16)")
    assert_refused(root, tmp_path / "out", str(bad), "shape")


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("text, words", [
    ("train:\n  epochz: 3\n", ["unknown config key 'train.epochz'", "known: epochs"]),
    ("train:\n  epochs: many\n", ["config key 'train.epochs'", "expected int, got 'many'"]),
    ("modle:\n  filters: 4\n", ["unknown config section 'modle'"]),
    ("train:\n  patch_size: [16, x]\n", ["config key 'train.patch_size'", "got [16, 'x']"]),
    ("train: [1, 2\n", ["not valid YAML at line 2"]),
], ids=["unknown-key", "wrong-type", "unknown-section", "wrong-item-type", "not-yaml"])
def test_config_file_errors_name_the_file_and_key(base: Path, tmp_path: Path, text: str, words: list[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert_error(run("preprocess", "-i", base, "-o", tmp_path / "out", "-q", "--config", config), str(config), *words)
    assert not (tmp_path / "out").exists()


def test_config_override_errors_name_the_option(base: Path, tmp_path: Path) -> None:
    assert_error(run("preprocess", "-i", base, "-o", tmp_path / "out", "--set", "train.epochs=1.5"),
                 "train.epochs", "expected int, got 1.5")
    assert_error(run("preprocess", "-i", base, "-o", tmp_path / "out", "--set", "train.lr"), "section.key=value")
    assert_error(run("infer", "-m", tmp_path, "-i", base, "-o", tmp_path / "out", "--roi-size", "a,b"), "option --roi-size")
    assert not (tmp_path / "out").exists()


def test_keep_largest_of_a_label_the_model_lacks(tiny_model: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    """Background or a label the model does not have would change nothing, silently."""
    out = tmp_path / "out"
    for value in ("9", "0"):
        assert_error(run("infer", "-m", tiny_model, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q",
                         "--keep-largest", value),
                     f"option infer.keep_largest: {value} is not a foreground label of {tiny_model} (labels 1, 2, 3)")
    for value in ("a", "x", ","):  # "x" separates 96x96x96, and alone it held no label: an empty list, silently
        assert_error(run("infer", "-m", tiny_model, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q",
                         "--keep-largest", value), f"option --keep-largest: expected integers like 1,3, got '{value}'")
    assert not out.exists()


@pytest.mark.parametrize("config", [[], ["--config", "demo"]])
def test_a_value_out_of_range_from_set_is_blamed_on_the_option_not_the_file(base: Path, tmp_path: Path, config) -> None:
    line = assert_error(run("preprocess", "-i", base, "-o", tmp_path / "out", *config, "--set", "train.lr=0.01",
                            "--set", "train.batch_size=0"),
                        "option --set train.batch_size=0: config key 'train.batch_size' must be >= 1, got 0")
    assert "demo.yaml" not in line and "train.lr" not in line
    assert not (tmp_path / "out").exists()


def _alias_bomb(levels: int) -> str:
    """YAML whose aliases nest 10**levels strings under train.epochs in a few hundred bytes."""
    text = "train:\n  epochs:\n    - &x0 [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, levels):
        text += f"    - &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]\n"
    return text


def test_config_values_nested_past_reason_get_one_short_line(base: Path, tmp_path: Path) -> None:
    """A config file or --set nested past Python's recursion limit, and aliases that expand to a
    million strings: one line each, no internal error, no page-long echo of the value."""
    deep, bomb = tmp_path / "deep.yaml", tmp_path / "bomb.yaml"
    deep.write_text("train:\n  epochs: " + "[" * 20000 + "]" * 20000 + "\n")
    bomb.write_text(_alias_bomb(6))
    out = tmp_path / "out"
    assert_error(run("preprocess", "-i", base, "-o", out, "-q", "--config", deep), str(deep), "YAML nested too deeply")
    assert_error(run("preprocess", "-i", base, "-o", out, "-q", "--set", "train.epochs=" + "[" * 5000 + "]" * 5000),
                 "override 'train.epochs=[[[", "YAML nested too deeply")
    line = assert_error(run("preprocess", "-i", base, "-o", out, "-q", "--config", bomb), str(bomb),
                        "config key 'train.epochs': expected int, got [['x', 'x', 'x', 'x', ...], [[...], [...], [...], [...], ...], ")
    assert len(line) < len(str(bomb)) + 200, line
    assert not out.exists()


def test_a_prepared_plan_nested_past_reason_is_named(prepared_dataset: Path, tmp_path: Path) -> None:
    prepared = tmp_path / "prepared"
    shutil.copytree(prepared_dataset, prepared)
    (prepared / "plan.json").write_text("[" * 100000 + "]" * 100000)
    assert_error(run("fit", "-d", prepared, "-o", tmp_path / "model", "-q", "--epochs", "1"),
                 str(prepared / "plan.json"), "JSON nested too deeply")
    assert not (tmp_path / "model").exists()


# ---------------------------------------------------------------- checkpoints


class _Payload:
    """Unpickling this runs code: it creates the file named in `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


@pytest.fixture
def model_copy(tiny_model: Path, tmp_path: Path) -> Path:

    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_checkpoint_pickle_carrying_code_is_refused(model_copy: Path, synthetic_dataset: Path, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "code-ran"
    best = model_copy / "checkpoints" / "best.pt"
    if how == "torch.save":
        torch.save({"format": "segpipe-checkpoint/1", "model": _Payload(marker)}, best)
    else:
        with open(best, "wb") as fh:
            pickle.dump(_Payload(marker), fh)
    out = tmp_path / "pred"
    line = assert_error(run("infer", "-m", model_copy, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q"),
                        str(best), "refused to load", "holds more than weights")
    assert "weights_only` set to `False`" not in line  # never advise the unsafe way out
    assert not marker.exists(), "the checkpoint's code ran"
    assert_no_partials(out)
    assert not list(out.glob("*.nii.gz")) if out.exists() else True


def test_truncated_checkpoint(model_copy: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    best = model_copy / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:1000])
    assert_error(run("infer", "-m", model_copy, "-i", synthetic_dataset / "imagesTs", "-o", tmp_path / "p", "-q"),
                 str(best), "not a readable checkpoint")


@pytest.mark.parametrize("key, value, words", [
    ("name", "linknet", "another architecture (name: checkpoint 'unet', model folder 'linknet')"),
    ("out_channels", 3, "another architecture (out_channels: checkpoint 4, model folder 3)"),
])
def test_checkpoint_of_another_architecture(model_copy: Path, synthetic_dataset: Path, tmp_path: Path, key: str,
                                            value: object, words: str) -> None:
    edit_json(model_copy / "network.json", lambda n: n.update({key: value}))
    out = tmp_path / "pred"
    assert_error(run("infer", "-m", model_copy, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q"),
                 str(model_copy / "checkpoints" / "best.pt"), words)
    assert_no_partials(out)


def test_checkpoint_of_another_label_set(model_copy: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    edit_json(model_copy / "plan.json", lambda p: p["labels"].update({"3": "necrosis"}))
    assert_error(run("infer", "-m", model_copy, "-i", synthetic_dataset / "imagesTs", "-o", tmp_path / "p", "-q"),
                 "checkpoint was made for another label set", "necrosis")


# ---------------------------------------------------------------- unwritable output, full disk


def test_a_file_where_a_folder_is_wanted(tiny_model: Path, prepared_dataset: Path, synthetic_dataset: Path,
                                         tmp_path: Path) -> None:
    """Each verb's folder input, given a file, is named as a file (not as missing); nothing is written."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = tmp_path / "out"
    for args, what in ((("fit", "-d", a_file, "-o", out, "-q", "--epochs", "1"), "prepared-dataset folder"),
                       (("infer", "-m", a_file, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q"), "model folder"),
                       (("evaluate", "-p", a_file, "-l", synthetic_dataset, "-o", out, "-q"), "predictions folder"),
                       (("report", a_file), "model or reports folder")):
        assert_error(run(*args), f"{a_file}: a file, not a {what}")
        assert not out.exists()
    assert a_file.read_text() == "x"


def test_output_folder_under_a_regular_file(base: Path, tiny_model: Path, prepared_dataset: Path,
                                            synthetic_dataset: Path, tmp_path: Path) -> None:
    """Works as root too: no one can create a folder inside a regular file (ENOTDIR)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    target = blocker / "sub"
    for args in (("preprocess", "-i", base, "-o", target, "-q"),
                 ("fit", "-d", prepared_dataset, "-o", target, "-q", "--epochs", "1"),
                 ("infer", "-m", tiny_model, "-i", synthetic_dataset / "imagesTs", "-o", target, "-q"),
                 ("evaluate", "-p", synthetic_dataset / "labelsTs", "-l", synthetic_dataset / "labelsTs", "-o", target, "-q")):
        assert_error(run(*args), str(blocker), "Not a directory")
    assert blocker.read_text() == "x"


def test_read_only_output_folder(tiny_model: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    """Root ignores permission bits, so as root the folder is a read-only tmpfs mount;
    other users get chmod 0o500. Skipped only when neither can make a folder unwritable."""
    folder = tmp_path / "ro"
    with tmpfs(folder, read_only=True) if os.geteuid() == 0 else _chmod(folder) as ro:
        if ro is None:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
        out = folder / "pred"
        folder_or_out = str(folder)
        line = assert_error(run("infer", "-m", tiny_model, "-i", synthetic_dataset / "imagesTs", "-o", out, "-q"),
                            folder_or_out)
        assert "Read-only file system" in line or "Permission denied" in line, line
        assert not out.exists()


class _chmod:  # noqa: N801 - a context manager used like tmpfs()
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o500)
        return self.folder

    def __exit__(self, *exc: object) -> None:
        self.folder.chmod(0o700)


def _infer_twice_second_on_a_full_disk(tiny_model: Path, inputs: Path, out: Path, fill_disk) -> None:  # noqa: ANN001
    first = run("infer", "-m", tiny_model, "-i", inputs, "-o", out, "-q")
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".gz"}
    assert len(before) == 2
    fill_disk()
    target = out / sorted(before)[0]
    line = assert_error(run("infer", "-m", tiny_model, "-i", inputs, "-o", out, "-q", "--overwrite"),
                        str(target), "cannot write", "No space left on device")
    assert ".partial" not in line  # the user's file is named, not the temporary
    assert_no_partials(out)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.suffix == ".gz"}
    assert after == before, "an existing older output was touched"


def test_full_disk_real_tmpfs(tiny_model: Path, synthetic_dataset: Path, tmp_path: Path) -> None:
    """A 256 KiB tmpfs, filled up after a first run: the overwrite fails with one line and
    the older masks stay as they were. Needs root with mount permission (else skipped;
    the simulated test below always runs)."""
    with tmpfs(tmp_path / "small", size="256k") as mnt:
        if mnt is None:
            pytest.skip("no permission to mount a tmpfs; test_full_disk_simulated covers ENOSPC")
        _infer_twice_second_on_a_full_disk(tiny_model, synthetic_dataset / "imagesTs", mnt / "pred", lambda: fill(mnt))


def test_full_disk_simulated(tiny_model: Path, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised half-way through writing a mask (the first half reaches the disk)."""
    real_save = nib.save

    def half_then_full(img, filename, *args, **kwargs):  # noqa: ANN001, ANN202
        real_save(img, filename, *args, **kwargs)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        no_space()

    def fill_disk() -> None:
        monkeypatch.setattr(nib, "save", half_then_full)

    _infer_twice_second_on_a_full_disk(tiny_model, synthetic_dataset / "imagesTs", tmp_path / "pred", fill_disk)


def test_full_disk_while_preprocessing(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy.save hitting ENOSPC: one line naming the cache file, no temporary left."""
    import segpipe.pipeline.preprocess as pre

    monkeypatch.setattr(pre.np, "save", lambda *a, **k: no_space())
    out = tmp_path / "out"
    assert_error(preprocess(base, out), str(out / "cases"), "_image.npy", "cannot write", "No space left on device")
    assert_no_partials(out)
    assert not (out / "plan.json").exists()


# ---------------------------------------------------------------- as a real process (stderr, exit status)


def test_real_process_one_line_on_stderr(tiny_model: Path, tmp_path: Path) -> None:
    """`python -m segpipe`: stdout empty, one line on stderr (no warnings, no traceback);
    `--debug` shows the traceback."""
    marker = tmp_path / "code-ran"

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    with open(model / "checkpoints" / "best.pt", "wb") as fh:
        pickle.dump(_Payload(marker), fh)  # protocol 4: torch warns about it, the warning must not show
    image = tmp_path / "x.nii.gz"
    save(image, np.zeros((*SHAPE, 4), np.float32))
    done = run_subprocess("infer", "-m", model, "-i", image, "-o", tmp_path / "pred", "-q")
    assert done.stdout == ""
    one_line_error(done.stderr, done.returncode, str(model / "checkpoints" / "best.pt"), "refused to load")
    assert not marker.exists()
    debug = run_subprocess("--debug", "infer", "-m", model, "-i", image, "-o", tmp_path / "pred", "-q")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "SegpipeError" in debug.stderr
    assert not partials(tmp_path / "pred")


# ---------------------------------------------------------------- fuzz coverage of the readers


def test_readers_have_property_based_fuzz_tests() -> None:
    """dataset.json, MAT-file and slice readers are fuzzed with hypothesis in tests/data/test_readers.py."""
    import tests.data.test_readers as readers

    for name in ("test_fuzz_dataset_json", "test_fuzz_mat_bytes", "test_fuzz_mat_structure", "test_fuzz_slice_files"):
        assert hasattr(getattr(readers, name), "hypothesis"), name

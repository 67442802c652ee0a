"""The seed projects' own workflows, replayed end to end on ../shared/data with tiny
budgets: seed 000 (2D slices with its own test split), seed 004 (figshare MAT-files with
cvind.mat folds) and a BraTS cohort (one labelled case, one 2023-style case without seg).
Every step runs through the CLI, as a user would type it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from click.testing import CliRunner

from segpipe.cli import cli
from tests.conftest import shared_data

TINY_2D = ["--set", "model.filters=4", "--set", "model.depth=2", "--set", "train.epochs=1",
           "--set", "train.iterations_per_epoch=2", "--set", "train.batch_size=2", "--set", "train.val_every=1",
           "--set", "train.augment=[]", "--set", "train.precision=fp32", "--set", "train.patch_size=[48,48]"]


def run(*args: object) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, f"segpipe {' '.join(map(str, args))}\n{result.output}"
    return result.output


def carve_seed000(source: Path, root: Path, train_patients: int = 4, test_patients: int = 2) -> list[str]:
    """Copy a few patients of BrainTumour_2D into the seed 000 layout, split by patient;
    returns the test patients."""
    patients = sorted({p.name.rsplit("_z", 1)[0] for p in (source / "training_images").glob("BRATS_*.png")})
    chosen = patients[: train_patients + test_patients]
    for i, patient in enumerate(chosen):
        split = "training" if i < train_patients else "test"
        for kind in ("images", "labels"):
            folder = root / f"{split}_{kind}"
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((source / f"training_{kind}").glob(f"{patient}_z*.png")):
                shutil.copyfile(path, folder / path.name)
    return chosen[train_patients:]


def test_seed000_slices_with_test_split(tmp_path):
    root = tmp_path / "seed000"
    test_patients = carve_seed000(shared_data("BrainTumour_2D"), root)
    run("preprocess", "-i", root, "-o", tmp_path / "prep", "--config", "msd_2d", "-j", "1", "-q",
        "--set", "preprocess.folds=2")
    run("fit", "-d", tmp_path / "prep", "-o", tmp_path / "model", "--config", "msd_2d", "--fold", "0", "-q", *TINY_2D)
    run("infer", "-m", tmp_path / "model", "-i", root / "test_images", "-o", tmp_path / "pred", "--precision", "fp32", "-q")
    assert sorted(p.name for p in (tmp_path / "pred").glob("*.png")) == sorted(p.name for p in (root / "test_labels").iterdir())

    by_labels = run("evaluate", "-p", tmp_path / "pred", "-l", root / "test_labels", "-o", tmp_path / "e_labels",
                    "--model", tmp_path / "model")
    by_dataset = run("evaluate", "-p", tmp_path / "pred", "-l", root, "-o", tmp_path / "e_dataset", "--model", tmp_path / "model")
    assert "in the test split" in by_dataset and f"the slices dataset {root}" in by_dataset
    assert f"the masks in {root / 'test_labels'}" in by_labels
    labels_csv = (tmp_path / "e_labels" / "per_patient.csv").read_text()
    assert labels_csv == (tmp_path / "e_dataset" / "per_patient.csv").read_text()
    per_patient = pd.read_csv(tmp_path / "e_labels" / "per_patient.csv")
    assert sorted(per_patient["patient"]) == test_patients  # pooled: one row per patient, not per slice
    assert (per_patient["slices_or_volumes"] == 6).all()
    assert {"dice_edema", "dice_enhancing_tumour", "dice_whole_tumour"} <= set(per_patient.columns)
    summary = json.loads((tmp_path / "e_dataset" / "summary.json").read_text())
    assert summary["references"]["matched_splits"] == {"test": 12} and summary["missing_predictions"] == []

    # the dataset folder itself as infer's input segments its test split
    run("infer", "-m", tmp_path / "model", "-i", root, "-o", tmp_path / "pred_ds", "--precision", "fp32", "-q")
    assert sorted(p.name for p in (tmp_path / "pred_ds").glob("*.png")) == sorted(p.name for p in (tmp_path / "pred").glob("*.png"))


def write_cvind(path: Path, folds: list[int]) -> Path:
    from scipy.io import savemat

    savemat(path, {"cvind": np.asarray(folds, np.float64).reshape(-1, 1)})
    return path


def test_seed004_figshare_with_cvind_folds(tmp_path):
    from segpipe.data.figshare import read_mat_header

    source = shared_data("figshare_format_lgg")
    root = tmp_path / "figshare"
    root.mkdir()
    files = sorted((p for p in source.glob("*.mat") if p.stem.isdigit() and int(p.stem) <= 48), key=lambda p: int(p.stem))
    pids = {int(p.stem): read_mat_header(p)["pid"] for p in files}
    patients = sorted(set(pids.values()))
    assert len(patients) >= 3
    for path in files:
        shutil.copyfile(path, root / path.name)
    fold_of = {p: 1 + i % 3 for i, p in enumerate(patients)}
    write_cvind(root / "cvind.mat", [fold_of.get(pids.get(i, ""), 1) for i in range(1, max(pids) + 1)])

    run("preprocess", "-i", root, "-o", tmp_path / "prep", "--config", "figshare_2d", "-j", "1", "-q")
    splits = json.loads((tmp_path / "prep" / "splits.json").read_text())
    assert [sorted(s["val"], key=int) for s in splits] == [
        [str(i) for i in sorted(pids) if fold_of[pids[i]] == k] for k in (1, 2, 3)]  # cvind.mat's folds
    run("fit", "-d", tmp_path / "prep", "-o", tmp_path / "model", "--config", "figshare_2d", "--fold", "0", "-q", *TINY_2D)
    run("infer", "-m", tmp_path / "model", "-i", root, "-o", tmp_path / "pred", "--precision", "fp32", "-q")
    assert len(list((tmp_path / "pred").glob("*.png"))) == len(files)
    out = run("evaluate", "-p", tmp_path / "pred", "-l", root, "-o", tmp_path / "eval", "--model", tmp_path / "model")
    assert "figshare dataset" in out and "in the training split" in out
    per_patient = pd.read_csv(tmp_path / "eval" / "per_patient.csv")
    assert sorted(per_patient["patient"]) == patients  # per patient (PID), slices pooled
    counts = pd.Series(list(pids.values())).value_counts()
    assert all(per_patient.set_index("patient")["slices_or_volumes"][p] == counts[p] for p in patients)
    assert "dice_tumour" in per_patient.columns


def _upsampled_twice(source: Path, target: Path) -> None:
    """A figshare slice as the set's 512 x 512 slices hold it: twice the pixels, same field of view."""
    from segpipe.data.mat_file import read_mat_field, read_mat_header, write_figshare_mat

    image, mask = (read_mat_field(source, field).repeat(2, axis=0).repeat(2, axis=1) for field in ("image", "tumorMask"))
    header = read_mat_header(source)
    write_figshare_mat(target, image, mask, label=header["tumour_label"], pid=header["pid"])


def test_figshare_512_and_256_slices_are_segmented_on_one_grid(tmp_path):
    """The set mixes 512 x 512 and 256 x 256 slices of one field of view: figshare_2d resamples
    both to one grid, so the network sees a 512 slice as it sees the same slice at 256."""
    source = shared_data("figshare_format_lgg")
    root, wide = tmp_path / "figshare", tmp_path / "wide"
    root.mkdir()
    wide.mkdir()
    files = sorted((p for p in source.glob("*.mat") if p.stem.isdigit()), key=lambda p: int(p.stem))[:12]
    for path in files:
        shutil.copyfile(path, root / path.name)
    _upsampled_twice(files[0], wide / files[0].name)
    run("preprocess", "-i", root, "-o", tmp_path / "prep", "--config", "figshare_2d", "-j", "1", "-q", "--set", "preprocess.folds=2")
    run("fit", "-d", tmp_path / "prep", "-o", tmp_path / "model", "--config", "figshare_2d", "--fold", "0", "-q", *TINY_2D,
        "--set", "train.iterations_per_epoch=40")
    for folder, name in ((root, "p256"), (wide, "p512")):
        run("infer", "-m", tmp_path / "model", "-i", folder / files[0].name, "-o", tmp_path / name, "--precision", "fp32",
            "--probabilities", "-q")
    p256 = np.load(tmp_path / "p256" / f"{files[0].stem}_probabilities.npy")
    p512 = np.load(tmp_path / "p512" / f"{files[0].stem}_probabilities.npy")
    assert p256.shape == (256, 256, 2) and p512.shape == (512, 512, 2)  # each in its input's own grid
    pooled = p512.reshape(256, 2, 256, 2, 2).mean(axis=(1, 3))
    agreement = np.corrcoef(pooled[..., 1].ravel(), p256[..., 1].ravel())[0, 1]
    # 0.95 here; 0.70 when the 512 slice was segmented at its own pixel size (the network saw a 2x larger head)
    assert agreement > 0.85, agreement
    assert pd.read_csv(tmp_path / "p512" / "cases.csv")["flag_spacing"].tolist() == [0]  # finer, resampled: not doubtful


def _brats_cohort(source: Path, cohort: Path) -> tuple[Path, np.ndarray]:
    """BraTS2021_00006 cropped around its tumour, renamed to 2023 naming: a labelled case
    (seg relabelled to 2023's 1/2/3) and a validation case without seg."""
    channels = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
    seg = nib.load(str(source / "BraTS2021_00006_seg.nii.gz"))
    centre = [int(np.mean(ax)) for ax in np.nonzero(np.asarray(seg.dataobj))]
    box = tuple(slice(max(c - h, 0), max(c - h, 0) + 2 * h) for c, h in zip(centre, (32, 32, 24)))
    label = None
    for case, with_seg in (("BraTS-GLI-00006-000", True), ("BraTS-GLI-00106-000", False)):
        folder = cohort / case
        folder.mkdir(parents=True)
        for old, new in channels.items():
            nib.save(nib.load(str(source / f"BraTS2021_00006_{old}.nii.gz")).slicer[box], str(folder / f"{case}-{new}.nii.gz"))
        if with_seg:
            cropped = seg.slicer[box]
            data = np.asarray(cropped.dataobj).astype(np.uint8)
            label = np.where(data == 4, 3, data).astype(np.uint8)  # 2023: enhancing is 3
            nib.save(nib.Nifti1Image(label, cropped.affine, cropped.header), str(folder / f"{case}-seg.nii.gz"))
    return cohort, label


def test_brats_cohort_infer_and_evaluate(tmp_path, tiny_model):
    cohort, label = _brats_cohort(shared_data("BraTS2021") / "BraTS2021_00006", tmp_path / "cohort")
    run("infer", "-m", tiny_model, "-i", cohort, "-o", tmp_path / "pred", "--whole-image", "--precision", "fp32", "-q")
    for case in ("BraTS-GLI-00006-000", "BraTS-GLI-00106-000"):
        mask = nib.load(str(tmp_path / "pred" / f"{case}.nii.gz"))
        image = nib.load(str(cohort / case / f"{case}-t2f.nii.gz"))
        assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    out = run("evaluate", "-p", tmp_path / "pred", "-l", cohort, "-o", tmp_path / "eval", "--model", tiny_model)
    assert "brats dataset" in out and "1 in the training split" in out
    per_patient = pd.read_csv(tmp_path / "eval" / "per_patient.csv").set_index("patient")
    assert list(per_patient.index) == ["BraTS-GLI-00006"]
    voxel_ml = float(np.prod(nib.load(str(cohort / "BraTS-GLI-00006-000" / "BraTS-GLI-00006-000-seg.nii.gz")).header.get_zooms()[:3])) / 1000
    assert (label == 2).sum() > 0 and (label == 3).sum() > 0
    # 2023 labels mapped to the model's MSD labels: 2023 edema (2) is MSD edema (1), 2023 enhancing (3) stays 3
    assert per_patient.loc["BraTS-GLI-00006", "vol_ref_ml_edema"] == np.float64(round((label == 2).sum() * voxel_ml, 6))
    assert per_patient.loc["BraTS-GLI-00006", "vol_ref_ml_enhancing_tumour"] == np.float64(round((label == 3).sum() * voxel_ml, 6))
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["references"]["matched_splits"] == {"training": 1} and summary["unmatched_predictions"] == ["BraTS-GLI-00106-000"]

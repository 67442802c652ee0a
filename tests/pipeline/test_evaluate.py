"""segpipe evaluate against independent computations (numpy Dice, MONAI HD95)."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from scipy import ndimage

from segpipe.config import EvaluateConfig
from segpipe.metrics.overlap import OverlapTally, hd95
from segpipe.artifacts.plan import BRATS_REGIONS, MSD_REGIONS, default_regions
from segpipe.errors import SegpipeError
from segpipe.pipeline.evaluate import evaluate
from tests.conftest import shared_data

SPACING = (0.9, 1.1, 2.0)  # anisotropic on purpose
NAMES = {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"}


def _monai_hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    from monai.metrics import HausdorffDistanceMetric

    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    as_t = lambda m: torch.from_numpy(m.astype(np.float32))[None, None]  # noqa: E731
    return float(metric(as_t(pred), as_t(ref), spacing=list(spacing))[0, 0])


def _numpy_dice(p: np.ndarray, r: np.ndarray) -> float:
    return 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def _perturbations(ref: np.ndarray) -> dict[str, np.ndarray]:
    eroded = ref.copy()
    eroded[ndimage.binary_erosion(ref > 0, iterations=2) == 0] = 0
    dropped = ref.copy()
    dropped[dropped == 2] = 1  # non-enhancing tumour predicted as edema
    return {"shift": np.roll(ref, (3, -2, 1), axis=(0, 1, 2)), "erosion": eroded, "dropped_label": dropped}


@pytest.fixture(scope="module")
def real_cases(tmp_path_factory):
    root = shared_data("Task01_BrainTumour_sample")
    ref = np.asarray(nib.load(str(root / "labelsTr" / "BRATS_900.nii.gz")).dataobj).astype(np.uint8)
    box = tuple(slice(max(int(i.min()) - 4, 0), int(i.max()) + 5) for i in np.nonzero(ref))
    ref = ref[box]  # the tumour and a margin: real shapes, quick to score
    base = tmp_path_factory.mktemp("real_eval")
    (base / "refs").mkdir()
    (base / "preds").mkdir()
    affine = np.diag([*SPACING, 1.0])
    cases = {}
    for name, pred in _perturbations(ref).items():
        nib.save(nib.Nifti1Image(ref, affine), str(base / "refs" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), str(base / "preds" / f"{name}.nii.gz"))
        cases[name] = (pred, ref)
    return base, cases


def test_dice_and_hd95_match_independent_computations(real_cases):
    base, cases = real_cases
    result = evaluate(base / "preds", base / "refs", base / "out", label_names=NAMES)
    table = result.per_patient.set_index("patient")
    for name, (pred, ref) in cases.items():
        for k, label in ((1, "edema"), (2, "non-enhancing_tumour"), (3, "enhancing_tumour")):
            p, r = pred == k, ref == k
            expected = _numpy_dice(p, r) if p.any() or r.any() else np.nan
            assert table.loc[name, f"dice_{label}"] == pytest.approx(expected, abs=1e-9, nan_ok=True)
            if p.any() and r.any():
                assert table.loc[name, f"hd95_mm_{label}"] == pytest.approx(_monai_hd95(p, r, SPACING), rel=1e-4)
            else:
                assert np.isnan(table.loc[name, f"hd95_mm_{label}"])
        for region, members in MSD_REGIONS.items():
            p, r = np.isin(pred, members), np.isin(ref, members)
            assert table.loc[name, f"dice_{region}"] == pytest.approx(_numpy_dice(p, r), abs=1e-9)
            assert table.loc[name, f"hd95_mm_{region}"] == pytest.approx(_monai_hd95(p, r, SPACING), rel=1e-4)
        voxel_ml = np.prod(SPACING) / 1000
        assert table.loc[name, "vol_ref_ml_edema"] == pytest.approx((ref == 1).sum() * voxel_ml)
        assert table.loc[name, "vol_pred_ml_edema"] == pytest.approx((pred == 1).sum() * voxel_ml)
        tp = ((pred == 3) & (ref == 3)).sum()
        assert table.loc[name, "sensitivity_enhancing_tumour"] == pytest.approx(tp / (ref == 3).sum())
        assert table.loc[name, "precision_enhancing_tumour"] == pytest.approx(tp / (pred == 3).sum())
    # a dropped label: Dice NaN? no: reference has it, prediction lacks it -> 0, HD95 NaN
    assert table.loc["dropped_label", "dice_non-enhancing_tumour"] == 0.0
    assert np.isnan(table.loc["dropped_label", "hd95_mm_non-enhancing_tumour"])
    assert table.loc["shift", "hd95_mm_whole_tumour"] > 2.0  # a 3-voxel shift is millimetres away


def test_reports_figures_and_conventions(real_cases):
    base, _ = real_cases
    out = base / "out2"
    result = evaluate(base / "preds", base / "refs", out, label_names=NAMES)
    for name in ("per_patient.csv", "per_case.csv", "summary.csv", "summary.json", "report.html",
                 "overlay_best.png", "overlay_median.png", "overlay_worst.png"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "summary.json").read_text())
    assert "both empty" in meta["empty_mask_convention"]["dice"]
    assert meta["regions"] == MSD_REGIONS
    summary = pd.read_csv(out / "summary.csv").set_index("metric")
    col = result.per_patient["dice_edema"]
    # the CSV keeps 6 decimals
    assert summary.loc["dice_edema", "mean"] == pytest.approx(col.mean(), abs=1e-6)
    assert summary.loc["dice_edema", "median"] == pytest.approx(col.median(), abs=1e-6)
    assert summary.loc["dice_edema", "iqr"] == pytest.approx(col.quantile(0.75) - col.quantile(0.25), abs=1e-6)
    assert summary.loc["dice_edema", "n"] == 3
    assert "overlay_worst.png" in (out / "report.html").read_text()


def test_slices_are_pooled_per_patient(tmp_path):
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    refs.mkdir()
    preds.mkdir()
    # patient P1: a big slice predicted perfectly, a tiny slice missed entirely
    big = np.zeros((20, 20), np.uint8)
    big[2:18, 2:18] = 1
    tiny = np.zeros((20, 20), np.uint8)
    tiny[5, 5] = 1
    for name, ref, pred in (("P1_z0", big, big), ("P1_z1", tiny, np.zeros_like(tiny)), ("P2_z0", big, big)):
        Image.fromarray(ref).save(refs / f"{name}.png")
        Image.fromarray(pred).save(preds / f"{name}.png")
    cfg = EvaluateConfig(patient_pattern=r"^(?P<patient>P\d+)_z")
    result = evaluate(preds, refs, tmp_path / "out", cfg)
    per_case = pd.read_csv(tmp_path / "out" / "per_case.csv")
    per_patient = pd.read_csv(tmp_path / "out" / "per_patient.csv").set_index("patient")
    slice_mean = per_case.loc[per_case["patient"] == "P1", "dice_label_1"].mean()
    pooled = 2 * 256 / (256 + 257)
    assert slice_mean == pytest.approx(0.5)
    assert per_patient.loc["P1", "dice_label_1"] == pytest.approx(pooled)
    assert per_patient.loc["P1", "slices_or_volumes"] == 2
    assert abs(pooled - slice_mean) > 0.4
    assert len(result.per_patient) == 2


def test_default_regions_follow_the_label_set():
    assert default_regions([1, 2, 3]) == MSD_REGIONS
    assert default_regions([1, 2, 4]) == BRATS_REGIONS
    assert default_regions([1]) == {}


def test_hd95_conventions_and_pooling():
    a = np.zeros((10, 10), bool)
    a[2:5, 2:5] = True
    assert hd95(a, a, (1.0, 1.0)) == 0.0
    assert np.isnan(hd95(a, np.zeros_like(a), (1.0, 1.0)))
    b = np.roll(a, 3, axis=0)
    assert hd95(a, b, (2.0, 1.0)) == pytest.approx(6.0)  # 3 rows of 2 mm
    tally = OverlapTally()
    tally.add(a, a, (1.0, 1.0))
    tally.add(a, np.zeros_like(a), (1.0, 1.0))
    scores = tally.scores()
    assert scores["dice"] == pytest.approx(2 * 9 / (18 + 9)) and scores["precision"] == pytest.approx(0.5)


def test_figshare_slices_pool_by_pid(tmp_path):
    root = shared_data("figshare_format_lgg")
    from segpipe.data import read_dataset
    from segpipe.data.loading import load_arrays

    ds = read_dataset(root)
    preds = tmp_path / "preds"
    preds.mkdir()
    for case in ds.training[:30]:
        _, label = load_arrays(ds, case)  # (1, rows, cols) as MATLAB shows it
        Image.fromarray(label[0].astype(np.uint8)).save(preds / f"{case.case_id}.png")
    result = evaluate(preds, root, tmp_path / "out")
    patients = {c.patient for c in ds.training[:30]}
    assert set(result.per_patient["patient"]) == patients and len(result.per_case) == 30
    assert "dice_tumour" in result.per_patient.columns
    assert (result.per_patient["dice_tumour"] == 1.0).all()


def _grid_case(tmp_path, pred_affine, flip: bool = False):
    """A reference on an oblique-free 1 x 1 x 2 mm grid and a prediction equal to it, stored with
    `pred_affine` (and its first axis reversed with `flip`)."""
    ref = np.zeros((12, 10, 8), np.uint8)
    ref[2:7, 3:8, 1:5] = 1
    ref[3:5, 4:6, 2:4] = 2
    affine = np.array([[1.0, 0, 0, -20], [0, 1, 0, 5], [0, 0, 2, 30], [0, 0, 0, 1]])
    for d in ("refs", "preds"):
        (tmp_path / d).mkdir()
    nib.save(nib.Nifti1Image(ref, affine), str(tmp_path / "refs" / "a.nii.gz"))
    pred = ref[::-1].copy() if flip else ref
    nib.save(nib.Nifti1Image(pred, pred_affine(affine, ref.shape)), str(tmp_path / "preds" / "a.nii.gz"))
    return ref


def _las(affine, shape):
    out = affine.copy()
    out[:, 0] *= -1
    out[:3, 3] = affine[:3, 3] + affine[:3, 0] * (shape[0] - 1)
    return out


def test_a_prediction_stored_in_another_orientation_is_scored_on_the_reference_s_grid(tmp_path):
    """The same mask stored LAS instead of RAS: evaluate turns it onto the reference's axes (a
    voxel-wise comparison of the stored arrays scored 0.08)."""
    _grid_case(tmp_path, _las, flip=True)
    result = evaluate(tmp_path / "preds", tmp_path / "refs", tmp_path / "out")
    assert result.per_patient["dice_mean"].iloc[0] == pytest.approx(1.0)


@pytest.mark.parametrize("change", ["spacing", "origin"])
def test_a_prediction_on_another_grid_is_refused_naming_it(tmp_path, change):
    def moved(affine, shape):
        out = affine.copy()
        if change == "spacing":
            out[:3, :3] *= 2
        else:
            out[:3, 3] += [8.0, 0, 0]
        return out

    _grid_case(tmp_path, moved)
    with pytest.raises(SegpipeError, match=r"preds/a\.nii\.gz: not on the reference's voxel grid .*refs/a\.nii\.gz.*"
                                           + ("spacing" if change == "spacing" else "origin")):
        evaluate(tmp_path / "preds", tmp_path / "refs", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_nrrd_prediction_on_a_nifti_reference_s_grid_is_accepted(tmp_path):
    """ITK's LPS geometry is compared in nibabel's RAS: the same grid in the two formats agrees."""
    import itk

    ref = _grid_case(tmp_path, lambda a, s: a)
    (tmp_path / "preds" / "a.nii.gz").unlink()
    image = itk.imread(str(tmp_path / "refs" / "a.nii.gz"))
    itk.imwrite(image, str(tmp_path / "preds" / "a.nrrd"))
    result = evaluate(tmp_path / "preds", tmp_path / "refs", tmp_path / "out")
    assert result.per_patient["dice_mean"].iloc[0] == pytest.approx(1.0) and ref.any()


def test_evaluate_does_not_import_torch_or_monai(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, nibabel as nib\n"
        "from segpipe.pipeline.evaluate import evaluate\n"
        f"root = {str(tmp_path)!r}\n"
        "mask = np.zeros((8, 8, 8), np.uint8); mask[2:5, 2:5, 2:5] = 1\n"
        "for side in ('p', 'l'):\n"
        "    import os; os.makedirs(f'{root}/{side}')\n"
        "    nib.save(nib.Nifti1Image(mask, np.eye(4)), f'{root}/{side}/a.nii.gz')\n"
        "evaluate(f'{root}/p', f'{root}/l', f'{root}/r')\n"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules]\n"
        "assert not bad, bad"  # seconds of imports for a verb that reads masks and writes tables
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]

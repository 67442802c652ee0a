"""evaluate --lesion-wise: BraTS 2023 lesion-wise scores and PQ through panoptica, checked
against a direct computation (scipy connected components, Dice per lesion) on real masks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segpipe.config import EvaluateConfig
from segpipe.errors import SegpipeError
from tests.conftest import shared_data

PENALTY = 374.0


# ------------------------------------------------------------- the direct computation


def _hd95(pred: np.ndarray, ref: np.ndarray, spacing) -> float:
    """95th percentile of both directed surface distances pooled (panoptica's HD95)."""
    bp, br = pred ^ ndimage.binary_erosion(pred), ref ^ ndimage.binary_erosion(ref)
    d1 = ndimage.distance_transform_edt(~br, sampling=spacing)[bp]
    d2 = ndimage.distance_transform_edt(~bp, sampling=spacing)[br]
    return float(np.percentile(np.hstack([d1, d2]), 95))


def direct_lesion_scores(pred: np.ndarray, ref: np.ndarray, spacing, dilation: int = 3, min_volume: float = 50.0) -> dict:
    """BraTS 2023 lesion-wise sums and counts, and PQ counts, written out with scipy."""
    full = ndimage.generate_binary_structure(ref.ndim, ref.ndim)
    grow = ndimage.generate_binary_structure(ref.ndim, 2)
    groups, n_groups = ndimage.label(ndimage.binary_dilation(ref, grow, iterations=dilation) if dilation else ref, full)
    pred_cc, n_pred = ndimage.label(pred, full)
    matched, dices, hds, fn = set(), [], [], 0
    for g in range(1, n_groups + 1):
        lesion = ref & (groups == g)
        zone = ndimage.binary_dilation(lesion, grow, iterations=dilation) if dilation else lesion
        hits = set(np.unique(pred_cc[zone]).tolist()) - {0}
        matched |= hits
        if lesion.sum() * np.prod(spacing) <= min_volume:
            continue
        p = np.isin(pred_cc, sorted(hits))
        dices.append(2.0 * (p & lesion).sum() / (p.sum() + lesion.sum()))
        hds.append(_hd95(p, lesion, spacing) if hits else PENALTY)
        fn += not hits
    fp = n_pred - len(matched)
    # panoptic quality: one-to-one pairs at IoU > 0.5
    ref_cc, n_ref = ndimage.label(ref, full)
    ious = []
    for i in range(1, n_ref + 1):
        r = ref_cc == i
        for j in np.unique(pred_cc[r]):
            if j:
                p = pred_cc == j
                iou = (p & r).sum() / (p | r).sum()
                if iou > 0.5:
                    ious.append(iou)
    return {"dice_sum": sum(dices), "hd_sum": sum(hds) + PENALTY * fp, "ref": len(dices), "fn": fn, "fp": fp,
            "pq_tp": len(ious), "pq_fp": n_pred - len(ious), "pq_fn": n_ref - len(ious), "iou_sum": sum(ious)}


def scores_of(d: dict) -> dict:
    """Ratios of pooled direct sums (NaN where nothing is counted)."""
    nan = float("nan")
    n = d["ref"] + d["fp"]
    m = d["pq_tp"] + 0.5 * (d["pq_fp"] + d["pq_fn"])
    rq = d["pq_tp"] / m if m else nan
    sq = d["iou_sum"] / d["pq_tp"] if d["pq_tp"] else nan
    return {"lesion_dice": d["dice_sum"] / n if n else nan, "lesion_hd95_mm": d["hd_sum"] / n if n else nan,
            "lesions_ref": d["ref"], "lesions_fn": d["fn"], "lesions_fp": d["fp"], "rq": rq, "sq": sq,
            "pq": (sq if d["pq_tp"] else 0.0) * rq if m else nan}


def assert_scores(row, name: str, expected: dict) -> None:
    for key, want in expected.items():
        got = float(row[f"{key}_{name}"])
        if np.isnan(want):
            assert np.isnan(got), (key, name, got)
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (key, name, got, want)


# ------------------------------------------------------------- 3D: the BraTS 2021 case


@pytest.fixture(scope="module")
def brats_volumes():
    """A reference with two real lesions (the case's tumour and a copy moved 110 voxels along y)
    and three predictions: one lesion removed, one split in two, a false-positive lesion added."""
    pytest.importorskip("panoptica")
    import nibabel as nib

    case = shared_data("BraTS2021") / "BraTS2021_00006" / "BraTS2021_00006_seg.nii.gz"
    seg = np.asarray(nib.load(str(case)).dataobj).astype(np.uint8)
    seg = seg[:176, 30:226, 40:116]  # the tumour spans x 91-165, y 38-108, z 44-111
    ref = seg.copy()
    ref[:, 110:] = np.maximum(ref[:, 110:], seg[:, :-110])
    removed = seg.copy()
    split = ref.copy()
    split[:, :, 35:38] = 0  # a 3-voxel slab cuts both lesions in two
    split[:, 110:][seg[:, :-110] == 4] = 1  # and the moved copy's enhancing tumour is called core
    added = ref.copy()
    added[:86][seg[90:] == 4] = 4  # the enhancing tumour, moved 90 voxels along x: 16 voxels clear of both
    return ref, {"removed": removed, "split": split, "added": added}


def _write(path: Path, data: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


@pytest.mark.slow
def test_lesion_wise_on_a_real_case_equals_the_direct_computation(brats_volumes, tmp_path):
    from segpipe.artifacts.plan import BRATS_REGIONS
    from segpipe.pipeline.evaluate import evaluate

    ref, preds = brats_volumes
    for name, pred in preds.items():
        _write(tmp_path / "labels" / f"{name}.nii.gz", ref)
        _write(tmp_path / "pred" / f"{name}.nii.gz", pred)
    ecfg = EvaluateConfig(regions=BRATS_REGIONS, lesion_dilation=3, lesion_min_volume=50.0)
    result = evaluate(tmp_path / "pred", tmp_path / "labels", tmp_path / "out", ecfg, lesion_wise=True)
    rows = result.per_patient.set_index("patient")
    for case, pred in preds.items():
        for region, members in BRATS_REGIONS.items():
            direct = direct_lesion_scores(np.isin(pred, members), np.isin(ref, members), (1.0, 1.0, 1.0))
            assert_scores(rows.loc[case], region, scores_of(direct))
    # the rule itself, in numbers anyone can check: two reference lesions throughout
    assert (rows["lesions_ref_whole_tumour"] == 2).all()
    removed, added = rows.loc["removed"], rows.loc["added"]
    assert removed["lesion_dice_whole_tumour"] == pytest.approx(0.5)  # (1 + 0) / 2: the missed lesion scores 0
    assert removed["lesion_hd95_mm_whole_tumour"] == pytest.approx(PENALTY / 2)
    assert (removed["lesions_fn_whole_tumour"], removed["rq_whole_tumour"]) == (1, pytest.approx(1 / 1.5))
    assert added["lesions_fp_enhancing_tumour"] == 1
    assert added["lesion_dice_enhancing_tumour"] == pytest.approx(2 / 3)  # (1 + 1) / (2 + 1)
    split = rows.loc["split"]
    assert split["lesions_fp_whole_tumour"] == 0 and split["lesions_tp_whole_tumour"] == 2  # pieces of a lesion are no FP
    assert 0.9 < split["lesion_dice_whole_tumour"] < 1.0 and split["pq_whole_tumour"] < split["rq_whole_tumour"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["lesion_wise"]["dilation_iterations"] == 3 and "panoptica" in summary["lesion_wise"]["library"]


# ------------------------------------------------------------- 2D: BrainTumour_2D slices, pooled per patient


def test_lesion_wise_on_real_slices_pools_a_patient(tmp_path):
    pytest.importorskip("panoptica")
    from PIL import Image

    from segpipe.artifacts.plan import MSD_REGIONS
    from segpipe.pipeline.evaluate import evaluate

    labels = shared_data("BrainTumour_2D") / "training_labels"
    files = sorted(labels.glob("BRATS_003_z*.png"))
    assert len(files) == 6
    refs = {f.stem: np.asarray(Image.open(f)).astype(np.uint8) for f in files}
    preds = {k: v.copy() for k, v in refs.items()}
    z62 = preds["BRATS_003_z62"]  # seven components: the largest lesion (components grouped by dilation) removed
    groups, _ = ndimage.label(ndimage.binary_dilation(z62 > 0, np.ones((3, 3)), iterations=3), np.ones((3, 3)))
    groups[z62 == 0] = 0
    z62[groups == np.argmax(np.bincount(groups.ravel())[1:]) + 1] = 0
    z93 = preds["BRATS_003_z93"]  # split by a blank row through the tumour
    rows_with_tumour = np.nonzero((z93 > 0).any(axis=1))[0]
    z93[rows_with_tumour[len(rows_with_tumour) // 2]] = 0
    z108 = preds["BRATS_003_z108"]  # an added lesion: the slice's own tumour copied to an empty corner
    ys, xs = np.nonzero(refs["BRATS_003_z108"] > 0)
    box = refs["BRATS_003_z108"][ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    z108[:box.shape[0], :box.shape[1]] = np.maximum(z108[:box.shape[0], :box.shape[1]], box)
    assert not (refs["BRATS_003_z108"][: box.shape[0] + 4, : box.shape[1] + 4] > 0).any()  # clear of the dilated lesions
    for name in refs:
        (tmp_path / "ref").mkdir(exist_ok=True)
        (tmp_path / "pred").mkdir(exist_ok=True)
        Image.fromarray(refs[name]).save(tmp_path / "ref" / f"{name}.png")
        Image.fromarray(preds[name]).save(tmp_path / "pred" / f"{name}.png")
    ecfg = EvaluateConfig(patient_pattern=r"(?P<patient>BRATS_\d+)", lesion_dilation=3, lesion_min_volume=10.0)
    result = evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", ecfg, lesion_wise=True)
    assert list(result.per_patient["patient"]) == ["BRATS_003"]
    cases = result.per_case.set_index("case")
    for region, members in MSD_REGIONS.items():
        pooled: dict[str, float] = {}
        for name in refs:
            direct = direct_lesion_scores(np.isin(preds[name], members), np.isin(refs[name], members), (1.0, 1.0), 3, 10.0)
            assert_scores(cases.loc[name], region, scores_of(direct))
            pooled = {k: pooled.get(k, 0) + v for k, v in direct.items()}
        assert_scores(result.per_patient.iloc[0], region, scores_of(pooled))
    wt = result.per_patient.iloc[0]
    assert wt["lesions_fp_whole_tumour"] >= 1 and wt["lesions_fn_whole_tumour"] >= 1 and wt["lesion_dice_whole_tumour"] < 0.9


# ------------------------------------------------------------- the rule on small arrays


def test_small_reference_lesions_are_left_out_and_no_false_positive():
    pytest.importorskip("panoptica")
    from segpipe.reports.lesions import LesionScorer

    ref = np.zeros((30, 30, 30), bool)
    ref[2:10, 2:10, 2:10] = True  # 512 voxels
    ref[20:23, 20:23, 20:23] = True  # 27 voxels: at most 50, left out
    pred = ref.copy()
    pred[2:10, 2:10, 2:4] = False
    pred[20, 20, 20] = True
    scores = LesionScorer(dilation=3, min_volume=50.0).score(pred, ref, (1.0, 1.0, 1.0)).scores()
    assert (scores["lesions_ref"], scores["lesions_fp"], scores["lesions_fn"]) == (1, 0, 0)
    assert scores["lesion_dice"] == pytest.approx(2 * 384 / (384 + 512))
    empty = LesionScorer().score(np.zeros((4, 4), bool), np.zeros((4, 4), bool), (1.0, 1.0)).scores()
    assert np.isnan(empty["lesion_dice"]) and np.isnan(empty["pq"])
    with pytest.raises(SegpipeError, match="evaluate.lesion_dilation"):
        LesionScorer(dilation=-1)


def test_lesion_wise_without_panoptica_names_the_extra(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from segpipe.cli import cli

    (tmp_path / "p").mkdir()
    monkeypatch.setitem(sys.modules, "panoptica", None)  # import panoptica now raises ImportError
    from segpipe.reports.lesions import require_panoptica

    with pytest.raises(SegpipeError, match=r"segpipe\[lesion\]"):
        require_panoptica()
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(tmp_path / "p"), "-l", str(tmp_path / "p"), "-o", str(tmp_path / "o"),
                                   "--lesion-wise"])
    assert out.exit_code == 1
    assert out.output.strip().splitlines() == ["error: option --lesion-wise: needs panoptica: pip install 'segpipe[lesion]'"]
    assert not (tmp_path / "o").exists()


def test_empty_and_unmatched_masks_equal_the_direct_computation():
    """Zero matches (panoptica's zero-TP edge cases): misses and false positives only."""
    pytest.importorskip("panoptica")
    from segpipe.reports.lesions import LesionScorer

    ref = np.zeros((20, 20, 10), bool)
    ref[2:6, 2:6, 2:6] = True
    ref[14:17, 14:17, 2:5] = True
    far = np.zeros_like(ref)
    far[10:13, 2:5, 6:9] = True
    scorer = LesionScorer(dilation=3, min_volume=5.0)
    cases = {"empty prediction": (np.zeros_like(ref), ref), "empty reference": (far, np.zeros_like(ref)),
             "no match": (far, ref), "no match in 2D": (far[:, :, 7], ref[:, :, 3])}
    for name, (pred, reference) in cases.items():
        spacing = (1.0,) * reference.ndim
        got = scorer.score(pred, reference, spacing).scores()
        want = scores_of(direct_lesion_scores(pred, reference, spacing, 3, 5.0))
        for key, value in want.items():
            assert (np.isnan(got[key]) and np.isnan(value)) or got[key] == pytest.approx(value), (name, key, got[key], value)
        assert got["lesion_dice"] == 0.0 and got["lesion_hd95_mm"] == PENALTY, name

"""Quality control at inference: cases.csv, confidence, out-of-distribution flags, --strict, evaluate's join."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage

from segpipe.cli import cli
from segpipe.qc.confidence import expected_dice, expected_dice_terms
from segpipe.qc.ood import FLAGS, check_case
from segpipe.qc.reference import build_reference, with_reference
from segpipe.transforms.preprocessing import chain_for
from tests.conftest import shared_data

SETTINGS_3D = {"target_spacing": [2.0, 2.0, 2.0], "orientation": "RAS", "crop_foreground": True, "normalize_nonzero": True}
SETTINGS_2D = {"target_spacing": None, "orientation": None, "crop_foreground": True, "normalize_nonzero": True}


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def features_of(path, settings, layout="generic"):
    return chain_for(settings, layout, with_label=False, record_qc=True, path=path)({"image": str(path)})["qc_features"]


def flags_of(path, plan, settings, in_channels, dims, layout="generic"):
    return sorted(f.name for f in check_case(features_of(path, settings, layout), plan, in_channels, dims))


# ---- 3D: the real BraTS case (Decathlon layout, 4 channels), changed in known ways ----------------

@pytest.fixture(scope="module")
def brats_3d(tmp_path_factory):
    """The real case on a 2 mm grid (fast), and a reference made from it alone."""
    root = shared_data("Task01_BrainTumour_sample")
    src = nib.load(str(root / "imagesTr" / "BRATS_900.nii.gz"))
    data = np.asarray(src.dataobj, dtype=np.float32)[::2, ::2, ::2, :]
    affine = src.affine.copy()
    affine[:3, :3] *= 2
    folder = tmp_path_factory.mktemp("brats3d")
    base = folder / "base.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(base))
    plan = {"qc_reference": build_reference([features_of(base, SETTINGS_3D)], [50.0]), "labels": {"0": "background"}}
    return folder, data, affine, plan


def _save(folder, name, data, affine):
    path = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def _check(brats_3d, name, data, affine=None):
    folder, _, base_affine, plan = brats_3d
    path = _save(folder, name, data, base_affine if affine is None else affine)
    return flags_of(path, plan, SETTINGS_3D, 4, 3)


def test_unchanged_real_volume_has_no_flags(brats_3d):
    folder, data, affine, plan = brats_3d
    assert _check(brats_3d, "same", data) == []
    # a linear rescaling (another scanner gain) is invisible after z-scoring: no flag
    assert _check(brats_3d, "linear", data * 3.7) == []


def test_flipped_orientation_is_flagged(brats_3d):
    _, data, _, _ = brats_3d
    # voxels flipped front-back and top-bottom, header unchanged (a wrong header)
    assert "orientation" in _check(brats_3d, "flipped", data[:, ::-1, ::-1, :])


def test_resampled_spacing_is_flagged(brats_3d):
    _, data, affine, _ = brats_3d
    coarse = data[::2, ::2, :, :]
    thick = affine.copy()
    thick[:3, :2] *= 2  # 4 x 4 x 2 mm: same head, other voxel size
    assert _check(brats_3d, "coarse", coarse, thick) == ["spacing"]


def test_finer_spacing_is_flagged_only_where_the_model_does_not_resample(brats_3d):
    folder, data, affine, plan = brats_3d
    half, double = affine.copy(), affine.copy()
    half[:3, :2] /= 2  # 1 x 1 x 2 mm: same head, finer voxels
    double[:3, :2] *= 2  # 4 x 4 x 2 mm
    fine = _save(folder, "fine", data.repeat(2, axis=0).repeat(2, axis=1), half)
    coarse = _save(folder, "coarse_too", data[::2, ::2], double)
    resampling = {**plan, "target_spacing": [2.0, 2.0, 2.0]}
    assert flags_of(fine, plan, SETTINGS_3D, 4, 3) == ["spacing"]  # no target spacing: seen at the wrong scale
    assert flags_of(fine, resampling, SETTINGS_3D, 4, 3) == []
    assert flags_of(coarse, resampling, SETTINGS_3D, 4, 3) == ["spacing"]


def test_partial_coverage_is_flagged_as_shape(brats_3d):
    _, data, _, _ = brats_3d
    part = np.zeros_like(data)
    z = data.shape[2] // 2
    part[:, :, z - 8 : z + 8] = data[:, :, z - 8 : z + 8]  # a 32 mm slab of the brain
    assert "shape" in _check(brats_3d, "slab", part)


def test_wrong_channel_count_is_flagged(brats_3d):
    _, data, _, _ = brats_3d
    assert "channels" in _check(brats_3d, "three", data[..., :3])


def test_non_linear_intensity_change_is_flagged(brats_3d):
    _, data, _, _ = brats_3d
    scaled = data / data.max(axis=(0, 1, 2), keepdims=True)
    assert "intensity" in _check(brats_3d, "gamma", np.where(data > 0, scaled**4 + 1e-3, 0))


def _with_skull(data):
    """The volume padded, with a bright shell 4-12 mm outside the brain beyond a dark gap."""
    brain = (data != 0).any(-1)
    pad = 8
    padded = np.pad(data, [(pad, pad)] * 3 + [(0, 0)])
    distance = ndimage.distance_transform_edt(~np.pad(brain, pad))  # in 2 mm voxels
    shell = (distance > 2) & (distance <= 6)
    rng = np.random.default_rng(0)
    for c in range(data.shape[-1]):
        padded[..., c][shell] = rng.uniform(0.5, 1.0, int(shell.sum())) * np.percentile(data[..., c][brain], 99)
    return padded


def test_skull_like_shell_is_flagged(brats_3d):
    assert "not_skull_stripped" in _check(brats_3d, "head", _with_skull(brats_3d[1]))


def test_a_head_is_not_flagged_by_a_model_trained_on_heads(brats_3d):
    folder, data, affine, _ = brats_3d
    head = features_of(_save(folder, "head_ref", _with_skull(data), affine), SETTINGS_3D)
    trained_on_heads = {"qc_reference": build_reference([head, head], [50.0, 50.0])}
    assert trained_on_heads["qc_reference"]["unstripped_share"] == 1.0
    assert "not_skull_stripped" not in {f.name for f in check_case(head, trained_on_heads, 4, 3)}
    # one head among many skull-stripped training brains does not teach the model heads
    brain = features_of(folder / "base.nii.gz", SETTINGS_3D)
    mostly_stripped = {"qc_reference": build_reference([head] + [brain] * 19, [50.0] * 20)}
    assert "not_skull_stripped" in {f.name for f in check_case(head, mostly_stripped, 4, 3)}


def test_unmasked_background_is_flagged(brats_3d):
    _, data, _, _ = brats_3d
    # the same head as a scanner writes it: no brain mask, scanner noise in the air around it
    rng = np.random.default_rng(0)
    noisy = np.where(data != 0, data, np.abs(rng.normal(0, 0.02, data.shape)) * data.max(axis=(0, 1, 2)) + 1e-3)
    features = features_of(_save(brats_3d[0], "raw", noisy, brats_3d[2]), SETTINGS_3D)
    assert "not_skull_stripped" in {f.name for f in check_case(features, brats_3d[3], 4, 3)}
    # on small noisy heads (dipy's diffusion b0 volumes) the brain-like foreground swallows the noise and
    # nothing lies outside it; that the non-zero voxels fill their whole box still says no mask was applied
    blind = {**features, "outside_share": 0.0, "outside_coverage": 0.0}
    assert any(f.name == "not_skull_stripped" and "background is not zero" in f.message for f in check_case(blind, brats_3d[3], 4, 3))
    masked = {**features_of(brats_3d[0] / "base.nii.gz", SETTINGS_3D), "outside_share": 0.0, "outside_coverage": 0.0}
    assert check_case(masked, brats_3d[3], 4, 3) == []  # the skull-stripped head fills about half its box


# ---- 2D: real BrainTumour_2D slices, reference from other patients ----------------------------

@pytest.fixture(scope="module")
def slices_2d(tmp_path_factory):
    """36 real slices of 6 patients; the reference is built from 5 of them (as fit does)."""
    from segpipe.config import load_config
    from segpipe.artifacts.prepared import load_prepared
    from segpipe.pipeline.preprocess import preprocess

    src = shared_data("BrainTumour_2D")
    names = sorted(p.name for p in (src / "training_images").glob("BRATS_00*.png"))[:36]
    root = tmp_path_factory.mktemp("slices")
    for sub in ("training_images", "training_labels"):
        (root / sub).mkdir()
        for name in names:
            shutil.copy(src / sub / name, root / sub / name)
    prep = tmp_path_factory.mktemp("prep2d")
    preprocess(root, prep, load_config(None, ["preprocess.folds=3"]), quiet=True)
    prepared = load_prepared(prep)
    plan, manifest = prepared.plan, prepared.manifest
    patients = sorted({n.split("_z")[0] for n in names})
    held = [n for n in names if n.startswith(patients[-1])]
    train = [n[:-4] for n in names if n not in held]
    return root, with_reference(plan, manifest, train), held


def test_held_out_real_slices_have_no_flags(slices_2d):
    root, plan, held = slices_2d
    assert "qc_reference" in plan and plan["qc_reference"]["cases"] == 30
    for name in held:
        assert flags_of(root / "training_images" / name, plan, SETTINGS_2D, 1, 2, "slices") == [], name


def test_skull_like_ring_on_real_slices_is_flagged(slices_2d, tmp_path):
    root, plan, held = slices_2d
    for name in held:
        image = np.asarray(Image.open(root / "training_images" / name)).astype(np.float64)
        distance = ndimage.distance_transform_edt(image == 0)
        image[(distance > 3) & (distance < 9)] = 200  # a bright ring beyond a dark gap: scalp and skull
        path = tmp_path / name
        Image.fromarray(image.astype(np.uint8)).save(path)
        assert "not_skull_stripped" in flags_of(path, plan, SETTINGS_2D, 1, 2, "slices"), name


# ---- 2D: contrast and orientation of a patient's slices, against 30 training patients -----------

TINY_2D = ["model.filters=4", "model.depth=2", "train.epochs=1", "train.iterations_per_epoch=2", "train.batch_size=2",
           "train.val_every=1", "train.augment=[]", "train.precision=fp32", "train.patch_size=[48,48]", "preprocess.folds=3"]


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory):
    """A tiny 2D model fitted on 45 real patients (fold 0: 30 train the QC reference), and 5 other patients."""
    from segpipe.config import load_config
    from segpipe.configs import resolve_config
    from segpipe.pipeline.fit import fit
    from segpipe.pipeline.preprocess import preprocess

    src = shared_data("BrainTumour_2D")
    patients = sorted({p.name.rsplit("_z", 1)[0] for p in (src / "training_images").glob("BRATS_*.png")})
    root, held = tmp_path_factory.mktemp("slices45"), tmp_path_factory.mktemp("held5")
    for i, patient in enumerate(patients[:50]):
        for path in sorted((src / "training_images").glob(f"{patient}_z*.png")):
            if i < 45:
                for sub in ("training_images", "training_labels"):
                    (root / sub).mkdir(exist_ok=True)
                    shutil.copyfile(src / sub / path.name, root / sub / path.name)
            else:
                shutil.copyfile(path, held / path.name)
    prep, model = tmp_path_factory.mktemp("prep45"), tmp_path_factory.mktemp("model2d") / "model"
    config = load_config(resolve_config("msd_2d"), TINY_2D)
    preprocess(root, prep, config, quiet=True)
    fit(prep, model, config, quiet=True)
    return model, held


def _slice_flags(model, folder):
    from segpipe.artifacts.model_folder import ModelFolder

    plan = ModelFolder.open(model).plan
    features = [features_of(p, plan.preprocess, "slices") for p in sorted(folder.glob("*.png"))]
    alone = [sorted(f.name for f in check_case(x, plan, 1, 2)) for x in features]
    pooled = [sorted(f.name if "contrast" not in f.message else "intensity (contrast)"
                     for f in check_case(x, plan, 1, 2, [y for y in features if y is not x])) for x in features]
    return alone, pooled


def test_t2_and_flair_slices_are_flagged_and_t1ce_is_not(model_2d, tmp_path):
    from tests.builders import braintumour_2d_slices

    model, held = model_2d
    reference = json.loads((model / "plan.json").read_text())["qc_reference"]
    assert reference["patients"] == 30 and len(reference["contrast"]) == 1
    brats = shared_data("BraTS2021") / "BraTS2021_00006"
    flags = {}
    for channel in ("t1ce", "t2", "flair"):
        folder = tmp_path / channel
        braintumour_2d_slices(brats / f"BraTS2021_00006_{channel}.nii.gz", folder)
        flags[channel] = _slice_flags(model, folder)[1]
    assert all("intensity (contrast)" not in f for f in flags["t1ce"]), flags["t1ce"]  # the training contrast
    assert all("intensity (contrast)" in f for f in flags["t2"] + flags["flair"]), flags


def test_held_out_patients_pooled_have_no_flags_and_transposed_ones_are_flagged(model_2d, tmp_path):
    from PIL import Image

    model, held = model_2d
    alone, pooled = _slice_flags(model, held)
    assert alone == pooled == [[]] * 30
    transposed = tmp_path / "transposed"
    transposed.mkdir()
    for path in held.glob("*.png"):
        Image.fromarray(np.asarray(Image.open(path)).T.copy()).save(transposed / path.name)
    by_patient = {}
    for path, f in zip(sorted(transposed.glob("*.png")), _slice_flags_grouped(model, transposed)):
        by_patient.setdefault(path.name.rsplit("_z", 1)[0], []).append(f)
    flagged = [p for p, f in by_patient.items() if all("orientation" in x for x in f)]
    assert len(flagged) >= 4, by_patient


def _slice_flags_grouped(model, folder):
    """Flags of each slice with the other slices of its patient pooled (as infer pools them)."""
    from segpipe.artifacts.model_folder import ModelFolder

    plan = ModelFolder.open(model).plan
    paths = sorted(folder.glob("*.png"))
    features = {p: features_of(p, plan.preprocess, "slices") for p in paths}
    patient = {p: p.name.rsplit("_z", 1)[0] for p in paths}
    return [sorted(f.name for f in check_case(features[p], plan, 1, 2, [features[q] for q in paths if q != p and patient[q] == patient[p]]))
            for p in paths]


def test_infer_pools_a_patients_slices_and_strict_refuses_them(model_2d, tmp_path):
    from tests.builders import braintumour_2d_slices

    model, held = model_2d
    inputs = tmp_path / "in"
    braintumour_2d_slices(shared_data("BraTS2021") / "BraTS2021_00006" / "BraTS2021_00006_t2.nii.gz", inputs)
    for path in sorted(held.glob("*.png"))[:6]:  # one held-out patient, as it is
        shutil.copyfile(path, inputs / path.name)
    result = run("infer", "-m", model, "-i", inputs, "-o", tmp_path / "pred", "--precision", "fp32")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "pred" / "cases.csv").set_index("case")
    t2 = table.index.str.startswith("BRATS_900")
    assert t2.sum() == 6 and (table.loc[t2, "flag_intensity"] == 1).all() and table.loc[t2, "needs_review"].all()
    inputs_flags = [f"flag_{f}" for f in FLAGS if f != "tumour_volume"]  # this 2-step model's masks may spill over
    assert (table.loc[~t2, inputs_flags] == 0).all().all()
    assert "6 slices of the patient pooled" in result.output
    strict = run("infer", "-m", model, "-i", inputs, "-o", tmp_path / "strict", "--precision", "fp32", "--strict")
    assert strict.exit_code == 1 and "refused by --strict: intensity" in strict.output
    assert len(list((tmp_path / "strict").glob("BRATS_900_*.png"))) == 0
    assert len(list((tmp_path / "strict").glob("*.png"))) == 6


# ---- synthetic 2D slices (run everywhere): contrast and orientation, a patient's slices pooled -------

def _synthetic_slice(rng, contrast="t1"):
    """A brain-like ellipse, longer front to back: smooth white matter inside, a cortex ribbon
    with fluid-filled sulci, two ventricles; T1-like (white matter brightest) or T2-like (fluid brightest)."""
    yy, xx = np.mgrid[:120, :120].astype(float)
    a, b = rng.uniform(26, 32), rng.uniform(36, 42)
    cy, cx = 60 + rng.uniform(-3, 3), 60 + rng.uniform(-3, 3)
    r = np.sqrt(((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2)
    angle = np.arctan2(yy - cy, xx - cx)
    brain = r < 1
    white = r < 0.7 + 0.08 * np.sin(7 * angle + rng.uniform(0, 6))
    sulci = brain & ~white & (np.sin(18 * angle + rng.uniform(0, 6)) > 0.75)
    ventricles = (np.abs(xx - cx) < 6) & (np.abs(xx - cx) > 1.5) & (np.abs(yy - cy + 5) < 12)
    white_v, grey_v, fluid_v = {"t1": (200, 130, 40), "t2": (90, 140, 230)}[contrast]
    image = np.where(white, white_v, grey_v).astype(float)
    image[(sulci | ventricles) & brain] = fluid_v
    image = ndimage.gaussian_filter(image, 0.8) + rng.normal(0, 4, image.shape)
    return np.where(brain, np.clip(image, 1, 255), 0).astype(np.float32)


def test_synthetic_patients_contrast_and_orientation_are_checked_with_their_slices_pooled():
    from segpipe.qc.features import case_features

    rng = np.random.default_rng(0)

    def features(images):
        return [case_features(x[None], [1.0, 1.0], [120, 120]) for x in images]

    training = features(_synthetic_slice(rng) for _ in range(72))
    plan = {"qc_reference": build_reference(training, [0.0] * 72, [f"P{i // 3}" for i in range(72)])}
    reference = plan["qc_reference"]
    assert reference["patients"] == 24 and len(reference["contrast"][0]["limits"]) == 3
    assert reference["contrast"][0]["median"] < 0  # T1-like: the bright white matter is smooth

    def flags(images):
        group = features(images)
        return [{f.name: f.message for f in check_case(x, plan, 1, 2, [y for y in group if y is not x])} for x in group]

    assert flags([_synthetic_slice(rng) for _ in range(3)]) == [{}] * 3
    t2 = flags([_synthetic_slice(rng, "t2") for _ in range(3)])
    assert all("contrast" in f.get("intensity", "") and "slices of the patient pooled" in f["intensity"] for f in t2), t2
    transposed = [_synthetic_slice(rng).T.copy() for _ in range(3)]
    assert all("orientation" in f for f in flags(transposed))
    # a reference built from older features (another map) is not compared with these maps
    plan = {"qc_reference": {k: v for k, v in reference.items() if k != "version"}}
    assert all("orientation" not in f for f in flags(transposed))
    # fewer than 20 training patients cannot show the contrast's spread: no contrast reference
    assert "contrast" not in build_reference(training[:30], [0.0] * 30, [f"P{i // 3}" for i in range(30)])


# ---- confidence ------------------------------------------------------------------------------

def test_expected_dice_is_one_for_certain_and_lower_for_doubtful_predictions():
    labels = torch.zeros(8, 8, dtype=torch.long)
    labels[2:6, 2:6] = 1
    certain = torch.nn.functional.one_hot(labels, 2).permute(2, 0, 1).float()
    assert expected_dice(expected_dice_terms(certain, labels)) == pytest.approx(1.0)
    doubtful = certain * 0.4 + 0.3  # the same argmax, probabilities 0.7 / 0.3
    assert expected_dice(expected_dice_terms(doubtful, labels)) < 0.8
    empty = torch.zeros(2, 8, 8)
    empty[0] = 1.0
    assert expected_dice(expected_dice_terms(empty, torch.zeros(8, 8, dtype=torch.long))) == 1.0  # nothing predicted or probable


# ---- cases.csv, --json, --strict, evaluate --------------------------------------------------------

def test_cases_csv_columns_and_volumes(tiny_model, synthetic_dataset, tmp_path):
    out = tmp_path / "pred"
    result = run("infer", "-m", tiny_model, "-i", synthetic_dataset, "-o", out, "--json", "--uncertainty")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    table = pd.read_csv(out / "cases.csv", dtype={"case": str})
    structures = ["edema", "non-enhancing_tumour", "enhancing_tumour", "whole_tumour", "tumour_core"]
    expected = ["case", "input", "mask", "status", "seconds", "precision",
                *[f"{k}_{s}" for s in structures for k in ("voxels", "ml")],
                "components_tumour", "confidence",
                *[f"soft_{k}_{s}" for s in structures[:3] for k in ("overlap", "total")],
                "needs_review", "flags", *[f"flag_{f}" for f in FLAGS]]
    assert list(table.columns) == expected
    assert sorted(table["case"]) == ["SYN_006", "SYN_007"] == sorted(r["case"] for r in summary["cases"])
    assert [r["confidence"] for r in summary["cases"]] == table["confidence"].tolist()  # --json mirrors the file
    for _, row in table.iterrows():
        mask_img = nib.load(row["mask"])
        mask = np.asarray(mask_img.dataobj)
        ml = float(np.prod(mask_img.header.get_zooms()[:3])) / 1000.0
        assert row["voxels_edema"] == int((mask == 1).sum())
        assert row["voxels_whole_tumour"] == int((mask > 0).sum())
        assert row["ml_tumour_core"] == pytest.approx(int(np.isin(mask, [2, 3]).sum()) * ml, abs=1e-3)
        assert row["components_tumour"] == ndimage.label(mask > 0)[1]
        assert 0.0 <= row["confidence"] <= 1.0 and row["status"] == "ok" and row["precision"] in ("fp32", "bf16")
        assert row["needs_review"] == (row["confidence"] < 0.5 or bool(isinstance(row["flags"], str) and row["flags"]))
        entropy = nib.load(str(out / f"{row['case']}_uncertainty.nii.gz"))
        assert entropy.shape == mask.shape and np.allclose(entropy.affine, mask_img.affine)
        values = np.asarray(entropy.dataobj)
        assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-5


def test_in_distribution_synthetic_cases_are_not_flagged(tiny_model, synthetic_dataset, tmp_path):
    plan = json.loads((tiny_model / "plan.json").read_text())
    assert plan["qc_reference"]["cases"] == 4  # the fold's training cases only
    for name in ("SYN_006", "SYN_007"):
        assert flags_of(synthetic_dataset / "imagesTs" / f"{name}.nii.gz", plan, plan["preprocess"], 4, 3) == []


def test_strict_refuses_flagged_cases(tiny_model, synthetic_dataset, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz", inputs / "SYN_006.nii.gz")
    src = nib.load(str(synthetic_dataset / "imagesTs" / "SYN_007.nii.gz"))
    affine = src.affine.copy()
    affine[:3, :3] *= 3  # the same voxels said to be 3 mm: out of the training range
    nib.save(nib.Nifti1Image(np.asarray(src.dataobj), affine), str(inputs / "SYN_007.nii.gz"))

    lenient = run("infer", "-m", tiny_model, "-i", inputs, "-o", tmp_path / "warn")
    assert lenient.exit_code == 0, lenient.output
    assert "SYN_007.nii.gz: out of distribution (spacing)" in lenient.output
    table = pd.read_csv(tmp_path / "warn" / "cases.csv", dtype={"case": str}).set_index("case")
    assert table.loc["SYN_007", "flag_spacing"] == 1 and table.loc["SYN_007", "needs_review"]
    assert table.loc["SYN_006", "flag_spacing"] == 0 and (tmp_path / "warn" / "SYN_007.nii.gz").is_file()

    strict = run("infer", "-m", tiny_model, "-i", inputs, "-o", tmp_path / "strict", "--strict")
    assert strict.exit_code == 1
    assert "SYN_007.nii.gz: refused by --strict: spacing" in strict.output
    assert (tmp_path / "strict" / "SYN_006.nii.gz").is_file() and not (tmp_path / "strict" / "SYN_007.nii.gz").exists()
    table = pd.read_csv(tmp_path / "strict" / "cases.csv", dtype={"case": str}).set_index("case")
    assert table.loc["SYN_007", "status"] == "refused" and table.loc["SYN_006", "status"] == "ok"


def test_evaluate_joins_confidence_and_plots_it(tiny_model, synthetic_dataset, tmp_path):
    pred, rep = tmp_path / "pred", tmp_path / "rep"
    assert run("infer", "-m", tiny_model, "-i", synthetic_dataset, "-o", pred, "-q").exit_code == 0
    result = run("evaluate", "-p", pred, "-l", synthetic_dataset / "labelsTs", "-o", rep, "-q")
    assert result.exit_code == 0, result.output
    per_patient = pd.read_csv(rep / "per_patient.csv")
    cases = pd.read_csv(pred / "cases.csv")
    assert {"confidence", "needs_review", "flags"} <= set(per_patient.columns)
    # one volume per patient: the pooled confidence is the case's own
    assert sorted(per_patient["confidence"]) == pytest.approx(sorted(cases["confidence"]), abs=2e-3)
    assert (rep / "confidence_vs_dice.png").stat().st_size > 1000
    assert "confidence_vs_dice.png" in (rep / "report.html").read_text()


def test_a_mask_the_last_run_failed_on_is_scored_with_a_warning_and_marked(tiny_model, synthetic_dataset, tmp_path):
    pred, rep = tmp_path / "pred", tmp_path / "rep"
    assert run("infer", "-m", tiny_model, "-i", synthetic_dataset, "-o", pred, "-q").exit_code == 0
    table = pd.read_csv(pred / "cases.csv")
    failed = table["case"].iloc[0]
    # as a rerun with --overwrite that failed on the case leaves it: the earlier run's mask, a failed row
    table.loc[0, ["status", "mask", "confidence"]] = ["failed", "", float("nan")]
    table.to_csv(pred / "cases.csv", index=False)
    result = run("evaluate", "-p", pred, "-l", synthetic_dataset / "labelsTs", "-o", rep)
    assert result.exit_code == 0, result.output
    assert f"listed as failed in {pred / 'cases.csv'}: their masks are an earlier run's (e.g. case {failed})" in result.output
    per_patient = pd.read_csv(rep / "per_patient.csv").set_index("patient")
    assert bool(per_patient.loc[failed, "needs_review"]) and "infer_failed" in per_patient.loc[failed, "flags"]
    others = per_patient.drop(index=failed)
    assert not others["flags"].fillna("").str.contains("infer_failed").any()


def test_patient_confidence_pools_its_slices(tmp_path):
    from segpipe.qc.evaluation import add_qc_columns

    # slice a: label 1 predicted and sure (overlap 10 of total 10); slice b: a doubtful speck (0 of 30)
    pd.DataFrame({
        "case": ["P1_a", "P1_b"], "confidence": [1.0, 0.0], "soft_overlap_edema": [10.0, 0.0],
        "soft_total_edema": [10.0, 30.0], "needs_review": [False, True], "flags": [None, None],
    }).to_csv(tmp_path / "cases.csv", index=False)
    per_case = pd.DataFrame({"case": ["P1_a", "P1_b"], "patient": ["P1", "P1"], "dice_edema": [1.0, 0.0]})
    per_patient = pd.DataFrame({"patient": ["P1"], "dice_mean": [0.5]})
    per_case, per_patient, found = add_qc_columns(per_case, per_patient, tmp_path)
    assert found and "soft_total_edema" not in per_case.columns
    assert per_patient.loc[0, "confidence"] == pytest.approx(10 / 40)  # pooled, not the mean 0.5 of the slices
    assert bool(per_patient.loc[0, "needs_review"]) and per_patient.loc[0, "flags"] == ""


def test_region_outputs_get_a_confidence_and_an_entropy_map(prepared_dataset, synthetic_dataset, tmp_path):
    from segpipe.pipeline.fit import fit
    from tests.conftest import tiny_config

    fit(prepared_dataset, tmp_path / "model", tiny_config(**{"model.targets": "regions"}), quiet=True)
    out = tmp_path / "pred"
    result = run("infer", "-m", tmp_path / "model", "-i", synthetic_dataset, "-o", out, "--uncertainty", "-q")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "cases.csv")
    assert {"soft_overlap_whole_tumour", "soft_total_tumour_core", "soft_total_enhancing_tumour"} <= set(table.columns)
    assert table["confidence"].between(0, 1).all()
    values = np.asarray(nib.load(str(out / "SYN_006_uncertainty.nii.gz")).dataobj)
    assert values.min() >= 0.0 and values.max() <= 1.0 + 1e-5


def test_reference_can_be_added_to_an_older_model_folder(prepared_dataset, tiny_model, tmp_path):
    from segpipe.qc.reference import main

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    plan = json.loads((model / "plan.json").read_text())
    expected = plan.pop("qc_reference")
    (model / "plan.json").write_text(json.dumps(plan))
    main([str(prepared_dataset), str(model)])
    assert json.loads((model / "plan.json").read_text())["qc_reference"] == expected


def test_shards_write_their_own_tables_and_evaluate_reads_them_all(tiny_model, synthetic_dataset, tmp_path):
    pred = tmp_path / "pred"
    for shard in ("0/2", "1/2"):
        assert run("infer", "-m", tiny_model, "-i", synthetic_dataset, "-o", pred, "--shard", shard, "-q").exit_code == 0
    assert sorted(p.name for p in pred.glob("cases*.csv")) == ["cases_shard0of2.csv", "cases_shard1of2.csv"]
    assert run("evaluate", "-p", pred, "-l", synthetic_dataset / "labelsTs", "-o", tmp_path / "rep", "-q").exit_code == 0
    assert pd.read_csv(tmp_path / "rep" / "per_patient.csv")["confidence"].notna().sum() == 2


def test_preprocess_recomputes_features_of_an_older_version(synthetic_dataset, tmp_path):
    from segpipe.pipeline.preprocess import preprocess
    from segpipe.qc.features import VERSION
    from tests.conftest import tiny_config

    out = tmp_path / "prep"
    preprocess(synthetic_dataset, out, tiny_config(), quiet=True)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["cases"].values():  # as an older segpipe wrote them
        entry["qc"].pop("version")
        entry["qc"].pop("contrast")
    (out / "manifest.json").write_text(json.dumps(manifest))
    preprocess(synthetic_dataset, out, tiny_config(), quiet=True)
    again = json.loads((out / "manifest.json").read_text())["cases"]
    assert all(e["qc"]["version"] == VERSION and "contrast" in e["qc"] for e in again.values())
    plan = with_reference(json.loads((out / "plan.json").read_text()), {"cases": again}, list(again))
    assert plan["qc_reference"]["version"] == VERSION


def test_confidence_figure_of_patients_all_scored_alike_warns_nothing(tmp_path):
    """Every patient at Dice 0 (an untrained model): no rank correlation, and no scipy warning in the output."""
    import warnings

    from segpipe.qc.evaluation import confidence_figure

    frame = pd.DataFrame({"confidence": [0.1, 0.2, 0.3, 0.4], "dice_mean": [0.0] * 4, "needs_review": [True] * 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = confidence_figure(frame, tmp_path / "confidence_vs_dice.png")
    assert path.stat().st_size > 1000


_GOOD_REFERENCE = {"spacing_min": [1, 1, 1], "spacing_max": [1, 1, 1], "box_mm_low": [1, 1, 1], "box_mm_high": [2, 2, 2],
                   "channels": 1, "intensity": [{"median": [0.0], "scale": [1.0], "limit": 2.0}], "template": [0.5] * 8,
                   "orientation_candidates": ["axes(0, 1, 2)flip(0,)"], "orientation_limits": [0.05]}


@pytest.mark.parametrize("edit, words", [
    (lambda r: r.update(spacing_min=5), "'spacing_min' must hold 2 or 3 numbers"),
    (lambda r: r.update(box_mm_high=[1, "x", 2]), "'box_mm_high' must hold 3 finite numbers"),
    (lambda r: r["intensity"][0].pop("limit"), "'intensity' must list per channel"),
    (lambda r: r.update(contrast=[{"median": 0.1}]), "'contrast' must list per channel"),
    (lambda r: r.update(template=[1, 2]), r"'template' must hold n\^3 numbers"),
    (lambda r: r.update(orientation_limits=[]), "'orientation_limits' must hold one number or more"),
    (lambda r: r.update(channels=True), "'channels' must be a whole number"),
])
def test_a_damaged_qc_reference_is_named_field_by_field(edit, words):
    """What check_case reads of a plan's qc_reference is checked when the plan is loaded."""
    from segpipe.artifacts.plan import Plan
    from segpipe.errors import SegpipeError

    reference = json.loads(json.dumps(_GOOD_REFERENCE))
    Plan.from_dict({"labels": {"0": "background", "1": "tumour"}, "qc_reference": reference}, "plan.json")
    edit(reference)
    with pytest.raises(SegpipeError, match=rf"^plan.json: qc_reference {words}"):
        Plan.from_dict({"labels": {"0": "background", "1": "tumour"}, "qc_reference": reference}, "plan.json")


def test_a_predicted_tumour_far_larger_than_any_training_case_is_flagged(tiny_model, synthetic_dataset, tmp_path):
    from segpipe.qc.ood import check_prediction

    plan = {"qc_reference": {"tumour_ml_quantiles": {"50": 1.0, "99": 10.0}}}
    assert check_prediction(19.9, plan) == [] and check_prediction(5.0, {}) == []
    (flag,) = check_prediction(25.0, plan)
    assert flag.name == "tumour_volume" and "25 ml" in flag.message and "10 ml" in flag.message
    # through infer: a model whose training tumours were tiny sees the test cases' as spilling over
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    stored = json.loads((model / "plan.json").read_text())
    stored["qc_reference"]["tumour_ml_quantiles"]["99"] = 1e-6
    (model / "plan.json").write_text(json.dumps(stored))
    result = run("infer", "-m", model, "-i", synthetic_dataset / "imagesTs", "-o", tmp_path / "pred")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "pred" / "cases.csv")
    predicted = table["voxels_whole_tumour"] > 0
    assert predicted.any()
    assert (table.loc[predicted, "flag_tumour_volume"] == 1).all() and table.loc[predicted, "needs_review"].all()
    assert "doubtful prediction (tumour_volume)" in result.output

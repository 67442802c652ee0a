"""evaluate's references: any layout's labelled splits, patients pooled alike whatever
the folder, label names, overlay images, and errors that show the naming mismatch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from segpipe.cli import cli
from segpipe.config import EvaluateConfig
from segpipe.errors import SegpipeError
from segpipe.pipeline.evaluate import evaluate
from segpipe.reports.references import read_references, sibling_images
from tests.builders import make_pairs


def _slices_with_test_split(root: Path) -> Path:
    """The seed 000 layout: training_* and test_* folders of BRATS_<id>_z<slice>.png."""
    rng = np.random.default_rng(3)
    for split, patients in (("training", ("BRATS_001", "BRATS_002")), ("test", ("BRATS_003", "BRATS_004"))):
        for folder in (f"{split}_images", f"{split}_labels"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for p in patients:
            for z in (40, 41, 42):
                label = np.zeros((24, 24), np.uint8)
                r = int(rng.integers(2, 8))
                label[12 - r : 12 + r, 10 - r : 10 + r] = 1
                label[12 - r // 2 : 12 + r // 2, 10 - r // 2 : 10 + r // 2] = 3
                Image.fromarray((rng.random((24, 24)) * 200).astype(np.uint8)).save(root / f"{split}_images" / f"{p}_z{z}.png")
                Image.fromarray(label).save(root / f"{split}_labels" / f"{p}_z{z}.png")
    return root


def _predictions(labels: Path, out: Path) -> Path:
    """Each reference shifted by a slice-dependent amount: per-slice and pooled Dice differ."""
    out.mkdir(parents=True)
    for i, path in enumerate(sorted(labels.glob("*.png"))):
        Image.fromarray(np.roll(np.asarray(Image.open(path)), i % 3, axis=1)).save(out / path.name)
    return out


def _model_folder(path: Path) -> Path:
    """A model folder as far as evaluate reads it: plan.json with label names."""
    path.mkdir(parents=True)
    (path / "plan.json").write_text(json.dumps({"labels": {"0": "background", "1": "oedema", "3": "enhancing"}}))
    return path


def _overlay_panels(path: Path) -> int:
    """3 panels (image, reference, prediction) are 990 px wide, 2 (masks only) 675 px."""
    width = Image.open(path).size[0]
    assert width in (990, 675), width
    return 3 if width == 990 else 2


def test_dataset_labels_folder_and_any_mask_folder_pool_the_same(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "test_labels", tmp_path / "pred")
    anywhere = tmp_path / "refs"
    shutil.copytree(root / "test_labels", anywhere)
    model = _model_folder(tmp_path / "model")
    results = {name: evaluate(preds, labels, tmp_path / name, model_dir=model) for name, labels in
               (("dataset", root), ("labels", root / "test_labels"), ("masks", anywhere))}
    tables = {name: (tmp_path / name / "per_patient.csv").read_text() for name in results}
    assert tables["dataset"] == tables["labels"] == tables["masks"]
    per_patient = results["masks"].per_patient.set_index("patient")
    assert list(per_patient.index) == ["BRATS_003", "BRATS_004"] and (per_patient["slices_or_volumes"] == 3).all()
    per_case = results["masks"].per_case
    pooled_differs = per_case.groupby("patient")["dice_oedema"].mean() - per_patient["dice_oedema"]
    assert (pooled_differs.abs() > 1e-4).any()  # pooling is not the mean of slice scores

    summary = json.loads((tmp_path / "dataset" / "summary.json").read_text())
    assert summary["references"]["matched_splits"] == {"test": 6} and summary["references"]["layout"] == "slices"
    assert summary["missing_predictions"] == []  # the training split was not expected
    assert json.loads((tmp_path / "labels" / "summary.json").read_text())["references"]["matched_splits"] == {"masks": 6}
    # the dataset and the labels folder find the images (beside them); a bare copy does not
    assert _overlay_panels(tmp_path / "dataset" / "overlay_best.png") == 3
    assert _overlay_panels(tmp_path / "labels" / "overlay_best.png") == 3
    assert _overlay_panels(tmp_path / "masks" / "overlay_best.png") == 2
    assert "overlays show the masks only" in (tmp_path / "masks" / "report.html").read_text()
    assert "masks only" not in (tmp_path / "labels" / "report.html").read_text()
    # --images gives the copy its images
    evaluate(preds, anywhere, tmp_path / "with_images", images=root / "test_images", model_dir=model)
    assert _overlay_panels(tmp_path / "with_images" / "overlay_worst.png") == 3


def test_training_split_matches_too_and_patient_pattern_is_configurable(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "training_labels", tmp_path / "pred")
    result = evaluate(preds, root, tmp_path / "out")
    assert result.references["matched_splits"] == {"training": 6}
    assert "training split" in result.matched_line() and "slices dataset" in result.matched_line()
    # a pattern that takes only the slice number pools across patients
    coarse = evaluate(preds, root / "training_labels", tmp_path / "coarse",
                      EvaluateConfig(patient_pattern=r"_(?P<patient>z\d+)$"))
    assert sorted(coarse.per_patient["patient"]) == ["z40", "z41", "z42"]
    with pytest.raises(SegpipeError, match="patient_pattern '\\(': not a valid regular expression"):
        read_references(root / "training_labels", "(")


def test_label_names_from_the_model(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "test_labels", tmp_path / "pred")
    model = _model_folder(tmp_path / "model" / "fold_0")
    result = evaluate(preds, root / "test_labels", tmp_path / "out", model_dir=model.parent)
    assert {"dice_oedema", "dice_enhancing"} <= set(result.per_patient.columns)
    assert "dice_label_1" not in result.per_patient.columns
    assert "oedema" in (tmp_path / "out" / "report.html").read_text()
    bare = evaluate(preds, root / "test_labels", tmp_path / "bare")
    assert "dice_label_1" in bare.per_patient.columns


def test_no_match_names_an_example_of_each_side(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = tmp_path / "pred"
    preds.mkdir()
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(preds / "BRATS_003_slice40_pred.png")
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(root / "test_labels"), "-o", str(tmp_path / "o")])
    assert out.exit_code == 1
    line = out.output.strip()
    assert "\n" not in line and "BRATS_003_slice40_pred.png" in line and "'BRATS_003_z40'" in line


def test_cli_says_which_split_matched(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "test_labels", tmp_path / "pred")
    text = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(root), "-o", str(tmp_path / "o")])
    assert text.exit_code == 0, text.output
    assert f"matched 6 prediction(s) to references of the slices dataset {root}: 6 in the test split" in text.output
    as_json = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(root), "-o", str(tmp_path / "j"), "--json"])
    assert json.loads(as_json.output)["references"]["matched_splits"] == {"test": 6}


def test_sibling_image_folders(tmp_path):
    for name in ("test_images", "imagesTs", "images"):
        (tmp_path / name).mkdir()
    assert sibling_images(tmp_path / "test_labels") == tmp_path / "test_images"
    assert sibling_images(tmp_path / "labelsTs") == tmp_path / "imagesTs"
    assert sibling_images(tmp_path / "masks") == tmp_path / "images"
    assert sibling_images(tmp_path / "refs") is None


def test_pairs_folder_through_infer_and_evaluate(tiny_model, tmp_path):
    root = make_pairs(tmp_path / "p", cases=("a", "b"), unlabelled=("u",), channels=4, shape=(20, 18, 12))
    out = CliRunner().invoke(cli, ["infer", "-m", str(tiny_model), "-i", str(root), "-o", str(tmp_path / "pred"),
                                   "--precision", "fp32", "-q"])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in (tmp_path / "pred").iterdir() if p.name.endswith(".nii.gz")) == [
        "a.nii.gz", "b.nii.gz", "u.nii.gz"]
    result = evaluate(tmp_path / "pred", root, tmp_path / "eval", model_dir=tiny_model)
    assert sorted(result.per_patient["patient"]) == ["a", "b"] and result.references["layout"] == "pairs"
    assert result.references["matched_splits"] == {"training": 2}
    assert "dice_edema" in result.per_patient.columns  # the model's label names
    assert _overlay_panels(tmp_path / "eval" / "overlay_best.png") == 3  # the pair's image is drawn
    table = pd.read_csv(tmp_path / "eval" / "per_case.csv")
    assert set(table["case"]) == {"a", "b"}


def test_nrrd_images_are_drawn_under_overlays(tmp_path):
    import itk

    from segpipe.reports.masks import load_display_slice

    volume = np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4)  # x, y, z
    itk.imwrite(itk.image_from_array(np.ascontiguousarray(volume.T)), str(tmp_path / "i.nrrd"))
    assert np.array_equal(load_display_slice(tmp_path / "i.nrrd", (6, 5, 4), 2), volume[:, :, 2])
    assert load_display_slice(tmp_path / "i.nrrd", (6, 5, 3), 2) is None  # another grid: not drawn


def test_decathlon_labelsTs_are_references(synthetic_dataset, tmp_path):
    preds = tmp_path / "pred"
    shutil.copytree(synthetic_dataset / "labelsTs", preds)  # perfect predictions of the test split
    result = evaluate(preds, synthetic_dataset, tmp_path / "out")
    assert result.references == {"path": str(synthetic_dataset), "layout": "decathlon", "matched_splits": {"test": 2}}
    assert sorted(result.per_patient["patient"]) == ["SYN_006", "SYN_007"]
    assert (result.per_patient["dice_whole_tumour"] == 1.0).all()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["missing_predictions"] == []  # the 6 training cases were not expected


def _same_png_slices(tmp_path, *names: str):
    """refs/ and pred/ holding the same square mask as PNG slices `names`."""
    refs, preds = tmp_path / "refs", tmp_path / "pred"
    for folder in (refs, preds):
        folder.mkdir()
        for name in names:
            mask = np.zeros((8, 8), np.uint8)
            mask[2:6, 2:6] = 1
            Image.fromarray(mask).save(folder / f"{name}.png")
    return refs, preds


def test_preprocess_patient_pattern_pools_in_evaluate(tmp_path):
    refs, preds = _same_png_slices(tmp_path, "caseA-s1", "caseA-s2", "caseB-s1")
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(refs), "-o", str(tmp_path / "o"), "--json",
                                   "--set", "preprocess.patient_pattern=^(?P<patient>case[A-Z])-"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["patients"] == 2
    unpooled = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(refs), "-o", str(tmp_path / "u"), "--json"])
    assert json.loads(unpooled.output)["patients"] == 3  # the default pattern does not match these names


def test_an_image_given_but_unreadable_is_named_in_the_report(tmp_path):
    """--images was given: an overlay without its image says which file could not be drawn, not
    'no image found (give --images)'."""
    for folder in ("refs", "preds", "images"):
        (tmp_path / folder).mkdir()
    mask = np.zeros((10, 9, 6), np.uint8)
    mask[2:6, 3:7, 1:4] = 1
    for folder in ("refs", "preds"):
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / folder / "a.nii.gz"))
    (tmp_path / "images" / "a.nii.gz").write_text("not a nifti")
    evaluate(tmp_path / "preds", tmp_path / "refs", tmp_path / "out", images=tmp_path / "images")
    report = (tmp_path / "out" / "report.html").read_text()
    assert f"{tmp_path / 'images' / 'a.nii.gz'}: not drawn under its overlay" in report
    assert "No image found" not in report


def test_predicted_labels_the_references_do_not_declare_and_missing_predictions_are_warned(synthetic_dataset, tmp_path):
    """A prediction of another label set is doubtful: the value is scored as background, and the
    console, the report and summary.json say so; so does a reference without a prediction."""
    preds = tmp_path / "pred"
    shutil.copytree(synthetic_dataset / "labelsTr", preds)
    first, second = sorted(preds.glob("*.nii.gz"))[:2]
    img = nib.load(str(first))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine), str(first))
    second.unlink()
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(synthetic_dataset), "-o", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    case = first.name.removesuffix(".nii.gz")
    assert f"warning: 1 prediction(s) hold label values the references do not declare (0, 1, 2, 3), scored as " \
           f"background: case {case} has 7" in out.output
    assert f"warning: 1 reference case(s) have no prediction, e.g. {second.name.removesuffix('.nii.gz')}" in out.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["undeclared_prediction_labels"] == {case: [7]}
    assert "scored as background" in (tmp_path / "o" / "report.html").read_text()


def test_predicted_values_no_plain_reference_holds_are_warned(tmp_path):
    """Plain mask folders declare no labels: a predicted value that no reference holds is scored
    as a label of its own, and warned as doubtful like an undeclared one."""
    for folder in ("refs", "preds"):
        (tmp_path / folder).mkdir()
    mask = np.zeros((10, 9, 6), np.uint8)
    mask[2:6, 3:7, 1:4] = 1
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "refs" / f"{name}.nii.gz"))
    odd = mask.copy()
    odd[8, 0, 0] = 5
    nib.save(nib.Nifti1Image(odd, np.eye(4)), str(tmp_path / "preds" / "a.nii.gz"))
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "preds" / "b.nii.gz"))
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(tmp_path / "preds"), "-l", str(tmp_path / "refs"),
                                   "-o", str(tmp_path / "o")])
    assert out.exit_code == 0, out.output
    assert "warning: 1 prediction(s) hold label values the references do not hold (0, 1), scored as labels of " \
           "their own: case a has 5" in out.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["undeclared_prediction_labels"] == {"a": [5]}
    assert "5" in summary["labels"]
    quiet = CliRunner().invoke(cli, ["evaluate", "-p", str(tmp_path / "preds"), "-l", str(tmp_path / "refs"),
                                     "-o", str(tmp_path / "q"), "-q"])
    assert quiet.exit_code == 0 and "warning" not in quiet.output


def test_a_stray_predicted_value_keeps_the_references_regions(tmp_path):
    """References of labels 1-3 (BraTS's regions); a prediction holding a 4 no reference holds is
    warned and scored as its own label, and the whole tumour, core and enhancing regions stay."""
    for folder in ("refs", "preds"):
        (tmp_path / folder).mkdir()
    mask = np.zeros((10, 9, 6), np.uint8)
    mask[2:7, 2:7, 1:5], mask[3:6, 3:6, 2:4], mask[4, 4, 3] = 1, 2, 3
    nib.save(nib.Nifti1Image(mask, np.eye(4)), str(tmp_path / "refs" / "a.nii.gz"))
    odd = mask.copy()
    odd[9, 8, 5] = 4
    nib.save(nib.Nifti1Image(odd, np.eye(4)), str(tmp_path / "preds" / "a.nii.gz"))
    result = evaluate(tmp_path / "preds", tmp_path / "refs", tmp_path / "o")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["regions"] == {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}
    assert summary["undeclared_prediction_labels"] == {"a": [4]}
    assert result.per_patient["dice_whole_tumour"].iloc[0] == pytest.approx(1.0)
    assert "dice_label_4" in result.per_patient.columns and len(result.warnings) == 1


def test_slices_no_patient_pattern_pools_are_warned(tmp_path):
    """PNG slices the patient pattern names no patient in (or a pattern given that matches nothing)
    are each scored as a patient of their own: doubtful, so warned; a pattern matching an empty
    name does not pool every slice into one patient ''."""
    refs, preds = _same_png_slices(tmp_path, "BRATS_001_slice10", "BRATS_001_slice11", "BRATS_002_slice10")
    args = ["evaluate", "-p", str(preds), "-l", str(refs), "-o", str(tmp_path / "o")]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "warning: the patient pattern '^(?P<patient>BRATS_\\d+)_z\\d+' names no patient in the 3 reference name(s) " \
           "(e.g. BRATS_001_slice10): each is scored as a patient of its own" in out.output
    assert "scored as a patient of its own" in (tmp_path / "o" / "report.html").read_text()
    given = CliRunner().invoke(cli, [*args, "--set", r"evaluate.patient_pattern=(?P<patient>XYZ\d+)"])
    assert given.exit_code == 0 and "names no patient in the 3 reference name(s)" in given.output
    empty = CliRunner().invoke(cli, [*args, "--json", "--set", r"evaluate.patient_pattern=(?P<patient>\d*)"])
    assert json.loads(empty.output)["patients"] == 3
    pooled = CliRunner().invoke(cli, [*args, "--set", r"evaluate.patient_pattern=^(?P<patient>BRATS_\d+)_slice"])
    assert pooled.exit_code == 0 and "warning" not in pooled.output


def test_predictions_that_are_the_references_or_match_none_are_warned(tmp_path):
    """-p and -l the same folder scores every mask against itself; a prediction matching no
    reference is not scored: both warned (infer's probability and uncertainty maps are not)."""
    refs = tmp_path / "refs"
    refs.mkdir()
    mask = np.zeros((10, 9, 6), np.uint8)
    mask[2:6, 3:7, 1:4] = 1
    for name in ("a", "b"):
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(refs / f"{name}.nii.gz"))
    same = CliRunner().invoke(cli, ["evaluate", "-p", str(refs), "-l", str(refs), "-o", str(tmp_path / "o")])
    assert same.exit_code == 0
    assert "warning: 2 prediction(s) are the reference files themselves (e.g. case a)" in same.output
    preds = tmp_path / "preds"
    shutil.copytree(refs, preds)
    for name in ("OTHER", "a_probabilities", "a_uncertainty"):
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(preds / f"{name}.nii.gz"))
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(refs), "-o", str(tmp_path / "p")])
    assert out.exit_code == 0
    assert "warning: 1 prediction(s) match no reference case and are not scored, e.g. OTHER" in out.output
    assert "themselves" not in out.output


def test_brats_references_are_scored_in_the_predictions_label_set(tmp_path):
    """A model trained with preprocess.label_set=brats writes 1 core, 2 edema, 4 enhancing: the
    BraTS references are read in those values (the model's, or the config's), not the MSD ones."""
    from segpipe.data.brats import LABEL_SETS
    from tests.builders import make_brats

    cohort = make_brats(tmp_path / "cohort", shape=(8, 6, 5))
    preds = tmp_path / "pred"
    preds.mkdir()
    for case in ("BraTS2021_00001", "BraTS2021_00002"):  # the references themselves, in BraTS values
        shutil.copy(cohort / case / f"{case}_seg.nii.gz", preds / f"{case}.nii.gz")
    dice = ["dice_mean", "dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour"]
    by_model = evaluate(preds, cohort, tmp_path / "model", label_names=LABEL_SETS["brats"])
    assert (by_model.per_patient[dice] == 1.0).all().all()
    assert (evaluate(preds, cohort, tmp_path / "msd").per_patient["dice_mean"] < 1.0).all(), "msd stays the default"
    out = CliRunner().invoke(cli, ["evaluate", "-p", str(preds), "-l", str(cohort), "-o", str(tmp_path / "cli"),
                                   "--set", "preprocess.label_set=brats", "-q"])
    assert out.exit_code == 0, out.output
    assert (pd.read_csv(tmp_path / "cli" / "per_patient.csv")[dice] == 1.0).all().all()
    assert json.loads((tmp_path / "cli" / "summary.json").read_text())["inputs"]["label_set"] == "brats"
    rebuilt = CliRunner().invoke(cli, ["report", str(tmp_path / "cli"), "--rebuild", "-q"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (pd.read_csv(tmp_path / "cli" / "per_patient.csv")[dice] == 1.0).all().all()


def test_a_patient_scored_on_part_of_its_slices_is_flagged(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "test_labels", tmp_path / "pred")
    (preds / "BRATS_003_z41.png").unlink()  # one of BRATS_003's three slices was not predicted
    result = evaluate(preds, root / "test_labels", tmp_path / "out")
    rows = result.per_patient.set_index("patient")
    assert rows.loc["BRATS_003", "flags"] == "partly_predicted" and bool(rows.loc["BRATS_003", "needs_review"])
    assert rows.loc["BRATS_004", "flags"] == "" and not bool(rows.loc["BRATS_004", "needs_review"])
    assert any("1 patient(s) are scored on part of their slices" in w and "BRATS_003" in w for w in result.warnings)
    written = pd.read_csv(tmp_path / "out" / "per_patient.csv", keep_default_na=False).set_index("patient")
    assert written.loc["BRATS_003", "flags"] == "partly_predicted"


@pytest.mark.parametrize("shape", [(24, 40), (32, 32)])
def test_a_png_reference_and_a_nifti_prediction_of_one_slice_are_compared_pixel_for_pixel(tmp_path, shape):
    """A PNG holds rows first, a 2D NIfTI x first (as ITK converts one into the other)."""
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
    mask = np.zeros(shape, np.uint8)
    mask[2:10, 4:28] = 1
    Image.fromarray(mask).save(tmp_path / "ref" / "BRATS_001_z1.png")
    nib.save(nib.Nifti1Image(mask.T.copy(), np.eye(4)), str(tmp_path / "pred" / "BRATS_001_z1.nii.gz"))
    result = evaluate(tmp_path / "pred", tmp_path / "ref", tmp_path / "out")
    assert result.per_patient["dice_label_1"].tolist() == [1.0]


def test_case_ids_that_read_as_missing_values_keep_their_cases_csv_rows(tmp_path):
    from segpipe.qc.casetable import read_cases

    (tmp_path / "cases.csv").write_text("case,confidence,needs_review,flags\nNA,0.9,False,\nnull,0.8,False,\nnan,0.7,True,shape\n")
    table = read_cases(tmp_path)
    assert table["case"].tolist() == ["NA", "null", "nan"] and table["confidence"].tolist() == [0.9, 0.8, 0.7]
    for text, words in (("case,confidence,needs_review,flags\na,-5,False,\n", "'-5'"),
                        ("case,confidence\na,0.5\n", "'needs_review', 'flags'"), ("", "EmptyDataError")):
        (tmp_path / "cases.csv").write_text(text)
        with pytest.raises(SegpipeError, match=f"cases.csv: not a cases.csv as segpipe infer writes it.*{words}"):
            read_cases(tmp_path)


def test_label_names_that_make_one_column_or_the_mean_are_refused():
    from segpipe.metrics.patients import label_structures

    assert label_structures([1, 2], {1: "edema", 2: "enhancing tumour"}) == ["edema", "enhancing_tumour"]
    with pytest.raises(SegpipeError, match=r"labels named 'a b', 'a_b' give one column name 'a_b'"):
        label_structures([1, 2], {1: "a b", 2: "a_b"})
    with pytest.raises(SegpipeError, match=r"label 1 is named 'mean'"):
        label_structures([1], {1: "mean"})


def test_a_rebuild_refuses_a_summary_json_whose_lesion_wise_is_not_a_flag(tmp_path):
    root = _slices_with_test_split(tmp_path / "seed000")
    preds = _predictions(root / "test_labels", tmp_path / "pred")
    evaluate(preds, root / "test_labels", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    summary["inputs"]["lesion_wise"] = "no"
    (tmp_path / "out" / "summary.json").write_text(json.dumps(summary))
    out = CliRunner().invoke(cli, ["report", str(tmp_path / "out"), "--rebuild"])
    assert out.exit_code == 1 and "'inputs.lesion_wise' is 'no', expected true or false" in out.output

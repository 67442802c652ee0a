import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from segpipe.errors import SegpipeError
from segpipe.metrics.overlap import dice
from segpipe.pipeline import infer as infer_module
from segpipe.pipeline.evaluate import evaluate
from segpipe.pipeline.infer import infer


def _oblique_case(folder, rng):
    """A 4-channel volume with an oblique, anisotropic affine and its label."""
    from segpipe.data.synthetic import synthetic_case

    image, label = synthetic_case(rng, (30, 26, 14))
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.9, 1.3, 2.5])
    affine[:3, 3] = [10, -5, 3]
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), str(folder / "OBL_001.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / "OBL_001_label.nii.gz"))
    return folder / "OBL_001.nii.gz", folder / "OBL_001_label.nii.gz"


def test_masks_have_the_inputs_geometry(tiny_model, synthetic_dataset, tmp_path):
    out = tmp_path / "pred"
    result = infer(tiny_model, [synthetic_dataset], out, quiet=True)
    assert sorted(p.name for p in result.written) == ["SYN_006.nii.gz", "SYN_007.nii.gz"]
    for path in result.written:
        src = nib.load(str(synthetic_dataset / "imagesTs" / path.name))
        mask = nib.load(str(path))
        assert mask.shape == src.shape[:3]
        assert np.allclose(mask.affine, src.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    again = infer(tiny_model, [synthetic_dataset], out, quiet=True)
    assert not again.written and len(again.skipped) == 2
    assert len(infer(tiny_model, [synthetic_dataset], out, overwrite=True, quiet=True).written) == 2
    assert not list(out.glob(".*"))


def test_oblique_anisotropic_input_round_trips(tiny_model, tmp_path, monkeypatch):
    image, label = _oblique_case(tmp_path / "in", np.random.default_rng(5))
    # oracle model: the "prediction" is the reference label, preprocessed like the image
    from segpipe.transforms.preprocessing import preprocessing_chain

    def oracle(segmenter, img, sliding_window):
        s = segmenter.plan["preprocess"]
        chain = preprocessing_chain(s["target_spacing"], orientation=s["orientation"])
        return chain({"image": str(image), "label": str(label)})["label"].as_tensor(), None

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    (tmp_path / "in" / "OBL_001_label.nii.gz").rename(tmp_path / "OBL_001_label.nii.gz")
    label = tmp_path / "OBL_001_label.nii.gz"
    out = infer(tiny_model, [image], tmp_path / "pred", quiet=True).written[0]
    src, mask = nib.load(str(image)), nib.load(str(out))
    assert mask.shape == src.shape[:3] and np.allclose(mask.affine, src.affine)
    ref = np.asarray(nib.load(str(label)).dataobj)
    got = np.asarray(mask.dataobj)
    # resampled to 1 x 1 x 1.2 mm and back with nearest neighbour: near-perfect overlap
    assert dice(got > 0, ref > 0) > 0.97


def test_infer_errors(tiny_model, tmp_path):
    with pytest.raises(SegpipeError, match="no such file"):
        infer(tiny_model, [tmp_path / "missing.nii.gz"], tmp_path / "o", quiet=True)
    bad = tmp_path / "three.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)), str(bad))
    with pytest.raises(SegpipeError, match="has 3 channel.s., the model expects 4"):
        infer(tiny_model, [bad], tmp_path / "o", quiet=True)
    with pytest.raises(SegpipeError, match="not a segpipe model folder"):
        infer(tmp_path, [bad], tmp_path / "o", quiet=True)


def test_evaluate_matches_numpy(synthetic_dataset, tmp_path):
    ref_dir = synthetic_dataset / "labelsTs"
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    expected = {}
    for path in sorted(ref_dir.glob("*.nii.gz")):
        img = nib.load(str(path))
        ref = np.asarray(img.dataobj)
        pred = np.roll(ref, 2, axis=0)  # a known perturbation
        nib.save(nib.Nifti1Image(pred, img.affine), str(pred_dir / path.name))
        expected[path.name[:-7]] = 2 * ((pred == 1) & (ref == 1)).sum() / ((pred == 1).sum() + (ref == 1).sum())
    result = evaluate(pred_dir, ref_dir, tmp_path / "rep", label_names={0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"})
    table = pd.read_csv(tmp_path / "rep" / "per_patient.csv").set_index("patient")
    for cid, value in expected.items():
        assert table.loc[cid, "dice_edema"] == pytest.approx(value, abs=1e-6)
    assert {"dice_whole_tumour", "dice_tumour_core", "dice_enhancing_tumour"} <= set(table.columns)
    summary = pd.read_csv(tmp_path / "rep" / "summary.csv").set_index("metric")
    assert summary.loc["dice_edema", "mean"] == pytest.approx(np.mean(list(expected.values())), abs=1e-6)
    assert summary.loc["dice_edema", "n"] == 2
    assert (tmp_path / "rep" / "summary.json").is_file() and len(result.per_patient) == 2


def test_evaluate_shape_mismatch(synthetic_dataset, tmp_path):
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(pred_dir / "SYN_006.nii.gz"))
    with pytest.raises(SegpipeError, match=r"SYN_006.nii.gz: shape \(4, 4, 4\) differs"):
        evaluate(pred_dir, synthetic_dataset / "labelsTs", tmp_path / "rep")


def test_oblique_volume_resampled_to_half_spacing_round_trips_exactly(tmp_path, monkeypatch):
    """Preprocessing resamples this oblique, anisotropic volume (0.9 x 1.3 x 2.5 mm) to half
    its spacing along its own axes and crops it; the oracle's mask comes back voxel for voxel."""
    from segpipe.pipeline.fit import fit
    from segpipe.pipeline.preprocess import preprocess
    from segpipe.transforms.preprocessing import preprocessing_chain
    from tests.conftest import tiny_config

    image, label = _oblique_case(tmp_path / "ds" / "imagesTr", np.random.default_rng(8))
    (tmp_path / "ds" / "labelsTr").mkdir()
    label = label.rename(tmp_path / "ds" / "labelsTr" / "OBL_001.nii.gz")
    import json

    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({
        "name": "oblique", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"},
        "training": [{"image": "./imagesTr/OBL_001.nii.gz", "label": "./labelsTr/OBL_001.nii.gz"}], "test": []}))
    cfg = tiny_config(**{"preprocess.target_spacing": "[0.45, 0.65, 1.25]", "train.epochs": "1", "train.iterations_per_epoch": "1"})
    preprocess(tmp_path / "ds", tmp_path / "prep", cfg, quiet=True)
    fit(tmp_path / "prep", tmp_path / "model", cfg, quiet=True)

    def oracle(segmenter, img, sliding_window):
        chain = preprocessing_chain(segmenter.plan["preprocess"]["target_spacing"])
        out = chain({"image": str(image), "label": str(label)})
        assert out["label"].shape[1:] != nib.load(str(label)).shape  # it really was resampled
        return out["label"].as_tensor(), None

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    out = infer(tmp_path / "model", [image], tmp_path / "pred", quiet=True).written[0]
    ref = np.asarray(nib.load(str(label)).dataobj)
    got = np.asarray(nib.load(str(out)).dataobj)
    assert np.allclose(nib.load(str(out)).affine, nib.load(str(image)).affine)
    for k in (1, 2, 3):
        assert dice(got == k, ref == k) == 1.0

"""segpipe infer: every input form, ensembles, TTA, shards, post-processing, probabilities."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

import segpipe.runtime.precision as precision_module
from segpipe.errors import SegpipeError
from segpipe.pipeline import infer as infer_module
from segpipe.pipeline.fit import fit, fit_folds
from segpipe.prediction import SkipEmptyWindows
from segpipe.pipeline.infer import infer, parse_shard
from segpipe.pipeline.preprocess import preprocess
from segpipe.transforms.postprocess import keep_largest_component, remove_small_components
from tests.builders import model_with_config
from tests.conftest import shared_data, tiny_config


@pytest.fixture(scope="module")
def slice_dataset(tmp_path_factory):
    """A 2D slice dataset (PNG pairs named BRATS_<id>_z<k>.png), 3 slices from each of 6 volumes."""
    from segpipe.data.synthetic import synthetic_case

    root = tmp_path_factory.mktemp("slices")
    (root / "training_images").mkdir()
    (root / "training_labels").mkdir()
    rng = np.random.default_rng(3)
    for pid in range(6):
        image, label = synthetic_case(rng, (40, 36, 12))
        for z in (4, 6, 8):
            img = np.clip(image[:, :, z, 2] / 3, 0, 255).astype(np.uint8)  # one channel, like the MSD 2D set
            Image.fromarray(img).save(root / "training_images" / f"BRATS_{pid:03d}_z{z}.png")
            Image.fromarray(label[:, :, z]).save(root / "training_labels" / f"BRATS_{pid:03d}_z{z}.png")
    return root


@pytest.fixture(scope="module")
def model_2d(slice_dataset, tmp_path_factory):
    base = tmp_path_factory.mktemp("m2d")
    cfg = tiny_config(**{"model.spatial_dims": "2", "train.patch_size": "[16,16]", "train.batch_size": "4"})
    preprocess(slice_dataset, base / "prep", cfg, quiet=True)
    fit(base / "prep", base / "model", cfg, quiet=True)
    return base / "model"


def test_png_slices_in_png_masks_out(model_2d, slice_dataset, tmp_path):
    result = infer(model_2d, [slice_dataset / "training_images"], tmp_path / "out", quiet=True)
    assert len(result.written) == 18
    for path in result.written:
        assert path.suffix == ".png"
        src = np.asarray(Image.open(slice_dataset / "training_images" / path.name))
        mask = np.asarray(Image.open(path))
        assert mask.shape == src.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2, 3}


def test_png_orientation_round_trips_with_an_oracle(model_2d, slice_dataset, tmp_path, monkeypatch):
    name = "BRATS_002_z6.png"
    ref = np.asarray(Image.open(slice_dataset / "training_labels" / name))

    def oracle(segmenter, image, sliding_window):
        from segpipe.transforms.preprocessing import chain_for

        chain = chain_for(segmenter.plan["preprocess"], "slices", with_label=True)
        out = chain({"image": str(slice_dataset / "training_images" / name), "label": str(slice_dataset / "training_labels" / name)})
        return out["label"].as_tensor(), None

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    written = infer(model_2d, [slice_dataset / "training_images" / name], tmp_path / "o", quiet=True).written[0]
    assert np.array_equal(np.asarray(Image.open(written)), ref)


def test_png_probabilities_are_indexed_like_the_png_mask(model_2d, slice_dataset, tmp_path, monkeypatch):
    """The .npy beside a PNG mask holds (rows, columns, classes): its argmax is the mask (it
    used to be transposed, in MONAI PILReader's x, y order)."""
    name = "BRATS_002_z6.png"
    ref = np.asarray(Image.open(slice_dataset / "training_labels" / name))
    assert ref.shape[0] != ref.shape[1] or not np.array_equal(ref, ref.T)  # a transposition would show

    def oracle(segmenter, image, sliding_window):
        from segpipe.transforms.preprocessing import chain_for

        chain = chain_for(segmenter.plan["preprocess"], "slices", with_label=True)
        out = chain({"image": str(slice_dataset / "training_images" / name), "label": str(slice_dataset / "training_labels" / name)})
        label = out["label"].as_tensor()
        onehot = torch.nn.functional.one_hot(label[0].long(), 4).movedim(-1, 0).float()
        return label, 0.1 + 0.8 * onehot

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    written = infer(model_2d, [slice_dataset / "training_images" / name], tmp_path / "o", quiet=True, probabilities=True).written[0]
    probs = np.load(tmp_path / "o" / "BRATS_002_z6_probabilities.npy")
    assert probs.shape == (*ref.shape, 4)
    assert np.array_equal(probs.argmax(-1), np.asarray(Image.open(written)))
    assert np.array_equal(probs.argmax(-1), ref)


def test_2d_model_on_a_volume_runs_slice_by_slice(model_2d, tmp_path):
    vol = np.random.default_rng(0).uniform(1, 200, (20, 18, 5)).astype(np.float32)
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "vol.nii.gz"))
    out = infer(model_2d, [tmp_path / "vol.nii.gz"], tmp_path / "o", quiet=True).written[0]
    mask = nib.load(str(out))
    assert mask.shape == (20, 18, 5) and np.allclose(mask.affine, affine)


def test_tta_ensemble_shards_and_probabilities(tiny_model, synthetic_dataset, prepared_dataset, tmp_path):
    plain = infer(tiny_model, [synthetic_dataset], tmp_path / "plain", quiet=True).written
    tta = infer(tiny_model, [synthetic_dataset], tmp_path / "tta", {"tta": True}, quiet=True, probabilities=True).written
    assert [p.name for p in plain] == [p.name for p in tta]
    probs = nib.load(str(tmp_path / "tta" / "SYN_006_probabilities.nii.gz"))
    src = nib.load(str(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz"))
    assert probs.shape == (*src.shape[:3], 4) and np.allclose(probs.affine, src.affine)
    p = np.asarray(probs.dataobj)
    assert np.allclose(p.sum(-1), 1.0, atol=1e-3)  # outside the foreground crop too: background there
    lo, hi = np.argwhere(np.asarray(src.dataobj).any(-1)).min(0), np.argwhere(np.asarray(src.dataobj).any(-1)).max(0)
    outside = np.ones(src.shape[:3], bool)
    outside[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = False
    assert outside.any() and np.all(p[outside, 0] == 1.0)
    # shards split the cohort without overlap
    a = infer(tiny_model, [synthetic_dataset], tmp_path / "s", quiet=True, shard="0/2").written
    b = infer(tiny_model, [synthetic_dataset], tmp_path / "s", quiet=True, shard="1/2").written
    assert len(a) == len(b) == 1 and a[0] != b[0]
    # an ensemble of fold models
    fit_folds(prepared_dataset, tmp_path / "cv", tiny_config(**{"train.epochs": "1"}), [0, 1], quiet=True)
    ens = infer(tmp_path / "cv", [synthetic_dataset], tmp_path / "ens", quiet=True).written
    assert len(ens) == 2
    with pytest.raises(SegpipeError, match="no fold_7"):
        infer(tmp_path / "cv", [synthetic_dataset], tmp_path / "ens2", quiet=True, folds="0,7")
    with pytest.raises(SegpipeError, match="single model folder"):
        infer(tiny_model, [synthetic_dataset], tmp_path / "x", quiet=True, folds="0")


def test_skip_empty_windows_changes_nothing_but_work(tiny_model, synthetic_dataset, tmp_path):
    on = infer(tiny_model, [synthetic_dataset], tmp_path / "on", {"skip_empty": True, "precision": "fp32"}, quiet=True).written
    off = infer(tiny_model, [synthetic_dataset], tmp_path / "off", {"skip_empty": False, "precision": "fp32"}, quiet=True).written
    for a, b in zip(on, off):
        agree = np.mean(np.asarray(nib.load(str(a)).dataobj) == np.asarray(nib.load(str(b)).dataobj))
        assert agree > 0.999
    net = torch.nn.Conv3d(2, 3, 1)
    wrapped = SkipEmptyWindows(net, 3)
    x = torch.zeros(3, 2, 4, 4, 4)
    x[1] = 1.0
    out = wrapped(x)
    assert torch.allclose(out[1], net(x[1:2])[0]) and out[0, 0].min() > 10 and out[0, 1:].abs().max() == 0


def test_bf16_precision_and_channels_last_agree_with_fp32(tiny_model, synthetic_dataset, tmp_path):
    fp32 = infer(tiny_model, [synthetic_dataset], tmp_path / "a", {"precision": "fp32"}, quiet=True)
    bf16 = infer(tiny_model, [synthetic_dataset], tmp_path / "b", {"precision": "bf16", "channels_last": True}, quiet=True)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    fp32, bf16 = fp32.written[0], bf16.written[0]
    agree = np.mean(np.asarray(nib.load(str(fp32)).dataobj) == np.asarray(nib.load(str(bf16)).dataobj))
    assert agree > 0.98
    with pytest.raises(SegpipeError, match="fp16 needs a CUDA device"):
        infer(tiny_model, [synthetic_dataset], tmp_path / "c", {"precision": "fp16"}, quiet=True)


def test_nrrd_in_nrrd_out_with_its_geometry(tiny_model, synthetic_dataset, tmp_path):
    import itk

    src = nib.load(str(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz"))
    # a 4-channel vector image; ITK arrays are (z, y, x, channel)
    image = itk.image_from_array(np.ascontiguousarray(np.asarray(src.dataobj).transpose(2, 1, 0, 3)), is_vector=True)
    image.SetSpacing((1.1, 0.9, 1.3))
    image.SetOrigin((5.0, -3.0, 2.0))
    itk.imwrite(image, str(tmp_path / "case.nrrd"))
    out = infer(tiny_model, [tmp_path / "case.nrrd"], tmp_path / "o", quiet=True).written[0]
    assert out.name == "case.nrrd"
    mask = itk.imread(str(out))
    assert tuple(mask.GetSpacing()) == pytest.approx((1.1, 0.9, 1.3))
    assert tuple(mask.GetOrigin()) == pytest.approx((5.0, -3.0, 2.0))
    assert itk.array_view_from_image(mask).shape == np.asarray(src.dataobj).shape[:3][::-1]


def test_postprocessing():
    labels = np.zeros((10, 10), np.uint8)
    labels[1:4, 1:4] = 1  # 9 voxels
    labels[6, 6] = 1  # 1 voxel
    labels[7:9, 0:2] = 2  # 4 voxels
    kept = keep_largest_component(labels, [1])
    assert kept[6, 6] == 0 and kept[2, 2] == 1 and (kept == 2).sum() == 4
    cleaned = remove_small_components(labels, 5)
    assert (cleaned == 1).sum() == 9 and (cleaned == 2).sum() == 0


def test_shard_parsing():
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) == (0, 1)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(SegpipeError, match="--shard"):
            parse_shard(bad)


def test_brats_layout_oracle_returns_the_label_voxel_for_voxel(tmp_path, monkeypatch):
    root = shared_data("BraTS2021")
    case = root / "BraTS2021_00006"
    from segpipe.data import read_dataset
    from segpipe.data.loading import load_arrays

    ds = read_dataset(root)
    _, label = load_arrays(ds, ds.training[0])  # BraTS labels mapped to 1 edema, 2 non-enhancing, 3 enhancing
    cfg = tiny_config(**{"train.epochs": "1", "train.iterations_per_epoch": "1", "train.patch_size": "[32,32,32]"})
    preprocess(root, tmp_path / "prep", cfg, quiet=True)
    fit(tmp_path / "prep", tmp_path / "model", cfg, quiet=True)
    from segpipe.transforms.preprocessing import chain_for

    def oracle(segmenter, image, sliding_window):
        chain = chain_for(segmenter.plan["preprocess"], "brats", with_label=True, label_mapping=ds.label_mapping)
        src = [str(p) for p in ds.training[0].images]
        return chain({"image": src, "label": str(ds.training[0].label)})["label"].as_tensor(), None

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    out = infer(tmp_path / "model", [case], tmp_path / "o", quiet=True).written[0]
    mask = nib.load(str(out))
    flair = nib.load(str(ds.training[0].images[0]))
    assert mask.shape == flair.shape and np.allclose(mask.affine, flair.affine)
    assert np.array_equal(np.asarray(mask.dataobj), label[0].astype(np.uint8))


def test_dicom_seg_references_the_series(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from segpipe.writers.dicom_seg import write_dicom_seg
    from tests.builders import write_dicom_series

    series = write_dicom_series(tmp_path / "series", n=4, spacing=2.5, shape=(8, 6))
    labels = np.zeros((6, 8, 4), np.uint8)  # (column, row, slice) as segpipe reads a series
    labels[1:3, 2:5, 1] = 1
    labels[4, 6, 3] = 2
    with pytest.raises(SegpipeError, match="cannot make a DICOM-SEG"):
        write_dicom_seg(series, labels, {0: "background", 1: "tumour", 2: "edema"}, tmp_path / "seg.dcm")
    for path in series.iterdir():  # what every clinical series carries
        ds = pydicom.dcmread(path)
        ds.PatientName, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.SeriesNumber = "", 1
        ds.save_as(path)
    write_dicom_seg(series, labels, {0: "background", 1: "tumour", 2: "edema"}, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.Modality == "SEG" and [s.SegmentLabel for s in seg.SegmentSequence] == ["tumour", "edema"]
    source_uids = {pydicom.dcmread(p).SOPInstanceUID for p in series.iterdir()}
    referenced = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert referenced == source_uids
    frames = seg.pixel_array  # one binary frame per (segment, slice)
    assert frames.shape == (8, 8, 6) and int(frames.sum()) == int((labels > 0).sum())
    # find each frame by its segment and plane position: slice k of the series lies at z = 2.5 k mm
    where = {}
    for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        z = float(group.PlanePositionSequence[0].ImagePositionPatient[2])
        where[(int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber), round(z / 2.5))] = frames[i]
    assert where[(1, 1)][2:5, 1:3].all() and where[(1, 1)].sum() == 6  # tumour: rows 2-4, columns 1-2, slice 1
    assert where[(2, 3)][6, 4] == 1 and where[(2, 3)].sum() == 1  # edema: row 6, column 4, slice 3


def test_keep_going_skips_bad_cases_and_lists_them(tiny_model, synthetic_dataset, tmp_path):
    from click.testing import CliRunner

    from segpipe.cli import cli

    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("SYN_006.nii.gz", "SYN_007.nii.gz"):
        (inputs / name).write_bytes((synthetic_dataset / "imagesTs" / name).read_bytes())
    (inputs / "BROKEN.nii.gz").write_text("not an image")
    out = tmp_path / "out"
    strict = CliRunner().invoke(cli, ["infer", "-m", str(tiny_model), "-i", str(inputs), "-o", str(out), "-q"])
    assert strict.exit_code == 1 and "BROKEN.nii.gz" in strict.output
    result = CliRunner().invoke(cli, ["infer", "-m", str(tiny_model), "-i", str(inputs), "-o", str(out), "-q", "--keep-going"])
    assert result.exit_code == 1
    bad = inputs / "BROKEN.nii.gz"
    assert "skipped 1 case(s)" in result.output and f"  {bad}: cannot read image header" in result.output
    assert f"{bad}: {bad}:" not in result.output  # the path once
    assert sorted(p.name for p in out.iterdir()) == ["SYN_006.nii.gz", "SYN_007.nii.gz", "cases.csv"]
    import pandas as pd

    status = pd.read_csv(out / "cases.csv").set_index("case")["status"]
    assert status["BROKEN"] == "failed" and status["SYN_006"] == status["SYN_007"] == "ok"


def test_fused_channels_last_network_gives_the_masks_of_the_plain_one(tiny_model, synthetic_dataset, tmp_path):
    fast = infer(tiny_model, [synthetic_dataset], tmp_path / "fast", {"precision": "fp32"}, quiet=True).written
    plain = infer(tiny_model, [synthetic_dataset], tmp_path / "plain",
                  {"fuse": False, "channels_last": False, "reuse_memory": False, "precision": "fp32"}, quiet=True).written
    assert len(fast) == len(plain) > 0
    for a, b in zip(sorted(fast), sorted(plain)):
        x, y = np.asarray(nib.load(str(a)).dataobj), np.asarray(nib.load(str(b)).dataobj)
        assert x.shape == y.shape and np.mean(x == y) > 0.999  # float32 rounding may flip a tie
        assert len(np.unique(y)) > 1  # the tiny model predicts some tumour, so the comparison means something


def _trained_in(model: Path, precision: str, folder: Path) -> Path:
    """A copy of `model` whose config.yaml says it trained in `precision`."""
    assert "precision: fp32" in (model / "config.yaml").read_text()
    return model_with_config(model, folder, train={"precision": precision})


@pytest.mark.parametrize("speedup, chosen", [(3.0, "bf16"), (1.1, "fp32"), (0.5, "fp32")])
def test_auto_precision_follows_the_measured_bf16_speed(tiny_model, synthetic_dataset, tmp_path, monkeypatch,
                                                        speedup, chosen):
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: speedup)
    bf16_model = _trained_in(tiny_model, "bf16", tmp_path / "bf16_model")
    result = infer(bf16_model, [synthetic_dataset], tmp_path / "auto", {"precision": "auto"}, quiet=True)
    assert result.precision == chosen and result.written
    explicit = infer(bf16_model, [synthetic_dataset], tmp_path / "fp32", {"precision": "fp32"}, quiet=True)
    assert explicit.precision == "fp32"  # an explicit choice is never second-guessed


def test_auto_precision_keeps_an_fp32_trained_model_in_fp32(tiny_model, synthetic_dataset, tmp_path, monkeypatch):
    """Its validation scored fp32 masks; bf16, even where faster, would change them."""
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 3.0)
    assert precision_module.resolve_precision("auto", torch.device("cpu")) == "bf16"
    result = infer(tiny_model, [synthetic_dataset], tmp_path / "auto", {"precision": "auto"}, quiet=True)
    assert result.precision == "fp32" and result.written
    explicit = infer(tiny_model, [synthetic_dataset], tmp_path / "bf16", {"precision": "bf16"}, quiet=True)
    assert explicit.precision == "bf16"


def test_bf16_speed_probe_and_resolution(tmp_path, monkeypatch):
    speedup = precision_module.cpu_bf16_speedup(size=256, rounds=2)
    assert np.isfinite(speedup) and speedup > 0
    monkeypatch.setenv("SEGPIPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 3.0)
    assert precision_module.cpu_prefers_bf16()
    # measured once per machine: a later, different timing does not change the answer
    monkeypatch.setattr(precision_module, "cpu_bf16_speedup", lambda: 0.5)
    assert precision_module.cpu_prefers_bf16()
    (tmp_path / "cache" / "cpu_precision.json").write_text("not json")
    assert not precision_module.cpu_prefers_bf16()  # an unreadable cache is measured anew and rewritten
    assert not precision_module.cpu_prefers_bf16()
    cpu = torch.device("cpu")
    for name in ("fp32", "bf16", "fp16"):
        assert precision_module.resolve_precision(name, cpu) == name
    assert precision_module.resolve_precision("auto", cpu) in ("fp32", "bf16")
    assert precision_module.resolve_precision("auto", torch.device("meta")) == "fp32"


def test_a_side_map_of_a_case_is_not_replaced_without_overwrite(tiny_model, synthetic_dataset, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    users = out / "SYN_006_probabilities.nii.gz"
    users.write_bytes(b"the user's own map")
    result = infer(tiny_model, [synthetic_dataset], out, quiet=True, probabilities=True)
    assert users.read_bytes() == b"the user's own map" and users in result.skipped
    assert not (out / "SYN_006.nii.gz").exists() and (out / "SYN_007_probabilities.nii.gz").is_file()


def test_a_missing_best_checkpoint_of_a_validated_model_is_named_in_one_warning(tiny_model, prepared_dataset,
                                                                                 synthetic_dataset, tmp_path):
    """infer fell back to last.pt without a word; a model trained on every case has no best.pt to miss."""
    image = synthetic_dataset / "imagesTs" / "SYN_006.nii.gz"
    validated = Path(shutil.copytree(tiny_model, tmp_path / "validated"))
    (validated / "checkpoints" / "best.pt").unlink()
    result = infer(validated, [image], tmp_path / "a", quiet=True)
    epochs = int(tiny_config().train.epochs)
    assert [w for w in result.warnings if "best.pt" in w] == [
        f"{validated / 'checkpoints' / 'best.pt'}: missing although metrics.csv shows validation; "
        f"using last.pt (epoch {epochs}) instead"]
    every_case = tmp_path / "every_case"
    fit(prepared_dataset, every_case, tiny_config(**{"train.all_cases": "true", "train.epochs": "1"}), quiet=True)
    (every_case / "checkpoints" / "best.pt").unlink(missing_ok=True)
    assert not [w for w in infer(every_case, [image], tmp_path / "b", quiet=True).warnings if "best.pt" in w]
    assert not [w for w in infer(tiny_model, [image], tmp_path / "c", quiet=True).warnings if "best.pt" in w]


def test_keep_going_with_labels_and_json_scores_what_was_segmented_in_one_document(tiny_model, synthetic_dataset, tmp_path):
    """One case fails: the other is still scored, stdout holds one JSON document (with the failure
    and the evaluation's warnings), and the exit status is 1 so scripts notice."""
    import json

    from tests._corpus import run

    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz", inputs)
    (inputs / "SYN_007.nii.gz").write_bytes(b"not a NIfTI")
    result = run("infer", "-m", tiny_model, "-i", inputs, "-o", tmp_path / "out", "--keep-going", "--labels",
                 synthetic_dataset, "--json", "--precision", "fp32")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [f["input"] for f in document["failed"]] == [str(inputs / "SYN_007.nii.gz")]
    assert document["evaluation"]["patients"] == 1 and "warnings" in document["evaluation"] and "warnings" in document
    assert (tmp_path / "out" / "evaluation" / "per_patient.csv").is_file()

"""Integration on the real BraTS case in ../shared/data (skipped when it is absent)."""

import nibabel as nib
import numpy as np

from segpipe.pipeline import infer as infer_module
from segpipe.pipeline.fit import fit
from segpipe.pipeline.infer import infer
from segpipe.pipeline.preprocess import preprocess
from segpipe.transforms.preprocessing import preprocessing_chain
from tests.conftest import shared_data, tiny_config


def test_task01_sample_preprocess_then_infer_keeps_geometry(tmp_path, monkeypatch):
    root = shared_data("Task01_BrainTumour_sample")
    cfg = tiny_config(**{"train.epochs": "1", "train.iterations_per_epoch": "1", "train.patch_size": "[32,32,32]"})
    prepared = preprocess(root, tmp_path / "prep", cfg, quiet=True)
    assert prepared.plan["in_channels"] == 4 and prepared.plan["target_spacing"] == [1.0, 1.0, 1.0]
    fit(tmp_path / "prep", tmp_path / "model", cfg, quiet=True)  # any weights will do
    src = nib.load(str(root / "imagesTr" / "BRATS_900.nii.gz"))
    out = infer(tmp_path / "model", [root / "imagesTr" / "BRATS_900.nii.gz"], tmp_path / "pred",
                {"roi_size": [64, 64, 64], "sw_batch_size": 2}, quiet=True).written[0]
    mask = nib.load(str(out))
    assert out.name == "BRATS_900.nii.gz"
    assert mask.shape == (240, 240, 155) == src.shape[:3]
    assert np.array_equal(mask.affine, src.affine)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}

    # an oracle model (the reference label itself) comes back voxel for voxel
    label_path = root / "labelsTr" / "BRATS_900.nii.gz"

    def oracle(segmenter, image, sliding_window):
        chain = preprocessing_chain(segmenter.plan["preprocess"]["target_spacing"])
        return chain({"image": str(root / "imagesTr" / "BRATS_900.nii.gz"), "label": str(label_path)})["label"].as_tensor(), None

    monkeypatch.setattr(infer_module, "predict_labels", oracle)
    out = infer(tmp_path / "model", [root / "imagesTr" / "BRATS_900.nii.gz"], tmp_path / "oracle", quiet=True).written[0]
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), np.asarray(nib.load(str(label_path)).dataobj))

import numpy as np
import pytest
import torch
from monai.transforms.utils import map_binary_to_indices

from segpipe.transforms.augment import INDEX_KEYS, CropIndicesd, augmentations, training_chain
from segpipe.transforms.stats import IntensityStatsd


def test_training_chain_samples_patches_with_foreground():
    image = torch.randn(4, 20, 18, 10)
    label = torch.zeros(1, 20, 18, 10, dtype=torch.uint8)
    label[0, 15:18, 2:5, 7:9] = 2
    chain = training_chain([8, 8, 8], samples_per_volume=6, pos_neg_ratio=1e6)
    chain.set_random_state(seed=0)
    samples = chain({"image": image, "label": label})
    assert len(samples) == 6
    for s in samples:
        assert tuple(s["image"].shape) == (4, 8, 8, 8) and tuple(s["label"].shape) == (1, 8, 8, 8)
    # tumour is 0.1% of the volume; with foreground oversampling every patch holds some
    assert all(bool((s["label"] > 0).any()) for s in samples)


def test_the_crop_centres_follow_the_indices_found_once_and_no_sample_carries_them():
    """Patch centres come from the case's indices: tumour patches hold tumour, background patches are
    drawn across the background, and the indices never reach a batch."""
    label = torch.zeros(1, 40, 40, dtype=torch.uint8)
    label[0, 30:34, 5:9] = 1
    chain = training_chain([8, 8], samples_per_volume=400, pos_neg_ratio=1.0)
    chain.set_random_state(seed=0)
    samples = chain({"image": torch.randn(1, 40, 40), "label": label})
    assert all(not set(INDEX_KEYS) & s.keys() for s in samples)
    with_tumour = sum(bool(s["label"].any()) for s in samples)
    assert 180 < with_tumour < 260, "about half the patches are centred on tumour, as pos:neg = 1:1 asks"


def test_crop_indices_are_monai_s_own_found_once_and_thinned_to_the_limit():
    """The indices RandCropByPosNegLabeld would search for on every draw, found once; a class with more
    than the limit is thinned to a random subset of at most the limit, the same on every run."""
    label = torch.zeros(1, 30, 20, 10, dtype=torch.uint8)  # prepared labels are uint8
    label[0, :4, :5, :] = 1  # 200 foreground voxels of 6000
    case = {"image": torch.zeros(1, 30, 20, 10), "label": label}
    fg_monai, bg_monai = (np.asarray(i) for i in map_binary_to_indices(label))
    found = CropIndicesd(limit=100_000)(case)
    assert np.array_equal(found["fg_indices"], fg_monai) and np.array_equal(found["bg_indices"], bg_monai)
    thinned = CropIndicesd(limit=1000)(case)
    fg, bg = thinned["fg_indices"], thinned["bg_indices"]
    assert fg.size == 200 and 900 < bg.size <= 1000 and fg.dtype == np.int32
    assert (label.numpy().ravel()[fg] == 1).all() and np.isin(bg, bg_monai).all()
    assert np.unique(bg).size == bg.size and bg.min() < 600 and bg.max() > 5400, "a random subset, not the first voxels"
    assert np.array_equal(CropIndicesd(limit=1000)(case)["bg_indices"], bg), "the same on every run: CacheDataset keeps it"


def test_training_chain_pads_small_cases_and_works_in_2d():
    chain = training_chain([16, 16], samples_per_volume=2)
    samples = chain({"image": torch.randn(1, 10, 12), "label": torch.ones(1, 10, 12)})
    assert tuple(samples[0]["image"].shape) == (1, 16, 16)


@pytest.mark.parametrize("name", ["histogram_shift", "bias_field", "blur", "low_resolution", "inverted_gamma"])
@pytest.mark.parametrize("shape", [(2, 24, 20), (1, 12, 10, 8)])
def test_intensity_appearance_augmentations_change_the_image_only(name, shape):
    """Intensity remapping, bias fields, blur, lower resolution, inverted gamma: the image changes
    on some draws, never its shape, and the label never."""
    image = torch.randn(*shape) + torch.linspace(0, 2, shape[-1])
    label = (torch.rand(1, *shape[1:]) > 0.7).to(torch.uint8)
    (step,) = augmentations([name], shape[1:])
    step.set_random_state(seed=0)
    changed = 0
    for _ in range(20):
        out = step({"image": image.clone(), "label": label.clone()})
        assert out["image"].shape == image.shape and torch.isfinite(torch.as_tensor(out["image"])).all()
        assert torch.equal(torch.as_tensor(out["label"]), label)
        changed += not torch.allclose(torch.as_tensor(out["image"]), image)
    assert 0 < changed < 20  # applied with a probability


def test_intensity_stats_over_the_labelled_foreground():
    image = torch.zeros(2, 10, 10, 10)
    image[0, 2:8, 2:8, 2:8] = 5.0
    image[1] = torch.arange(1000, dtype=torch.float32).reshape(10, 10, 10)
    label = torch.zeros(1, 10, 10, 10)
    label[0, 4:6, 4:6, 4:6] = 1
    out = IntensityStatsd("image", mask_key="label")({"image": image, "label": label})
    c0, c1 = out["intensity_stats"]
    assert c0["mean"] == 5.0 and c0["std"] == 0.0 and c0["voxels"] == 8
    expected = image[1][label[0] > 0].numpy()
    assert c1["mean"] == pytest.approx(expected.mean()) and c1["p99_5"] == pytest.approx(np.percentile(expected, 99.5))


def test_intensity_stats_fall_back_to_nonzero_voxels():
    image = torch.zeros(1, 4, 4, 4)
    image[0, :2] = 3.0
    out = IntensityStatsd("image", mask_key="label")({"image": image, "label": torch.zeros(1, 4, 4, 4)})
    assert out["intensity_stats"][0]["voxels"] == 32 and out["intensity_stats"][0]["mean"] == 3.0


def test_figshare_2d_keeps_the_air_around_the_head_apart_from_the_tissue(tmp_path):
    """figshare slices keep the skull and the air around it. A z-score over the non-zero pixels
    leaves that air at 0, the tissue's mean; the z-score over the whole slice (what
    `normalize_nonzero: auto` chooses for them, tests/artifacts/test_normalization.py) puts it
    below every tissue pixel, where the network cannot mistake it for tissue."""
    from segpipe.data.mat_file import write_figshare_mat
    from segpipe.transforms.preprocessing import chain_for

    yy, xx = np.mgrid[:64, :64]
    head = (yy - 32) ** 2 / 28**2 + (xx - 32) ** 2 / 22**2 < 1  # air in the corners, inside the crop box
    image = np.where(head, np.random.default_rng(0).integers(40, 200, (64, 64)), 0).astype(np.int16)
    path = write_figshare_mat(tmp_path / "1.mat", image, head & (yy > 40), pid="P1")

    def prepared(nonzero: bool) -> np.ndarray:
        settings = {"target_spacing": None, "orientation": None, "crop_foreground": True, "normalize_nonzero": nonzero}
        return np.asarray(chain_for(settings, "figshare", with_label=False)({"image": str(path)})["image"])[0]

    whole, nonzero = prepared(False), prepared(True)
    air = whole[0, 0]
    assert air == whole.min() and air < whole[whole != air].min() - 0.5
    assert nonzero[0, 0] == 0 and nonzero.min() < 0 < nonzero.max()  # air in the middle of the tissue's values

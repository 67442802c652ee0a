"""Tumour carried between the samples of a batch (`train.mix_prob`)."""

from __future__ import annotations

import pytest
import torch

from segpipe.config import load_config
from segpipe.errors import SegpipeError
from segpipe.training.mixing import carve_mix


def _batch(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Four samples; only sample 1 holds tumour (labels 1 and 2 in a block)."""
    image = torch.randn(4, 2, *spatial)
    label = torch.zeros(4, 1, *spatial)
    block = (1, 0) + tuple(slice(4, 8) for _ in spatial)
    label[block] = 1
    label[(1, 0) + tuple(slice(6, 8) for _ in spatial)] = 2
    return image, label


@pytest.mark.parametrize("spatial", [(16, 16), (12, 12, 12)])
def test_every_other_sample_takes_the_donor_s_tumour_and_margin_image_and_label_alike(spatial):
    torch.manual_seed(0)
    image, label = _batch(spatial)
    mixed_image, mixed_label = carve_mix(image, label, prob=1.0, max_margin=2)
    donor = label[1, 0] > 0
    for i in (0, 2, 3):
        changed = (mixed_image[i] != image[i]).any(0)
        # the donor's tumour, its labels and its pixels, plus a margin of at most 2 voxels
        assert torch.equal(mixed_label[i, 0][donor], label[1, 0][donor])
        assert torch.equal(mixed_image[i][:, donor], image[1][:, donor])
        assert changed[donor].all()
        grown = torch.nn.functional.max_pool2d if len(spatial) == 2 else torch.nn.functional.max_pool3d
        within = grown(donor[None, None].float(), 5, stride=1, padding=2)[0, 0].bool()
        assert not changed[~within].any()
        assert torch.equal(mixed_image[i][:, changed], image[1][:, changed])
    # the donor is not its own donor, and the inputs are left as they were
    assert torch.equal(mixed_image[1], image[1]) and torch.equal(mixed_label[1], label[1])
    assert torch.equal(_batch(spatial)[1], label)


def test_no_mixing_at_probability_zero_or_without_tumour_in_the_batch():
    image, label = _batch((16, 16))
    assert carve_mix(image, label, prob=0.0, max_margin=4)[0] is image
    empty = torch.zeros_like(label)
    out_image, out_label = carve_mix(image, empty, prob=1.0, max_margin=4)
    assert out_image is image and out_label is empty


def test_the_share_of_mixed_samples_follows_the_probability():
    torch.manual_seed(1)
    image = torch.randn(400, 1, 8, 8)
    label = torch.zeros(400, 1, 8, 8)
    label[:200, 0, 2:4, 2:4] = 1  # half the samples carry tumour at one place
    mixed = carve_mix(image, label, prob=0.3, max_margin=0)[1]
    gained = ((mixed[200:] > 0).flatten(1).any(1)).float().mean().item()
    assert 0.2 < gained < 0.4  # tumour-free samples that received a donor's tumour


@pytest.mark.parametrize("key, value", [("train.mix_prob", "1.5"), ("train.mix_prob", "-0.1"), ("train.mix_margin", "-1")])
def test_out_of_range_mixing_settings_are_refused_naming_the_key(key, value):
    with pytest.raises(SegpipeError, match=key.replace(".", r"\.")):
        load_config(None, [f"{key}={value}"])

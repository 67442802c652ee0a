"""The shared prediction path: mirrored copies of 2D images run as one batch of windows and
give what one pass per mirrored copy gives."""

import pytest
import torch

from segpipe.config import InferConfig
from segpipe.errors import SegpipeError
from segpipe.networks import build_network
from segpipe.prediction import labels_of, mean_probabilities, mirror_axes, window_logits
from segpipe.transforms.regions import region_chain


def _one_pass_per_copy(net, x, roi, icfg, out_channels):
    total = 0
    flips = mirror_axes(x.ndim - 2, icfg.tta)
    for axes in flips:
        logits = window_logits(net, torch.flip(x, axes) if axes else x, roi, icfg, x.ndim - 2, out_channels, False)
        p = torch.softmax(logits, dim=1)
        total = total + (torch.flip(p, axes) if axes else p)
    return total / len(flips)


@pytest.mark.parametrize("shape", [(1, 1, 40, 50), (2, 1, 24, 20)], ids=["sliding", "smaller-than-window"])
def test_mirrored_2d_copies_in_one_batch_equal_one_pass_each(shape):
    torch.manual_seed(0)
    net = build_network("unet", spatial_dims=2, in_channels=1, out_channels=3, filters=4, depth=2).eval()
    x = torch.randn(shape)
    x[..., :3, :] = 0  # an empty border: skipped windows take part too
    icfg = InferConfig(tta=True, overlap=0.5, sw_batch_size=3)
    with torch.no_grad():
        batched = mean_probabilities([net], x, [32, 32], icfg, 2, 3, regions=False)
        separate = _one_pass_per_copy(net, x, [32, 32], icfg, 3)
    assert batched.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched, _one_pass_per_copy(net, x, [32, 32], InferConfig(tta=False), 3))


def test_labels_are_the_first_of_tied_maxima():
    probs = torch.softmax(torch.randn(4, 7, 9, 5), 0)
    probs[:, 0, 0, 0] = 0.25  # four-way tie
    probs[2:, 1, 0, 0] = torch.tensor([0.5, 0.5])  # two-way tie
    probs[:2, 1, 0, 0] = 0.0
    labels = labels_of(probs, None)
    assert labels.dtype == torch.uint8 and labels.shape == (1, 7, 9, 5)
    assert torch.equal(labels[0].long(), probs.argmax(0))
    assert labels[0, 0, 0, 0] == 0 and labels[0, 1, 0, 0] == 2


def test_a_threshold_decides_on_the_summed_foreground_probability():
    # three voxels, classes background / 1 / 2
    probs = torch.tensor([[0.7, 0.45, 0.95], [0.2, 0.3, 0.03], [0.1, 0.25, 0.02]])[..., None]
    assert labels_of(probs, None)[0, :, 0].tolist() == [0, 0, 0]  # the argmax: background everywhere
    assert labels_of(probs, None, 0.5)[0, :, 0].tolist() == [0, 1, 0]  # 0.55 of foreground, mostly label 1
    assert labels_of(probs, None, 0.25)[0, :, 0].tolist() == [1, 1, 0]
    assert labels_of(probs, None, 0.01)[0, :, 0].tolist() == [1, 1, 1]
    assert labels_of(probs, None, 0.25).dtype == torch.uint8


def test_with_one_label_the_threshold_is_the_tumour_probability_and_half_is_the_argmax():
    binary = torch.softmax(torch.randn(2, 60, 40, generator=torch.Generator().manual_seed(5)), 0)
    for t in (0.1, 0.3, 0.7):
        assert torch.equal(labels_of(binary, None, t)[0].bool(), binary[1] > t)
    assert torch.equal(labels_of(binary, None, 0.5), labels_of(binary, None))


def test_a_threshold_applies_to_each_region_of_a_region_model():
    chain = region_chain({"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}, [1, 2, 3])
    probs = torch.tensor([[0.9, 0.3, 0.3], [0.3, 0.3, 0.1], [0.1, 0.1, 0.1]])[..., None]  # regions x voxels
    assert labels_of(probs, chain)[0, :, 0].tolist() == [1, 0, 0]
    assert labels_of(probs, chain, 0.2)[0, :, 0].tolist() == [2, 2, 1]


@pytest.mark.parametrize("sliding", [True, False], ids=["windows", "whole-image"])
def test_windows_whose_activations_exceed_the_device_memory_are_refused(monkeypatch, sliding):
    """A forward pass that would need more memory than the machine has is refused in one line
    (the process would be killed without a word), estimated from the network's measured peak."""
    import segpipe.limits

    net = build_network("unet", spatial_dims=3, in_channels=1, out_channels=2, filters=4, depth=2).eval()
    x = torch.randn(1, 1, 24, 24, 16)
    icfg = InferConfig(sw_batch_size=2)
    need = 4 * (2 * 16**3 if sliding else 24 * 24 * 16) * (1 + 2 + net.peak_per_voxel)
    monkeypatch.setattr(segpipe.limits, "device_memory", lambda device=None: need - 1)
    what = (r"infer.roi_size \[16, 16, 16\] with infer.sw_batch_size 2" if sliding
            else r"the whole image \[24, 24, 16\] at once")
    with pytest.raises(SegpipeError, match=rf"{what}: the network's activations need about .* more than the .* of "
                                           r"memory on cpu"):
        window_logits(net, x, [16, 16, 16], icfg, 3, 2, False, sliding_window=sliding)
    monkeypatch.setattr(segpipe.limits, "device_memory", lambda device=None: need)
    with torch.no_grad():
        logits = window_logits(net, x, [16, 16, 16], icfg, 3, 2, False, sliding_window=sliding)
    assert logits.shape == (1, 2, 24, 24, 16)


def test_a_sweep_of_too_many_windows_is_refused():
    """An overlap of 0.99 over 16-voxel windows: 426465 windows of a 96 x 96 x 80 volume."""
    net = build_network("unet", spatial_dims=3, in_channels=1, out_channels=2, filters=4, depth=2).eval()
    x = torch.zeros(1, 1, 96, 96, 80)
    with pytest.raises(SegpipeError, match=r"infer.roi_size \[16, 16, 16\] with infer.overlap 0.99: 426465 windows over "
                                           r"an image of \[96, 96, 80\], more than 100000"):
        window_logits(net, x, [16, 16, 16], InferConfig(overlap=0.99), 3, 2, False)
    with torch.no_grad():
        assert window_logits(net, x, [16, 16, 16], InferConfig(overlap=0.5), 3, 2, False).shape == (1, 2, 96, 96, 80)

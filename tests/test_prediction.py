"""The shared prediction path: mirrored copies of 2D images run as one batch of windows and
give what one pass per mirrored copy gives."""

import pytest
import torch

from segpipe.config import InferConfig
from segpipe.networks import build_network
from segpipe.prediction import labels_of, mean_probabilities, mirror_axes, window_logits


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

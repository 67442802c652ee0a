"""The U-Net's strided stem: same interface as the Ronneberger form, a fraction of its cost."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from segpipe.errors import SegpipeError
from segpipe.networks import build_network


def _flops(net: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops()


def test_strided_stem_keeps_shapes_and_costs_under_half():
    x = torch.randn(2, 4, 70, 83)
    plain = build_network("unet", spatial_dims=2, in_channels=4, out_channels=3).eval()
    strided = build_network("unet", spatial_dims=2, in_channels=4, out_channels=3, stem="strided").eval()
    assert strided(x).shape == plain(x).shape == (2, 3, 70, 83)
    assert _flops(strided, x) < 0.5 * _flops(plain, x)
    torch.jit.script(strided)  # exportable like the plain form


def test_strided_stem_deep_supervision_sizes_and_3d():
    net = build_network("unet", spatial_dims=2, in_channels=1, out_channels=2, depth=3, stem="strided", deep_supervision=True)
    outputs = net.train()(torch.randn(1, 1, 40, 36))
    assert [tuple(o.shape[2:]) for o in outputs] == [(40, 36), (10, 9), (5, 5)]
    net3d = build_network("unet", spatial_dims=3, in_channels=1, out_channels=2, filters=4, depth=2, stem="strided")
    assert net3d.eval()(torch.randn(1, 1, 20, 18, 17)).shape == (1, 2, 20, 18, 17)
    with pytest.raises(SegpipeError, match="stem"):
        build_network("unet", spatial_dims=2, in_channels=1, out_channels=2, stem="wide")


def test_ready_2d_configs_and_the_seeds_recipes():
    from segpipe.config import load_config
    from segpipe.configs import resolve_config

    cfg = {name: load_config(resolve_config(name)) for name in ("msd_2d", "msd_2d_seed", "figshare_2d", "figshare_2d_seed")}
    assert cfg["msd_2d"].model.stem == cfg["figshare_2d"].model.stem == "strided"
    assert cfg["msd_2d_seed"].model.stem == cfg["figshare_2d_seed"].model.stem == "plain"  # the Ronneberger form
    # batch norm: a 64x80 patch leaves instance norm 6 pixels at the bottom of the network
    assert cfg["msd_2d"].model.norm == cfg["figshare_2d"].model.norm == "batch"
    assert cfg["figshare_2d_seed"].train.patch_size == [256, 256] and cfg["figshare_2d_seed"].train.lr == 1e-4
    assert max(cfg["figshare_2d"].train.patch_size) <= 160 and cfg["figshare_2d"].train.pos_neg_ratio > 1
    assert cfg["msd_2d"].infer.tta and cfg["figshare_2d"].infer.tta  # mirrored copies gained on both tasks
    assert {"rotate90", "gaussian_noise", "adjust_contrast", "histogram_shift", "bias_field", "blur", "low_resolution", "inverted_gamma"} <= set(cfg["figshare_2d"].train.augment)  # kept on figshare (docs/benchmarks.md)

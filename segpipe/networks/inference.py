"""Inference-only rewrites of a trained network that give the same outputs faster.

- A batch norm right after a convolution is folded into the convolution's weights
  (`torch.nn.utils.fusion.fuse_conv_bn_eval`).
- An instance norm right after a convolution, and the ReLU after it, become one
  :class:`FusedInstanceNormReLU` that works in place on the convolution's output and
  in any memory layout; PyTorch's instance norm copies a channels-last tensor to the
  standard layout and back, which costs more than the convolution at full resolution.

The rewritten network is for `eval()` only; checkpoints keep the original modules.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from segpipe.networks.layers import channels_last_format

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)
_INSTANCE_NORMS = (nn.InstanceNorm2d, nn.InstanceNorm3d)


class FusedInstanceNormReLU(nn.Module):
    """Instance norm (biased variance, as PyTorch's), optionally followed by ReLU, in place.

    Statistics are computed in float32 with two passes (mean, then centred squares),
    which is both faster and more accurate here than `torch.var_mean`.

    Args:
        norm: The trained instance norm (affine or not, no running statistics).
        relu: Whether a ReLU follows.
    """

    def __init__(self, norm: nn.modules.instancenorm._InstanceNorm, relu: bool) -> None:
        super().__init__()
        self.eps = norm.eps
        self.relu = relu
        self.weight = norm.weight
        self.bias = norm.bias

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise `x` (N, C, *spatial), overwriting it (inference only: no gradients)."""
        dims = tuple(range(2, x.ndim))
        count = x[0, 0].numel()
        xf = x.float()
        mean = xf.sum(dims, keepdim=True) / count
        centred = xf - mean
        var = (centred * centred).sum(dims, keepdim=True) / count
        del centred, xf
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.float().view(1, -1, *[1] * len(dims))
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.float().view(1, -1, *[1] * len(dims))
        out = torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype), out=x)
        return out.clamp_min_(0) if self.relu else out


def _rewrite_sequential(seq: nn.Sequential, instance_norms: bool) -> None:
    children = list(seq.children())
    for i in range(len(children) - 1):
        conv, norm = children[i], children[i + 1]
        if not isinstance(conv, _CONVS):
            continue
        if isinstance(norm, _BATCH_NORMS) and norm.track_running_stats and norm.running_mean is not None:
            transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
            seq[i] = fuse_conv_bn_eval(conv, norm, transpose=transposed)
            seq[i + 1] = nn.Identity()
        elif instance_norms and isinstance(norm, _INSTANCE_NORMS) and not norm.track_running_stats:
            relu = i + 2 < len(children) and isinstance(children[i + 2], nn.ReLU)
            seq[i + 1] = FusedInstanceNormReLU(norm, relu)
            if relu:
                seq[i + 2] = nn.Identity()


@torch.no_grad()
def optimize_for_inference(net: nn.Module, channels_last: bool = False) -> nn.Module:
    """A rewritten copy of `net` in eval mode (see the module docstring); `net` is untouched.

    Args:
        net: A trained network.
        channels_last: Also convert weights to the channels-last memory format. Instance
            norms are fused only then: in the standard layout PyTorch's own is as fast.
    """
    net = copy.deepcopy(net).eval()
    for module in list(net.modules()):
        if isinstance(module, nn.Sequential):
            _rewrite_sequential(module, instance_norms=channels_last)
    if channels_last:
        dims = next((m.weight.ndim - 2 for m in net.modules() if isinstance(m, _CONVS)), 2)
        net = net.to(memory_format=channels_last_format(dims))
    return net

"""Dimension-agnostic building blocks (2D or 3D) shared by the segpipe networks."""

from __future__ import annotations

import torch
from torch import nn

NORMS: tuple[str, ...] = ("batch", "instance")


def check_spatial_dims(spatial_dims: int) -> None:
    """Raise ValueError unless ``spatial_dims`` is 2 or 3.

    Args:
        spatial_dims: Number of spatial dimensions requested.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """The channels-last memory format of a 2D (NHWC) or 3D (NDHWC) network's tensors."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    bias: bool = True,
) -> nn.Module:
    """Convolution with 'same' padding for odd kernels (before striding).

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Cubic/square kernel size.
        stride: Stride in every spatial dimension.
        bias: Whether to learn an additive bias.
    """
    cls = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)


def transposed_conv(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int,
    bias: bool = True,
) -> nn.Module:
    """Transposed convolution that multiplies each spatial size exactly by ``stride``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel size (>= stride).
        stride: Upsampling factor.
        bias: Whether to learn an additive bias.
    """
    cls = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    # out = (in - 1) * s - 2p + k + op; choose p, op so that out == in * s.
    padding = (kernel_size - stride + 1) // 2
    output_padding = stride - kernel_size + 2 * padding
    return cls(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        bias=bias,
    )


def norm(spatial_dims: int, name: str, channels: int) -> nn.Module:
    """Normalisation layer by name.

    Args:
        spatial_dims: 2 or 3.
        name: "batch" or "instance" (instance norm is affine).
        channels: Number of channels to normalise.
    """
    if name == "batch":
        return nn.BatchNorm2d(channels) if spatial_dims == 2 else nn.BatchNorm3d(channels)
    if name == "instance":
        cls = nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d
        return cls(channels, affine=True)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {name!r}")


def check_norm(name: str) -> None:
    """Raise ValueError for an unknown normalisation name.

    Args:
        name: Normalisation name to check.
    """
    if name not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {name!r}")


def check_dropout(p: float) -> None:
    """Raise ValueError unless ``0 <= p < 1``.

    Args:
        p: Dropout probability.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p!r}")


def dropout(spatial_dims: int, p: float) -> nn.Module:
    """Channel-wise (spatial) dropout, or identity when ``p == 0``.

    Args:
        spatial_dims: 2 or 3.
        p: Probability of zeroing a whole channel.
    """
    if p == 0.0:
        return nn.Identity()
    return nn.Dropout2d(p) if spatial_dims == 2 else nn.Dropout3d(p)


def max_pool(spatial_dims: int, kernel_size: int, stride: int, padding: int = 0) -> nn.Module:
    """Max pooling layer.

    Args:
        spatial_dims: 2 or 3.
        kernel_size: Pooling window.
        stride: Pooling stride.
        padding: Implicit negative-infinity padding.
    """
    cls = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
    return cls(kernel_size, stride=stride, padding=padding)


class ConvNormAct(nn.Sequential):
    """Convolution, normalisation and ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        norm_name: "batch" or "instance".
        kernel_size: Kernel size.
        stride: Stride.
        act: Whether to end with a ReLU.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm_name: str,
        kernel_size: int = 3,
        stride: int = 1,
        act: bool = True,
    ) -> None:
        # The norm's own shift makes a convolution bias redundant.
        layers = [
            conv(spatial_dims, in_channels, out_channels, kernel_size, stride, bias=False),
            norm(spatial_dims, norm_name, out_channels),
        ]
        if act:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)

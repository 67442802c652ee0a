"""U-Net (Ronneberger et al., 2015) for 2D or 3D images."""

from __future__ import annotations

from typing import List, Union

import torch
from torch import nn

from segpipe.networks.layers import (
    ConvNormAct,
    check_dropout,
    check_norm,
    check_spatial_dims,
    conv,
    dropout,
    max_pool,
    norm,
    transposed_conv,
)
from segpipe.networks.padding import crop_to, pad_to_multiple

# Widest level, as in nnU-Net: keeps deep 3D models within memory.
MAX_FILTERS = {2: 512, 3: 320}


class UNetBlock(nn.Module):
    """Two 3x3 convolutions with norm + ReLU, optionally as a residual unit.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        norm_name: "batch" or "instance".
        dropout_p: Channel dropout probability applied to the block's output.
        residual: Add a (projected when the widths differ) shortcut before the last ReLU.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        norm_name: str,
        dropout_p: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, norm_name)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, norm_name, act=not residual)
        self.shortcut: nn.Module = nn.Identity()
        if residual and in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(spatial_dims, in_channels, out_channels, kernel_size=1, bias=False),
                norm(spatial_dims, norm_name, out_channels),
            )
        self.act = nn.ReLU(inplace=True) if residual else nn.Identity()
        self.dropout = dropout(spatial_dims, dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Input (N, C_in, *spatial).
        """
        y = self.conv2(self.conv1(x))
        if self.residual:
            y = self.act(y + self.shortcut(x))
        return self.dropout(y)


class UpBlock(nn.Module):
    """2x transposed-convolution upsampling, skip concatenation, then a :class:`UNetBlock`.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Channels of the coarser input.
        skip_channels: Channels of the skip connection (also the output width).
        norm_name: "batch" or "instance".
        dropout_p: Channel dropout probability.
        residual: Use a residual unit after concatenation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        skip_channels: int,
        norm_name: str,
        dropout_p: float,
        residual: bool,
    ) -> None:
        super().__init__()
        self.up = transposed_conv(spatial_dims, in_channels, skip_channels, kernel_size=2, stride=2)
        self.block = UNetBlock(spatial_dims, 2 * skip_channels, skip_channels, norm_name, dropout_p, residual)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x`` and fuse it with ``skip``.

        Args:
            x: Coarser features (N, C_in, *s).
            skip: Encoder features (N, C_skip, *2s).
        """
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net encoder-decoder with skip concatenation, for 2D or 3D inputs.

    Each of the ``depth + 1`` levels holds two 3x3(x3) convolutions with norm + ReLU
    (or a residual unit). The encoder downsamples with 2x max pooling; the decoder
    upsamples with 2x transposed convolutions and concatenates the encoder features
    of the same level. Level ``k`` has ``min(filters * 2**k, cap)`` channels, with
    cap = 512 in 2D and 320 in 3D. A 1x1 convolution gives the logits (no softmax).

    Any spatial size is accepted: the input is zero-padded at the high end of each
    axis to a multiple of ``2**depth`` and the output is cropped back to the input's
    spatial size. The pad and crop sizes come from the input's shape, so the model can be
    scripted, traced (tracing records them as shape operations) and exported to ONNX.

    Deep supervision adds 1x1 heads to the decoder levels 1 .. depth-1 (level k is
    downsampled 2**k times). In training mode ``forward`` then returns a list: the
    full-resolution logits first, then the auxiliary logits from finest to coarsest;
    the auxiliary output of level k has spatial size ``ceil(size / 2**k)`` (it covers
    the input, not the padding). In eval mode a single tensor is returned.

    ``stem="strided"`` is a cheaper variant for CPU budgets: a stride-2 convolution and a
    3x3 convolution take the input to half resolution, where all ``depth + 1`` levels run,
    and a 2x transposed convolution with one 3x3 convolution brings the features back to
    full resolution before the head. Per sample it costs about a third of the plain
    (Ronneberger) form, which stays the default.

    Parameter counts with the defaults (filters=16, depth=4, instance norm),
    in_channels=4, out_channels=4: 2D 1,942,772; 3D 5,647,732.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels (e.g. MRI modalities).
        out_channels: Output channels (classes).
        filters: Channels at full resolution; doubled at each level up to the cap.
        depth: Number of 2x downsamplings (>= 1).
        norm: "batch" or "instance" (affine instance norm).
        dropout: Channel dropout probability after every conv block.
        residual: Use residual units instead of plain double convolutions.
        deep_supervision: Add auxiliary heads on the lower decoder levels.
        stem: "plain" (the first level at full resolution) or "strided" (every level at half resolution).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        filters: int = 16,
        depth: int = 4,
        norm: str = "instance",
        dropout: float = 0.0,
        residual: bool = False,
        deep_supervision: bool = False,
        stem: str = "plain",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        if stem not in ("plain", "strided"):
            raise ValueError(f"stem must be 'plain' or 'strided', got {stem!r}")
        check_norm(norm)
        check_dropout(dropout)
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        if filters < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("filters, in_channels and out_channels must be >= 1")
        self.spatial_dims = spatial_dims
        self.depth = depth
        self.offset = 1 if stem == "strided" else 0  # downsamplings before the first level
        self.multiple = 2 ** (depth + self.offset)
        self.deep_supervision = deep_supervision
        widths = [min(filters * 2**level, MAX_FILTERS[spatial_dims]) for level in range(depth + 1)]
        self.widths = widths
        # float32 values per input voxel a forward pass holds at its peak, inference mode (measured,
        # bench/bench_activation_memory.py): the full-resolution level's features, its skip and concatenation
        self.peak_per_voxel = (5 if stem == "strided" else 9) * widths[0]

        self.stem: nn.Module = UNetBlock(spatial_dims, in_channels, widths[0], norm, dropout, residual)
        self.full_resolution: nn.Module = nn.Identity()
        if stem == "strided":
            self.stem = nn.Sequential(
                ConvNormAct(spatial_dims, in_channels, widths[0], norm, stride=2),
                ConvNormAct(spatial_dims, widths[0], widths[0], norm),
            )
            self.full_resolution = nn.Sequential(
                transposed_conv(spatial_dims, widths[0], widths[0], kernel_size=2, stride=2),
                ConvNormAct(spatial_dims, widths[0], widths[0], norm),
            )
        self.pool = max_pool(spatial_dims, kernel_size=2, stride=2)
        self.encoder = nn.ModuleList(
            [UNetBlock(spatial_dims, widths[k - 1], widths[k], norm, dropout, residual) for k in range(1, depth + 1)]
        )
        # decoder[i] produces level depth-1-i (coarsest first).
        self.decoder = nn.ModuleList(
            [UpBlock(spatial_dims, widths[k + 1], widths[k], norm, dropout, residual) for k in range(depth - 1, -1, -1)]
        )
        self.head = conv(spatial_dims, widths[0], out_channels, kernel_size=1)
        # aux_heads[j] reads decoder level j + 1 (finest first).
        n_aux = depth - 1 if deep_supervision else 0
        self.aux_heads = nn.ModuleList(
            [conv(spatial_dims, widths[k], out_channels, kernel_size=1) for k in range(1, n_aux + 1)]
        )

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Compute logits.

        Args:
            x: Input batch (N, in_channels, *spatial), any spatial size.

        Returns:
            Logits (N, out_channels, *spatial), or in training mode with deep
            supervision a list of them (full resolution first, see class docstring).
        """
        sizes: List[int] = list(x.shape[2:])
        h = self.stem(pad_to_multiple(x, self.multiple))
        skips: List[torch.Tensor] = [h]
        for block in self.encoder:
            h = block(self.pool(h))
            skips.append(h)
        levels: List[torch.Tensor] = []
        for i, up in enumerate(self.decoder):
            h = up(h, skips[self.depth - 1 - i])
            levels.append(h)
        out = crop_to(self.head(self.full_resolution(h)), sizes)
        if not (self.training and self.deep_supervision):
            return out
        outputs: List[torch.Tensor] = [out]
        for j, aux in enumerate(self.aux_heads):
            level = j + 1
            factor = 1 << (level + self.offset)
            aux_sizes = [(s + factor - 1) // factor for s in sizes]
            # levels is ordered coarsest first, ending at level 0.
            outputs.append(crop_to(aux(levels[self.depth - 1 - level]), aux_sizes))
        return outputs

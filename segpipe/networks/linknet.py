"""LinkNet (Chaurasia & Culurciello, 2017) for 2D or 3D images."""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from segpipe.networks.layers import (
    ConvNormAct,
    check_dropout,
    check_norm,
    check_spatial_dims,
    conv,
    max_pool,
    transposed_conv,
)
from segpipe.networks.layers import dropout as channel_dropout
from segpipe.networks.layers import norm as norm_layer
from segpipe.networks.padding import crop_to, pad_to_multiple


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with norm and an identity/projection shortcut.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first convolution (and of the projection).
        norm_name: "batch" or "instance".
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int, norm_name: str) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(spatial_dims, in_channels, out_channels, norm_name, stride=stride)
        self.conv2 = ConvNormAct(spatial_dims, out_channels, out_channels, norm_name, act=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv(spatial_dims, in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                norm_layer(spatial_dims, norm_name, out_channels),
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block.

        Args:
            x: Input (N, C_in, *spatial).
        """
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class DecoderBlock(nn.Sequential):
    """LinkNet decoder block: 1x1 conv to m/4, 3x3 transposed conv, 1x1 conv to n.

    Every convolution is followed by norm + ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: m, the input channels.
        out_channels: n, the output channels.
        stride: Upsampling factor of the transposed convolution (1 or 2).
        norm_name: "batch" or "instance".
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int, norm_name: str) -> None:
        mid = max(in_channels // 4, 1)
        super().__init__(
            ConvNormAct(spatial_dims, in_channels, mid, norm_name, kernel_size=1),
            transposed_conv(spatial_dims, mid, mid, kernel_size=3, stride=stride, bias=False),
            norm_layer(spatial_dims, norm_name, mid),
            nn.ReLU(inplace=True),
            ConvNormAct(spatial_dims, mid, out_channels, norm_name, kernel_size=1),
        )


class LinkNet(nn.Module):
    """LinkNet: ResNet-18 style encoder, light decoder, encoder features added (not concatenated).

    Initial block: 7x7 stride-2 convolution + norm + ReLU and 3x3 stride-2 max pooling.
    Encoder: four stages of two basic blocks with ``filters * (1, 2, 4, 8)`` channels
    (64/128/256/512 by default), stride 2 in stages 2-4. Decoder block ``i`` maps the
    width of stage ``i`` to that of stage ``i - 1`` and upsamples 2x; its output is
    added to the output of encoder stage ``i - 1``. Decoder block 1 keeps the
    resolution (stage 1 does not downsample), so the final "full convolution" block
    - 3x3 stride-2 transposed conv to ``filters / 2``, 3x3 conv, 2x2 stride-2
    transposed conv to ``out_channels`` - returns to the input resolution. Every
    convolution except the last is followed by norm + ReLU. Output: logits.

    Any spatial size is accepted: the input is zero-padded at the high end of each
    axis to a multiple of 32 and the output is cropped back to the input's spatial
    size. The pad and crop sizes come from the input's shape, so the model can be
    scripted, traced (tracing records them as shape operations) and exported to ONNX.

    Parameter counts with the defaults (filters=64, batch norm), in_channels=1,
    out_channels=2: 2D 11,527,170; 3D 33,964,162.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels (classes).
        filters: Channels of the first encoder stage (the paper uses 64).
        norm: "batch" or "instance" (affine instance norm).
        dropout: Channel dropout probability before the final block.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        filters: int = 64,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims)
        check_norm(norm)
        check_dropout(dropout)
        if filters < 2 or in_channels < 1 or out_channels < 1:
            raise ValueError("filters must be >= 2 and in_channels, out_channels >= 1")
        self.spatial_dims = spatial_dims
        self.multiple = 32
        widths = [filters * 2**k for k in range(4)]
        # float32 values per input voxel a forward pass holds at its peak, inference mode (measured,
        # bench/bench_activation_memory.py): the last decoder block and the head upsampled to full resolution
        self.peak_per_voxel = 3 * filters
        self.initial = nn.Sequential(
            ConvNormAct(spatial_dims, in_channels, filters, norm, kernel_size=7, stride=2),
            max_pool(spatial_dims, kernel_size=3, stride=2, padding=1),
        )
        encoder: List[nn.Module] = []
        previous = filters
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            encoder.append(
                nn.Sequential(
                    BasicBlock(spatial_dims, previous, width, stride, norm),
                    BasicBlock(spatial_dims, width, width, 1, norm),
                )
            )
            previous = width
        self.encoder = nn.ModuleList(encoder)
        # decoder[0] is decoder block 4 (deepest); decoder[3] is block 1.
        self.decoder = nn.ModuleList(
            [
                DecoderBlock(spatial_dims, widths[3], widths[2], 2, norm),
                DecoderBlock(spatial_dims, widths[2], widths[1], 2, norm),
                DecoderBlock(spatial_dims, widths[1], widths[0], 2, norm),
                DecoderBlock(spatial_dims, widths[0], widths[0], 1, norm),
            ]
        )
        self.dropout = channel_dropout(spatial_dims, dropout)
        half = filters // 2
        self.final = nn.Sequential(
            transposed_conv(spatial_dims, filters, half, kernel_size=3, stride=2, bias=False),
            norm_layer(spatial_dims, norm, half),
            nn.ReLU(inplace=True),
            ConvNormAct(spatial_dims, half, half, norm),
            transposed_conv(spatial_dims, half, out_channels, kernel_size=2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute logits.

        Args:
            x: Input batch (N, in_channels, *spatial), any spatial size.

        Returns:
            Logits (N, out_channels, *spatial).
        """
        sizes: List[int] = list(x.shape[2:])
        h = self.initial(pad_to_multiple(x, self.multiple))
        features: List[torch.Tensor] = []
        for stage in self.encoder:
            h = stage(h)
            features.append(h)
        for i, block in enumerate(self.decoder):
            h = block(h)
            # Blocks 4, 3, 2 are linked to encoder stages 3, 2, 1; block 1 is not.
            if i < 3:
                h = h + features[2 - i]
        return crop_to(self.final(self.dropout(h)), sizes)


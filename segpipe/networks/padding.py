"""Pad inputs to a size a network can halve repeatedly, and crop outputs back.

Padding is added at the high end of every spatial axis only, so voxel ``i`` of the
input stays voxel ``i`` of the output (and voxel ``i // 2**k`` of a map downsampled
``k`` times). The sizes come from the tensor's shape; ``torch.jit.trace`` records
them as shape operations rather than constants.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the spatial axes of ``x`` (N, C, *spatial) up to a multiple of ``multiple``.

    Args:
        x: Input batch.
        multiple: Every spatial size is rounded up to a multiple of this.

    Returns:
        The padded tensor (``x`` unchanged in value where it overlaps).
    """
    pads: List[int] = []
    # F.pad takes (low, high) pairs starting from the last axis.
    for axis in range(x.dim() - 1, 1, -1):
        size = x.shape[axis]
        pads.append(0)
        pads.append((multiple - size % multiple) % multiple)
    return F.pad(x, pads)


def crop_to(x: torch.Tensor, sizes: List[int]) -> torch.Tensor:
    """Keep the first ``sizes[i]`` elements of spatial axis ``i`` of ``x``.

    Args:
        x: Tensor shaped (N, C, *spatial).
        sizes: Target spatial sizes, one per spatial axis.

    Returns:
        A view of ``x`` with the given spatial sizes.
    """
    for i, size in enumerate(sizes):
        x = x.narrow(i + 2, 0, size)
    return x

"""Tumour carried between the samples of a batch (CarveMix, Zhang et al. 2021, on patches).

With few training patients every tumour is seen in one context only. Here a sample takes
another sample's foreground with a random margin of its surroundings, image and label alike,
at the same place in the patch: new tumour-context pairs at no cost per step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def carve_mix(image: torch.Tensor, label: torch.Tensor, prob: float, max_margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample, with probability `prob`, takes another sample's foreground (label > 0) and a
    margin of 0 to `max_margin` voxels around it.

    Args:
        image: (B, C, *spatial) batch.
        label: (B, 1, *spatial) integer labels of the same batch.
        prob: share of samples that receive a donor's foreground.
        max_margin: largest margin (voxels) carried with the foreground.

    Returns:
        The mixed image and label (new tensors where any sample was mixed, else the inputs).
    """
    n = image.shape[0]
    has_tumour = torch.nonzero((label > 0).flatten(1).any(1)).flatten()
    if prob <= 0 or len(has_tumour) == 0:
        return image, label
    chosen = torch.nonzero(torch.rand(n) < prob).flatten().tolist()
    if not chosen:
        return image, label
    source_image, source_label = image, label  # donors give what they held before any mixing
    image, label = image.clone(), label.clone()
    donors = has_tumour[torch.randint(len(has_tumour), (n,))].tolist()
    margins = torch.randint(0, max_margin + 1, (n,)).tolist()
    pool = F.max_pool2d if label.ndim == 4 else F.max_pool3d
    for i in chosen:
        j, m = donors[i], margins[i]
        if j == i:
            continue
        region = (source_label[j : j + 1] > 0).float()
        if m > 0:
            region = pool(region, kernel_size=2 * m + 1, stride=1, padding=m)
        region = region[0, 0].bool()
        image[i][:, region] = source_image[j][:, region]
        label[i][:, region] = source_label[j][:, region]
    return image, label

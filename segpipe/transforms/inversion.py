"""Mapping network outputs on the preprocessed grid back onto the input's voxel grid."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd


def invert_to_input(chain: Compose, data: dict, output: torch.Tensor, nearest: bool = True) -> torch.Tensor:
    """Undo the chain's spatial steps (resampling, cropping, reorientation) on `output`.

    Args:
        chain: the chain that produced `data["image"]` (with the image key only).
        data: the chain's output, whose "image" carries the applied operations.
        output: channel-first labels (nearest=True, returned as uint8) or probabilities
            (nearest=False: resampled linearly, returned as float32).
    """
    image = data["image"]
    meta_out = MetaTensor(output.float(), meta=dict(image.meta))
    meta_out.applied_operations = list(image.applied_operations)
    inverted = Invertd("pred", transform=chain, orig_keys="image", nearest_interp=nearest)(
        {"image": image, "pred": meta_out}
    )["pred"]
    inverted = torch.as_tensor(inverted)
    return inverted.round().to(torch.uint8) if nearest else inverted.float()


def was_resampled(image: MetaTensor) -> bool:
    """Whether the chain that made `image` changed its voxel size (a `Spacingd` to another
    spacing), so that counts on its grid differ from counts on the input's."""
    for op in image.applied_operations:
        if op.get("class") == "SpatialResample":
            source = np.asarray(op["extra_info"]["src_affine"], dtype=float)
            dims = image.ndim - 1
            return not np.allclose(np.linalg.norm(source[:dims, :dims], axis=0), np.asarray(image.pixdim, dtype=float), rtol=1e-6)
    return False

"""Training batches come without MONAI metadata, and MONAI's setting is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, ThreadDataLoader, get_track_meta
from monai.transforms import Compose, RandSpatialCropd, SpatialPadd

from segpipe.training.steps import without_metadata


def _dataset() -> Dataset:
    chain = Compose([SpatialPadd(["image", "label"], spatial_size=[12, 12]),
                     RandSpatialCropd(["image", "label"], roi_size=[8, 8], random_size=False)])
    cases = [{"image": np.random.rand(1, 10, 10).astype(np.float32), "label": np.zeros((1, 10, 10), np.uint8)}
             for _ in range(6)]
    return Dataset(cases, transform=chain)


def test_monai_chains_make_metatensors_by_default():
    batch = next(iter(DataLoader(_dataset(), batch_size=2)))
    assert isinstance(batch["image"], MetaTensor)


@pytest.mark.parametrize("loader", [DataLoader, ThreadDataLoader])
def test_batches_made_without_metadata_are_plain_tensors(loader):
    with without_metadata():
        batches = list(loader(_dataset(), batch_size=2))
    assert get_track_meta()
    assert len(batches) == 3
    for batch in batches:
        assert type(batch["image"]) is torch.Tensor and type(batch["label"]) is torch.Tensor
        assert batch["image"].shape == (2, 1, 8, 8)


def test_without_metadata_restores_the_setting_after_an_error():
    with pytest.raises(RuntimeError), without_metadata():
        assert not get_track_meta()
        raise RuntimeError("a transform failed")
    assert get_track_meta()

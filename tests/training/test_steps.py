"""Training batches come without MONAI metadata, and MONAI's setting is left as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor, get_track_meta
from monai.transforms import Compose, RandSpatialCropd, SpatialPadd

from segpipe.training.steps import PlainBatches, without_metadata


def _loader() -> DataLoader:
    chain = Compose([SpatialPadd(["image", "label"], spatial_size=[12, 12]),
                     RandSpatialCropd(["image", "label"], roi_size=[8, 8], random_size=False)])
    cases = [{"image": np.random.rand(1, 10, 10).astype(np.float32), "label": np.zeros((1, 10, 10), np.uint8)}
             for _ in range(6)]
    return DataLoader(Dataset(cases, transform=chain), batch_size=2)


def test_monai_chains_make_metatensors_by_default():
    batch = next(iter(_loader()))
    assert isinstance(batch["image"], MetaTensor)


def test_plain_batches_are_plain_tensors_and_the_setting_is_kept_between_them():
    seen = 0
    for batch in PlainBatches(_loader()):
        assert type(batch["image"]) is torch.Tensor and type(batch["label"]) is torch.Tensor
        assert batch["image"].shape == (2, 1, 8, 8)
        assert get_track_meta()  # the training step and validation run with MONAI's own setting
        seen += 1
    assert seen == 3 and len(PlainBatches(_loader())) == 3
    for _ in PlainBatches(_loader()):
        break  # a budget stops an epoch part-way
    assert get_track_meta()


def test_without_metadata_restores_the_setting_after_an_error():
    with pytest.raises(RuntimeError), without_metadata():
        assert not get_track_meta()
        raise RuntimeError("a transform failed")
    assert get_track_meta()

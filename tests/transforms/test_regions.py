"""Region-based targets: nesting, conversion both ways, and the refusals."""

from __future__ import annotations

import pytest
import torch

from segpipe.errors import SegpipeError
from segpipe.artifacts.plan import BRATS_REGIONS, MSD_REGIONS
from segpipe.transforms.regions import labels_to_regions, region_chain, regions_to_labels


@pytest.mark.parametrize("regions, labels", [(MSD_REGIONS, [1, 2, 3]), (BRATS_REGIONS, [1, 2, 4])])
def test_labels_to_regions_and_back_is_the_identity(regions, labels):
    chain = region_chain(regions, labels)
    assert chain.names == ("whole_tumour", "tumour_core", "enhancing_tumour")
    values = torch.tensor([0, *labels])
    label_map = values[torch.randint(0, len(values), (2, 1, 9, 7), generator=torch.Generator().manual_seed(0))]
    onehot = labels_to_regions(label_map, chain)
    assert onehot.shape == (2, 3, 9, 7) and onehot.dtype == torch.float32
    assert torch.equal(onehot[:, 0].bool(), label_map[:, 0] > 0)  # whole tumour: any label
    assert bool((onehot[:, 2] <= onehot[:, 1]).all() and (onehot[:, 1] <= onehot[:, 0]).all())  # nested
    for n in range(2):
        assert torch.equal(regions_to_labels(onehot[n], chain)[0], label_map[n, 0].to(torch.uint8))


def test_region_probabilities_decode_smallest_region_first():
    chain = region_chain(MSD_REGIONS, [1, 2, 3])
    probs = torch.tensor([[0.9, 0.9, 0.9, 0.2], [0.8, 0.7, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])[:, :, None]  # (R, 4, 1)
    assert regions_to_labels(probs, chain)[0, :, 0].tolist() == [3, 2, 1, 0]


def test_regions_that_do_not_nest_are_refused():
    with pytest.raises(SegpipeError, match="model.targets"):
        region_chain({"a": [1, 2], "b": [2, 3]}, [1, 2, 3])
    with pytest.raises(SegpipeError, match="must hold every label"):
        region_chain({"a": [1, 2], "b": [2]}, [1, 2, 3])
    with pytest.raises(SegpipeError, match="no default ones"):
        region_chain({}, [1, 5])

"""segpipe.reports.mask_store: evaluate's masks kept compressed between scoring and drawing."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.reports.mask_store import MaskStore


def _labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Nested labels 1-3 around a rough centre, as a tumour mask."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(float)
    dist = np.sqrt(sum((g - s / 2) ** 2 for g, s in zip(grid, shape))) + rng.normal(0, 1.5, shape)
    mask = np.zeros(shape, np.int32)
    mask[dist < shape[0] / 4] = 1
    mask[dist < shape[0] / 6] = 2
    mask[dist < shape[0] / 10] = 3
    return mask


def test_masks_come_back_as_stored_with_their_spacing():
    store = MaskStore()
    pred, ref = _labels((40, 30, 20)), _labels((40, 30, 20), seed=1)
    pred[0, 0, 0] = 255
    store.add("a", pred, ref, (1.0, 1.0, 2.5))
    store.add("b", pred[:, :, 3], ref[:, :, 3].T, (0.5, 0.5))
    got_pred, got_ref, spacing = store["a"]
    assert got_pred.dtype == np.int32 and np.array_equal(got_pred, pred) and np.array_equal(got_ref, ref)
    assert spacing == (1.0, 1.0, 2.5)
    slice_pred, slice_ref, _ = store["b"]
    assert np.array_equal(slice_pred, pred[:, :, 3]) and np.array_equal(slice_ref, ref[:, :, 3].T)
    assert list(store) == ["a", "b"] and len(store) == 2


def test_a_volume_is_held_in_a_small_fraction_of_its_size():
    store = MaskStore()
    mask = _labels((120, 120, 78))
    store.add("case", mask, mask, (1.0, 1.0, 1.0))
    assert store.nbytes() < 0.02 * 2 * mask.nbytes  # int32 masks; a BraTS volume pair would be 71 MB


@pytest.mark.parametrize("value", [-1, 256])
def test_values_that_uint8_cannot_hold_are_refused(value):
    mask = np.zeros((4, 4), np.int32)
    mask[1, 1] = value
    with pytest.raises(ValueError, match="0..255"):
        MaskStore().add("case", mask, np.zeros((4, 4), np.int32), (1.0, 1.0))

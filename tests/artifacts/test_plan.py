"""Planning plan.json: patch size within the budget, geometry in RAS order, the intensity fingerprint."""

import nibabel as nib
import numpy as np
import pytest

from segpipe.artifacts.plan import aggregate_intensity, choose_patch_size, header_geometry, median_spacing


def test_patch_size_respects_budget_and_multiple():
    patch = choose_patch_size([140, 170, 140], budget_voxels=128**3)
    assert all(p % 16 == 0 for p in patch)
    assert np.prod(patch) <= 128**3
    assert choose_patch_size([40, 38, 20], budget_voxels=128**3) == [48, 48, 32]


def test_header_geometry_in_ras_order(tmp_path):
    # voxel axes stored as (z, y, x)-like permutation with spacings 3, 2, 1
    affine = np.array([[0, 0, 1.0, 0], [0, 2.0, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])
    path = tmp_path / "p.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), affine), str(path))
    shape, spacing = header_geometry(path)
    assert shape == [7, 6, 5]
    assert spacing == pytest.approx([1.0, 2.0, 3.0])


def test_median_spacing_and_intensity_aggregate():
    assert median_spacing([[1, 1, 3], [1, 1, 1], [2, 1, 5]]) == [1.0, 1.0, 3.0]
    a = {"mean": 0.0, "std": 1.0, "p00_5": -2.0, "p99_5": 2.0, "voxels": 100}
    b = {"mean": 2.0, "std": 1.0, "p00_5": 0.0, "p99_5": 4.0, "voxels": 100}
    (agg,) = aggregate_intensity([[a], [b]])
    assert agg["mean"] == pytest.approx(1.0)
    assert agg["std"] == pytest.approx(np.sqrt(2.0))  # pooled: within variance 1 + between variance 1

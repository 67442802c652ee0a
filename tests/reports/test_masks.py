"""segpipe.reports.masks: masks read for evaluation with the grid every reader uses."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from segpipe.reports.masks import load_mask_grid


def test_a_nifti_masks_voxel_size_comes_from_its_affine_not_a_disagreeing_pixdim(tmp_path):
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.uint8), affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(None, code=0)
    img.header["pixdim"][3] = 3.0  # legal: the sform rules, and every reader takes its voxel sides
    nib.save(img, str(tmp_path / "a.nii.gz"))
    _, spacing, read_affine = load_mask_grid(tmp_path / "a.nii.gz")
    assert spacing == pytest.approx((1.0, 1.0, 1.2))
    np.testing.assert_allclose(read_affine, affine)

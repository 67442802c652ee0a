"""segpipe.writers.masks: a mask written with its input's own geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from segpipe.writers.masks import write_nifti_like, write_probabilities


@pytest.mark.parametrize("codes", [(0, 0), (1, 0), (0, 1), (2, 1)])
def test_nifti_masks_keep_the_inputs_sform_and_qform_codes(tmp_path, codes):
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    affine[:3, 3] = [-20.0, 10.0, 5.0]
    img = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), None)  # with an affine, nibabel would save an sform of code 2
    img.header.set_zooms((1.0, 1.0, 1.2))
    if codes[0]:
        img.header.set_sform(affine, code=codes[0])
    if codes[1]:
        img.header.set_qform(affine, code=codes[1])
    nib.save(img, str(tmp_path / "in.nii.gz"))
    write_nifti_like(tmp_path / "in.nii.gz", np.zeros((6, 5, 4), np.uint8), tmp_path / "mask.nii.gz")
    write_probabilities("decathlon", tmp_path / "in.nii.gz", np.full((6, 5, 4, 3), 1 / 3), tmp_path / "p.nii.gz", None)
    source, mask = nib.load(str(tmp_path / "in.nii.gz")), nib.load(str(tmp_path / "mask.nii.gz"))
    probs = nib.load(str(tmp_path / "p.nii.gz"))
    assert probs.shape == (6, 5, 4, 3) and (int(probs.header["sform_code"]), int(probs.header["qform_code"])) == codes
    np.testing.assert_allclose(probs.affine, source.affine)
    # a code of 0 turned into 1 made ITK-based viewers place the mask where the input is not
    assert (int(source.header["sform_code"]), int(source.header["qform_code"])) == codes
    assert (int(mask.header["sform_code"]), int(mask.header["qform_code"])) == codes
    np.testing.assert_allclose(mask.affine, source.affine)

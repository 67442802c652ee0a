"""Readers on the real sample data in ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import time

import numpy as np

from segpipe.data import read_dataset
from segpipe.data.figshare import read_mat_field
from segpipe.data.loading import load_arrays
from segpipe.data.verify import verify_dataset
from tests.conftest import shared_data


def test_brain_tumour_2d_slices():
    ds = read_dataset(shared_data("BrainTumour_2D"))
    assert ds.layout == "slices" and ds.spatial_dims == 2
    assert len(ds.training) == 2028 and len({c.patient for c in ds.training}) == 338
    assert all(c.patient == c.case_id.rsplit("_z", 1)[0] for c in ds.training)
    image, label = load_arrays(ds, ds.training[0])
    assert image.shape == label.shape == (1, 120, 120)
    assert set(np.unique(label)) <= set(ds.labels)


def test_figshare_lgg_slices_patients_and_orientation():
    ds = read_dataset(shared_data("figshare_format_lgg"))
    assert ds.layout == "figshare" and ds.spatial_dims == 2
    assert len(ds.training) == 110 and len({c.patient for c in ds.training}) == 9
    assert {c.attrs["tumour_type"] for c in ds.training} == {"glioma"}
    for case in ds.training[::11]:
        image, mask = load_arrays(ds, case)
        assert image.shape == mask.shape == (1, 256, 256) and mask.max() == 1
        m = mask[0]
        border = read_mat_field(case.images[0], "tumorBorder").reshape(-1, 2)

        def on_mask(arr: np.ndarray) -> float:
            # border point (x = MATLAB column, y = row, 1-based) lies inside/on the mask at
            # [y-1, x-1], within one pixel (the border is traced between pixels)
            hits = [
                arr[max(int(np.floor(y - 1)) - 1, 0): int(np.ceil(y - 1)) + 2,
                    max(int(np.floor(x - 1)) - 1, 0): int(np.ceil(x - 1)) + 2].any()
                for x, y in border
            ]
            return float(np.mean(hits))

        assert on_mask(m) >= 0.95, case.images[0]
        assert on_mask(m.T) < on_mask(m) or np.array_equal(m, m.T)


def test_brats2021_case_matches_its_decathlon_conversion():
    brats = read_dataset(shared_data("BraTS2021"))
    msd = read_dataset(shared_data("Task01_BrainTumour_sample"))
    assert brats.layout == "brats" and msd.layout == "decathlon"
    assert [c.case_id for c in brats.training] == ["BraTS2021_00006"]
    assert read_dataset(shared_data("BraTS2021") / "BraTS2021_00006").training[0].images == brats.training[0].images
    assert brats.modalities == msd.modalities and brats.labels == msd.labels | {2: "non-enhancing tumour"}
    b_img, b_lab = load_arrays(brats, brats.training[0])
    m_img, m_lab = load_arrays(msd, msd.training[0])
    assert b_img.shape == m_img.shape == (4, 240, 240, 155)
    # same voxels, same orientation (both LPS affines); int16 on disk vs float32 in the MSD file
    for c in range(4):
        np.testing.assert_array_equal(b_img[c], m_img[c], err_msg=f"channel {c} ({brats.modalities[c]})")
    # BraTS 1/2/4 mapped to MSD 2/1/3 equals the MSD label file
    np.testing.assert_array_equal(b_lab, m_lab)
    assert sorted(np.unique(b_lab)) == [0, 1, 2, 3]


def test_verify_real_datasets_quickly():
    for name in ("BraTS2021", "figshare_format_lgg"):
        start = time.perf_counter()
        report = verify_dataset(read_dataset(shared_data(name)))
        assert report.usable, report.format()
        assert time.perf_counter() - start < 20

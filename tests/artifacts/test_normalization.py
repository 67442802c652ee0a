"""preprocess.normalize_nonzero: auto chooses the z-score's mask from the data (nnU-Net's crop rule)."""

import json

import numpy as np
import pytest

from segpipe.artifacts import normalization
from segpipe.artifacts.normalization import choose, crop_share, evenly_spread
from segpipe.config import load_config
from segpipe.configs import resolve_config
from segpipe.data.mat_file import write_figshare_mat
from segpipe.errors import SegpipeError
from segpipe.pipeline.preprocess import preprocess
from tests.conftest import shared_data, tiny_config

YY, XX = np.mgrid[:64, :64]


def test_crop_share_is_the_share_of_the_bounding_box_of_any_channel():
    image = np.zeros((2, 10, 20))
    image[0, 2:7, 3:5] = 1.0  # 5 x 2
    image[1, 4, 12] = -3.0  # widens the box to columns 3..12
    assert crop_share(image) == pytest.approx(5 * 10 / 200)
    assert crop_share(np.zeros((1, 4, 4))) == 0.0
    assert crop_share(np.ones((1, 3, 4, 5))) == 1.0


def test_choose_uses_the_mask_below_three_quarters():
    assert choose([0.3, 0.4, 0.9])["nonzero"] is True
    whole = choose([0.97, 0.8, 0.5])
    assert whole == {"nonzero": False, "crop_share_median": 0.8, "cases": 3}
    assert choose([0.75])["nonzero"] is False  # a quarter removed exactly is not enough
    assert choose([])["nonzero"] is True and choose([])["cases"] == 0


def test_evenly_spread_keeps_both_ends():
    items = list(range(101))
    picked = evenly_spread(items, 20)
    assert len(set(picked)) == 20 and picked[0] == 0 and picked[-1] == 100
    assert evenly_spread(items[:5], 20) == items[:5]


def _heads(root, n=6, stripped=False):
    """figshare MAT slices of an elliptic head; `stripped`: a small brain in a zero background,
    else the whole head fills most of the slice (air in the corners only)."""
    root.mkdir(parents=True, exist_ok=True)
    radius = (12, 10) if stripped else (31, 29)
    head = (YY - 32) ** 2 / radius[0] ** 2 + (XX - 32) ** 2 / radius[1] ** 2 < 1
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        image = np.where(head, rng.integers(40, 200, head.shape), 0).astype(np.int16)
        write_figshare_mat(root / f"{i}.mat", image, head & (YY > 36), pid=f"P{(i + 1) // 2}")
    return root


@pytest.mark.parametrize("stripped", [False, True])
def test_auto_chooses_the_mask_from_the_data_and_records_why(tmp_path, stripped):
    out = tmp_path / "prep"
    result = preprocess(_heads(tmp_path / "raw", stripped=stripped), out, tiny_config(), quiet=True)
    choice = result.plan["normalization_choice"]
    assert choice["rule"] == "auto" and choice["nonzero"] is stripped and choice["cases"] == 6
    assert (choice["crop_share_median"] < 0.75) is stripped
    assert json.loads((out / "manifest.json").read_text())["settings"]["normalize_nonzero"] is stripped
    image = np.load(out / "cases" / "1_image.npy")[0]
    if stripped:  # the background stays at 0 and the brain alone has mean 0
        assert image[0, 0] == 0 and abs(image[image != 0].mean()) < 1e-4
    else:  # the air is below every tissue value and the whole slice has mean 0
        assert image[0, 0] == image.min() < image[image != image[0, 0]].min() - 0.5 and abs(image.mean()) < 1e-4


def test_auto_is_measured_once_while_the_sampled_cases_are_unchanged(tmp_path, monkeypatch):
    raw = _heads(tmp_path / "raw")
    cfg = tiny_config()
    first = preprocess(raw, tmp_path / "prep", cfg, quiet=True)
    import segpipe.pipeline.preprocess as preprocessing

    measured = []
    monkeypatch.setattr(preprocessing, "crop_share", lambda image: measured.append(1) or crop_share(image))
    again = preprocess(raw, tmp_path / "prep", cfg, quiet=True)
    assert measured == [] and again.reused == 6
    assert again.plan["normalization_choice"] == first.plan["normalization_choice"]
    # a damaged record in the manifest is measured again, not trusted
    manifest = json.loads((tmp_path / "prep" / "manifest.json").read_text())
    manifest["normalization"]["nonzero"] = "yes"
    (tmp_path / "prep" / "manifest.json").write_text(json.dumps(manifest))
    mended = preprocess(raw, tmp_path / "prep", cfg, quiet=True)
    assert len(measured) == 6 and mended.plan["normalization_choice"] == first.plan["normalization_choice"]
    # a sampled case changes: measured again, and now most slices are mostly air
    stripped = _heads(tmp_path / "stripped", stripped=True)
    for i in range(1, 5):
        (raw / f"{i}.mat").write_bytes((stripped / f"{i}.mat").read_bytes())
    third = preprocess(raw, tmp_path / "prep", cfg, quiet=True)
    assert measured and third.plan["normalization_choice"]["nonzero"] is True
    assert third.reused == 0  # the settings changed, so every case is prepared again


def test_worker_processes_measure_the_same(tmp_path):
    raw = _heads(tmp_path / "raw", stripped=True)
    one = preprocess(raw, tmp_path / "one", tiny_config(), quiet=True)
    two = preprocess(raw, tmp_path / "two", tiny_config(), quiet=True, workers=2)
    assert two.plan["normalization_choice"] == one.plan["normalization_choice"]
    assert one.plan["normalization_choice"]["nonzero"] is True and two.cases == 6


def test_a_config_value_is_taken_as_given(tmp_path):
    result = preprocess(_heads(tmp_path / "raw"), tmp_path / "prep",
                        tiny_config(**{"preprocess.normalize_nonzero": "true"}), quiet=True)
    assert result.plan["normalization_choice"] == {"rule": "config", "nonzero": True}
    assert result.plan["normalization"] == "zscore_nonzero_channelwise"


def test_ready_configs_leave_it_to_the_data_and_a_bad_value_is_refused():
    for name in ("figshare_2d", "figshare_2d_linknet", "msd_2d", "msd_3d"):
        assert load_config(resolve_config(name)).preprocess.normalize_nonzero == "auto"
    with pytest.raises(SegpipeError, match="preprocess.normalize_nonzero.*auto"):
        tiny_config(**{"preprocess.normalize_nonzero": "sometimes"})


@pytest.mark.parametrize("name, nonzero", [("figshare_format_lgg", False), ("BrainTumour_2D", True),
                                           ("Task01_BrainTumour_sample", True)])
def test_auto_on_real_scans(name, nonzero):
    """Whole-head figshare slices keep their air in the z-score; skull-stripped BraTS scans do not."""
    from segpipe.data import read_dataset
    from segpipe.data.loading import layout_of, load_image

    dataset = read_dataset(shared_data(name))
    record = normalization.resolve("auto", dataset.training, {c.case_id: "-" for c in dataset.training},
                                   measure=lambda sample: [crop_share(load_image(c, layout_of(dataset, c))) for c in sample])
    assert record["nonzero"] is nonzero and record["cases"] == min(20, len(dataset.training))

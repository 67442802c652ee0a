"""segpipe.training.caching: how many training cases fit keeps in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segpipe.training.caching import cases_to_cache


def _cases(root: Path, count: int, voxels: int = 1000) -> list[dict[str, str]]:
    cases = []
    for i in range(count):
        image, label = root / f"c{i}_image.npy", root / f"c{i}_label.npy"
        np.save(image, np.zeros((voxels,), np.float32))
        np.save(label, np.zeros((voxels,), np.uint8))
        cases.append({"image": str(image), "label": str(label), "id": f"c{i}"})
    return cases


def test_auto_keeps_the_cases_that_fit_in_half_the_memory_and_says_so(tmp_path):
    cases = _cases(tmp_path, 10)
    size = sum(Path(cases[0][k]).stat().st_size for k in ("image", "label"))
    count, note = cases_to_cache(cases, "auto", memory=2 * 4 * size + 1)
    assert count == 4
    assert note is not None and "4 of 10 training cases held in memory" in note and "read from disk" in note


def test_auto_keeps_every_case_quietly_when_all_fit(tmp_path):
    assert cases_to_cache(_cases(tmp_path, 3), "auto", memory=10**9) == (3, None)


def test_ranks_on_one_machine_share_the_memory(tmp_path):
    cases = _cases(tmp_path, 10)
    size = sum(Path(cases[0][k]).stat().st_size for k in ("image", "label"))
    assert cases_to_cache(cases, "auto", ranks=2, memory=2 * 4 * size + 1)[0] == 2


def test_a_given_share_is_kept_as_given(tmp_path):
    cases = _cases(tmp_path, 10)
    assert cases_to_cache(cases, 0.5, memory=1) == (5, None)
    assert cases_to_cache(cases, 1.0, memory=1) == (10, None)
    assert cases_to_cache(cases, 0, memory=10**9) == (0, None)

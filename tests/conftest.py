"""Shared fixtures: a small synthetic Decathlon dataset, its prepared folder, a tiny model."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from segpipe.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

warnings.filterwarnings("ignore", module="monai")


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent (tests on real scans need ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """segpipe's cache folder (precision "auto" remembers its measurement there) in the test's temp dir."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEGPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("segpipe-cache")))
        yield


def tiny_config(**extra: str) -> Config:
    """A config small enough to train in seconds on 2 CPU cores."""
    overrides = [
        "model.filters=4", "model.depth=2", "train.epochs=2", "train.iterations_per_epoch=2",
        "train.batch_size=2", "train.samples_per_volume=2", "train.patch_size=[16,16,16]",
        "preprocess.folds=3", "infer.sw_batch_size=4",
        "train.precision=fp32",  # not "auto": tests must not depend on a timing of this machine
    ]
    return load_config(None, overrides + [f"{k}={v}" for k, v in extra.items()])


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segpipe.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "Task99", cases=6, test_cases=2, shape=(32, 32, 24), seed=1)


@pytest.fixture(scope="session")
def prepared_dataset(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segpipe.pipeline.preprocess import preprocess

    out = tmp_path_factory.mktemp("prepared")
    preprocess(synthetic_dataset, out, tiny_config(), quiet=True)
    return out


@pytest.fixture(scope="session")
def tiny_model(prepared_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from segpipe.pipeline.fit import fit

    out = tmp_path_factory.mktemp("model") / "model"
    fit(prepared_dataset, out, tiny_config(), quiet=True)
    return out

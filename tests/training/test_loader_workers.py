"""train.num_workers: a number as given, "auto" decided by the device, anything else refused naming the key."""

import pytest
import torch

from segpipe.config import load_config
from segpipe.errors import SegpipeError
from segpipe.runtime import workers
from segpipe.runtime.workers import loader_workers


def test_a_number_is_kept_on_any_device():
    assert loader_workers(3, torch.device("cpu")) == 3
    assert loader_workers(0, torch.device("cuda")) == 0


@pytest.mark.parametrize("cores, world, expected", [(16, 1, 8), (64, 1, 8), (16, 2, 4), (6, 1, 3), (2, 1, 1), (1, 4, 1)])
def test_auto_on_a_gpu_takes_half_of_each_process_share_of_the_cores(monkeypatch, cores, world, expected):
    monkeypatch.setattr(workers, "usable_cores", lambda: cores)
    assert loader_workers("auto", torch.device("cuda", 0), world) == expected


def test_auto_on_a_cpu_is_no_worker_process(monkeypatch):
    monkeypatch.setattr(workers, "usable_cores", lambda: 64)
    assert loader_workers("auto", torch.device("cpu")) == 0


def test_the_default_is_auto_and_the_config_takes_a_number():
    assert load_config().train.num_workers == "auto"
    assert load_config(None, ["train.num_workers=4"]).train.num_workers == 4


@pytest.mark.parametrize("value, problem", [("many", "must be auto or a number"), ("-1", ">= 0"), ("1.5", "train.num_workers")])
def test_anything_else_is_refused_naming_the_key(value, problem):
    with pytest.raises(SegpipeError, match="train.num_workers") as err:
        load_config(None, [f"train.num_workers={value}"])
    assert problem in str(err.value)

"""How many loader processes feed training: `train.num_workers`, with "auto" decided per device."""

from __future__ import annotations

import os

import torch

MAX_AUTO_WORKERS = 8


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def loader_workers(value: int | str, device: torch.device, world: int = 1) -> int:
    """The worker count: a number as given; "auto" is none on a CPU, where a worker takes a core from
    the network (figshare_2d on 2 cores: 16.2 steps/s with none, 13.1 with one), and half of each GPU
    process's share of the cores on a GPU, at most 8, where the network waits for the CPU's augmentation
    (an H200: 18.5 steps/s with none, 52.5 with 4, 55.1 with 8; docs/benchmarks.md)."""
    if value != "auto":
        return int(value)
    if device.type == "cpu":
        return 0
    return max(1, min(MAX_AUTO_WORKERS, usable_cores() // (2 * max(1, world))))

"""How many training cases `fit` keeps in memory (`train.cache_rate`).

MONAI's `CacheDataset` holds each cached case whole: a prepared MSD/BraTS volume (4 channels,
float32) takes 55 MB, so the 387 training cases of a Task01 fold would fill 21 GB, and a
BraTS 2021 fold 55 GB. `auto` keeps the first cases that fit in half the machine's memory
(shared by the ranks on it); the others are read from their `.npy` files at each draw.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segpipe.limits import device_memory, human

CACHE_SHARE = 0.5  # of the machine's memory, for the cached cases of every rank together


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # loading names the missing file
        return 0


def cases_to_cache(cases: list[dict[str, Any]], cache_rate: float | str, ranks: int = 1,
                   memory: int | None = None) -> tuple[int, str | None]:
    """How many of `cases` (the first ones) to keep in memory, and a note when `auto` leaves some on disk.

    Args:
        cases: training cases, each with the `image` and `label` `.npy` paths of a prepared folder.
        cache_rate: a share of the cases, or "auto".
        ranks: training processes on this machine, each holding its own cache.
        memory: the machine's memory in bytes; None asks the system.
    """
    if cache_rate != "auto":
        return int(len(cases) * float(cache_rate)), None
    memory = memory if memory is not None else device_memory("cpu")
    if memory is None:  # the system cannot say: cache everything, as MONAI does
        return len(cases), None
    budget = memory * CACHE_SHARE / max(1, ranks)
    held = 0
    for count, case in enumerate(cases):
        size = sum(_size(Path(case[key])) for key in ("image", "label"))
        if held + size > budget:
            note = (f"train.cache_rate auto: {count} of {len(cases)} training cases held in memory ({human(held)}, within "
                    f"half of this machine's {human(memory)}); the others are read from disk at each draw")
            return count, note
        held += size
    return len(cases), None


__all__ = ["CACHE_SHARE", "cases_to_cache"]

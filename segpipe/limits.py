"""Size limits checked before anything large is allocated (see docs/limits.md).

The memory limit bounds one image as segpipe holds it (float32, all channels), computed
from the sizes its header declares. A BraTS case (240 x 240 x 155 x 4 float32, 137 MiB)
passes the default 2 GiB by far; a small compressed file that declares gigabytes does not.
Set `SEGPIPE_MAX_IMAGE_MEMORY` (e.g. `8GiB`, `500MB`, `3000000000`) to change it.
"""

from __future__ import annotations

import os
import re

from segpipe.errors import SegpipeError

ENV_MEMORY = "SEGPIPE_MAX_IMAGE_MEMORY"
DEFAULT_MEMORY = 2 * 1024**3
MAX_LABEL_VALUE = 255  # labels are cached as uint8; a label value is also an output channel
MAX_ROI_SIDE = 4096  # one side of a sliding window or patch, in voxels
MAX_THREADS = 1024  # torch threads, loader workers, windows per batch
MAX_EPOCH_ITERATIONS = 100_000  # training steps in one epoch: its sample draws are made as one list
MAX_WINDOWS = 100_000  # sliding windows over one image: a 512^3 volume in 96^3 windows at overlap 0.5 takes 1000
MAX_EPOCHS = 1_000_000  # nnU-Net trains 1000; a count past this is a typo that would train for ever
MAX_JSON_BYTES = 256 * 1024**2  # a dataset.json, summary.json or splits.json: read and parsed whole
MAX_YAML_BYTES = 1024**2  # a config: YAML parses ~0.15 MB/s, and ready configs are ~4 KB
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def parse_bytes(text: str, source: str) -> int:
    """`8GiB`, `500MB`, `3e9` -> bytes; refuses anything not a positive size."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or not 1 <= float(match.group(1)) * _UNITS[unit] < float("inf"):
        raise SegpipeError(f"{source}: expected a size such as 4GiB or 500MB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def max_image_bytes() -> int:
    """The memory limit for one image: `SEGPIPE_MAX_IMAGE_MEMORY`, else 2 GiB."""
    text = os.environ.get(ENV_MEMORY, "").strip()
    return parse_bytes(text, f"environment variable {ENV_MEMORY}") if text else DEFAULT_MEMORY


def device_memory(device: object = None) -> int | None:
    """Memory of the device a network runs on: a CUDA device's own, else the machine's RAM
    (None when the system cannot say)."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def human(n: float) -> str:
    """Bytes as `1.5 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def check_image_size(path: object, shape: tuple[int, ...], itemsize: int = 4) -> None:
    """Refuse an image whose declared `shape` (all axes, channels included) would need more
    than the memory limit as float32 (or as its own type when wider).

    Raises:
        SegpipeError: naming the file, the declared shape and size, and the limit.
    """
    voxels = 1
    for side in shape:
        if int(side) < 0:
            raise SegpipeError(f"{path}: header declares a negative size {tuple(shape)}")
        voxels *= int(side)
    need = voxels * max(4, int(itemsize))
    limit = max_image_bytes()
    if need > limit:
        dims = " x ".join(str(int(s)) for s in shape)
        raise SegpipeError(
            f"{path}: header declares a {dims} image ({human(need)} as float32), over the memory limit of "
            f"{human(limit)} (raise it with {ENV_MEMORY}, see docs/limits.md)"
        )


def check_label_value(value: int, source: object) -> None:
    """Refuse a declared label value outside 0..MAX_LABEL_VALUE (it would become that many channels)."""
    if not 0 <= int(value) <= MAX_LABEL_VALUE:
        raise SegpipeError(
            f"{source}: label value {value} is outside 0..{MAX_LABEL_VALUE} (each label value is an output "
            "channel and labels are stored as 8-bit integers)"
        )

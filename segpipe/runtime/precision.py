"""Choosing the arithmetic for the machine at hand (`precision: auto`).

On CPU, "auto" measures once per machine whether bf16 matrix multiplies are clearly
faster than fp32 ones, and remembers the answer in segpipe's cache folder
($SEGPIPE_CACHE_DIR, else $XDG_CACHE_HOME/segpipe, else ~/.cache/segpipe), so that the
same command on the same machine always runs the same arithmetic and gives the same masks.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from segpipe.atomic import write_json
from segpipe.errors import SegpipeError

ARITHMETIC = ("fp32", "bf16", "fp16")  # what runs; "auto" resolves to one of these
PRECISIONS = ("auto", *ARITHMETIC)
# bf16 convolutions gain less than bf16 matrix multiplies do: on a CPU whose bf16 matmul
# was 2.3x fp32's, segpipe infer ran 1.4x faster in bf16; at 0.5x it ran 1.3x slower.
BF16_MATMUL_ADVANTAGE = 1.5


def cpu_bf16_speedup(size: int = 1024, rounds: int = 5) -> float:
    """How many times faster this CPU multiplies bf16 matrices than fp32 ones, with torch's kernels.

    fp32 and bf16 products of two `size` x `size` matrices alternate for `rounds` rounds
    after a warm-up, and the best time of each is compared, so that a passing load
    on the machine slows both alike; about 0.1-0.2 s.
    """
    generator = torch.Generator().manual_seed(0)
    pairs = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        a @ b
        pairs[dtype] = (a, b)
    best = {dtype: float("inf") for dtype in pairs}
    for _ in range(rounds):
        for dtype, (a, b) in pairs.items():
            start = time.perf_counter()
            a @ b
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def cache_dir() -> Path:
    """segpipe's per-user cache folder."""
    if os.environ.get("SEGPIPE_CACHE_DIR"):
        return Path(os.environ["SEGPIPE_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "segpipe"
    try:
        return Path.home() / ".cache" / "segpipe"
    except RuntimeError:  # no home folder to be found
        return Path(tempfile.gettempdir()) / "segpipe-cache"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_prefers_bf16() -> bool:
    """Whether bf16 is the faster arithmetic on this CPU, measured once and remembered."""
    key = f"{_cpu_name()} | {os.cpu_count()} cpus | {torch.get_num_threads()} threads | torch {torch.__version__}"
    path = cache_dir() / "cpu_precision.json"
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("bf16"), bool):
        return entry["bf16"]
    speedup = cpu_bf16_speedup()
    known[key] = {"bf16": speedup >= BF16_MATMUL_ADVANTAGE, "bf16_matmul_speedup": round(speedup, 2)}
    try:
        write_json(path, known)
    except (OSError, SegpipeError):
        pass  # no writable cache folder: decide again next time
    return known[key]["bf16"]


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision to run: `name` itself, or for "auto" the faster one on `device`.

    On CPU, "auto" is bf16 where this CPU's bf16 matrix multiplies are at least 1.5x
    faster than fp32 ones, fp32 elsewhere. On CUDA it is bf16 where the GPU supports it,
    fp16 otherwise (autocast either way).
    """
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "fp32"
    return "bf16" if cpu_prefers_bf16() else "fp32"


def inference_precision(name: str, device: torch.device, trained: str) -> str:
    """The precision `infer` runs for a model trained in `trained`: `name`, except that "auto"
    on CPU keeps an fp32-trained model in fp32, so its masks are the ones its validation
    scored (bf16 moved a briefly trained figshare model's held-out patient from 0.076 to 0.044)."""
    if name == "auto" and device.type == "cpu" and trained == "fp32":
        return "fp32"
    return resolve_precision(name, device)


def check_precision(name: str, device: torch.device, what: str) -> None:
    """Raise a one-line error, prefixed by `what` (the option or config key), for a precision `device` cannot run."""
    if name not in PRECISIONS:
        raise SegpipeError(f"{what}: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "fp16" and device.type != "cuda":
        raise SegpipeError(f"{what}: fp16 needs a CUDA device; use bf16 on CPU")


def autocast(name: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass context for a resolved precision: none for fp32, else torch.autocast."""
    if name == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if name == "bf16" else torch.float16)

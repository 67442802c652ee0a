"""Choosing inference arithmetic for the machine at hand (`--precision auto`)."""

from __future__ import annotations

import functools
import time

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 convolutions gain less than bf16 matrix multiplies do: on a CPU whose bf16 matmul
# was 2.3x fp32's, segpipe infer ran 1.4x faster in bf16; at 0.5x it ran 1.3x slower.
BF16_MATMUL_ADVANTAGE = 1.5


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(size: int = 1024, repeats: int = 3) -> float:
    """How many times faster this CPU multiplies bf16 matrices than fp32 ones, with torch's kernels.

    Best of `repeats` timed products of two `size` x `size` matrices per type, after a
    warm-up; about 0.1 s at torch's current thread count.
    """
    best: dict[torch.dtype, float] = {}
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(size, size, generator=generator).to(dtype)
        b = torch.randn(size, size, generator=generator).to(dtype)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision to run: `name` itself, or for "auto" the faster one on `device`.

    On CPU, "auto" is bf16 where this CPU's bf16 matrix multiplies are clearly faster
    than fp32 ones (AMX, or AVX-512 bf16 units that run at full width), fp32 elsewhere.
    On CUDA it is bf16 where the GPU supports it, fp16 otherwise (autocast either way).
    """
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu":
        return "fp32"
    return "bf16" if cpu_bf16_speedup() >= BF16_MATMUL_ADVANTAGE else "fp32"

"""Benchmark segpipe's UNet and LinkNet against MONAI's UNet on CPU (or CUDA).

Measures forward+backward throughput (samples/s) and peak memory for every
combination of network, 2D/3D workload and fp32/bf16-autocast, and prints a
markdown table. Each configuration runs in a fresh subprocess so that its peak
resident set size (``ru_maxrss``) is its own; the table reports the peak and the
increase over the process's size just before the model and data were created.

Workloads: 2D 120x120 batch 16 and 3D 96^3 batch 2, 4 input and 4 output channels.
MONAI's UNet cannot take 120x120 (not a multiple of 16), so its 2D input is
zero-padded to 128x128 - the size segpipe's UNet pads to internally.

``--reuse-memory`` keeps freed memory in the process for reuse (what ``segpipe fit``
does on CPU by default, see segpipe/runtime/allocator.py), for every network alike.

Usage:
    python bench/bench_networks.py [--iters 3] [--warmup 1] [--only unet-2d ...] [--reuse-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKLOADS = {"2d": dict(spatial_dims=2, batch=16, size=(120, 120)), "3d": dict(spatial_dims=3, batch=2, size=(96, 96, 96))}
MODELS = ("segpipe-unet", "monai-unet", "segpipe-linknet")
PRECISIONS = ("fp32", "bf16")
CHANNELS = 4


def build(model: str, spatial_dims: int) -> nn.Module:
    """Create a benchmarked network.

    Args:
        model: One of MODELS.
        spatial_dims: 2 or 3.
    """
    if model == "segpipe-unet":
        from segpipe.networks import build_network

        return build_network("unet", spatial_dims, CHANNELS, CHANNELS, filters=16, depth=4, norm="instance")
    if model == "segpipe-linknet":
        from segpipe.networks import build_network

        return build_network("linknet", spatial_dims, CHANNELS, CHANNELS)
    if model == "monai-unet":
        from monai.networks.nets import UNet as MonaiUNet

        return MonaiUNet(
            spatial_dims=spatial_dims,
            in_channels=CHANNELS,
            out_channels=CHANNELS,
            channels=(16, 32, 64, 128, 256),
            strides=(2, 2, 2, 2),
            num_res_units=2,
            norm="instance",
        )
    raise ValueError(model)


def rss_now_kib() -> int:
    """Current resident set size in KiB (Linux), or 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return 0


def worker(model_name: str, workload: str, precision: str, iters: int, warmup: int) -> dict:
    """Time forward+backward of one configuration in this process.

    Args:
        model_name: One of MODELS.
        workload: "2d" or "3d".
        precision: "fp32" or "bf16" (autocast).
        iters: Timed iterations.
        warmup: Untimed iterations first.

    Returns:
        Measurements as a JSON-serialisable dict.
    """
    spec = WORKLOADS[workload]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    baseline_kib = rss_now_kib()
    net = build(model_name, spec["spatial_dims"]).to(device).train()
    x = torch.randn(spec["batch"], CHANNELS, *spec["size"], device=device)
    if model_name == "monai-unet":
        pads = []
        for s in reversed(spec["size"]):
            pads += [0, (-s) % 16]
        x = F.pad(x, pads)
    target = torch.randn(spec["batch"], CHANNELS, *x.shape[2:], device=device)
    optimiser = torch.optim.SGD(net.parameters(), lr=1e-3)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=precision != "fp32"):
            out = net(x)
        loss = F.mse_loss(out.float(), target)
        loss.backward()
        optimiser.step()

    sync = torch.get_device_module(device).synchronize  # a no-op on the CPU
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    elapsed = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "model": model_name,
        "workload": workload,
        "precision": precision,
        "params": sum(p.numel() for p in net.parameters()),
        "samples_per_s": spec["batch"] * iters / elapsed,
        "s_per_iter": elapsed / iters,
        "peak_rss_mib": peak_kib / 1024,
        "delta_rss_mib": (peak_kib - baseline_kib) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations per configuration")
    parser.add_argument(
        "--only", nargs="*", default=None, help="restrict to workloads/models, e.g. 2d, 3d, monai-unet"
    )
    parser.add_argument(
        "--reuse-memory", action="store_true", help="keep freed memory for reuse (segpipe fit's CPU default), all networks"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reuse_memory:
        from segpipe.runtime.allocator import keep_freed_memory

        keep_freed_memory()

    if args.worker:
        model_name, workload, precision = args.worker.split(",")
        print(json.dumps(worker(model_name, workload, precision, args.iters, args.warmup)))
        return

    rows = []
    for workload in WORKLOADS:
        for model_name in MODELS:
            if args.only and workload not in args.only and model_name not in args.only:
                continue
            for precision in PRECISIONS:
                cmd = [
                    sys.executable,
                    __file__,
                    "--worker",
                    f"{model_name},{workload},{precision}",
                    "--iters",
                    str(args.iters),
                    "--warmup",
                    str(args.warmup),
                ] + (["--reuse-memory"] if args.reuse_memory else [])
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                    rows.append({"model": model_name, "workload": workload, "precision": precision, "error": tail[0]})
                else:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"done: {model_name} {workload} {precision}", file=sys.stderr, flush=True)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    memory = "freed memory kept for reuse" if args.reuse_memory else "glibc's default allocator settings"
    print(f"torch {torch.__version__}, {device}; {args.warmup} warm-up + {args.iters} timed iterations; {memory}\n")
    print("| workload | model | precision | params | samples/s | s/iter | peak RSS (MiB) | RSS increase (MiB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        shape = WORKLOADS[r["workload"]]
        label = f"{r['workload'].upper()} {'x'.join(map(str, shape['size']))} b{shape['batch']}"
        if "error" in r:
            print(f"| {label} | {r['model']} | {r['precision']} | error: {r['error']} |||||")
            continue
        print(
            f"| {label} | {r['model']} | {r['precision']} | {r['params']:,} | {r['samples_per_s']:.2f} "
            f"| {r['s_per_iter']:.2f} | {r['peak_rss_mib']:.0f} | {r['delta_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()

"""Where segpipe's per-window speed comes from (issue 6): one forward pass, each change added in turn.

The network is segpipe's 3D UNet (16 filters, depth 4, instance norm, 4 channels in, 4
out) on a batch of two 96^3 windows, fp32, the machine's default thread count. Each
configuration runs in a fresh process (the allocator setting is process-wide), warms up
once and reports the mean of `--repeats` passes.

    python bench/bench_infer_ablation.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

STEPS = [
    ("PyTorch module as trained (standard layout)", dict(channels_last=False, fuse=False, reuse=False)),
    ("+ channels-last", dict(channels_last=True, fuse=False, reuse=False)),
    ("+ fused in-place instance norm + ReLU", dict(channels_last=True, fuse=True, reuse=False)),
    ("+ freed memory kept for reuse (segpipe infer)", dict(channels_last=True, fuse=True, reuse=True)),
    ("only freed memory kept (standard layout, PyTorch's instance norm)", dict(channels_last=False, fuse=False, reuse=True)),
    ("freed memory kept + channels-last, PyTorch's instance norm", dict(channels_last=True, fuse=False, reuse=True)),
]


def one(channels_last: bool, fuse: bool, reuse: bool, repeats: int) -> float:
    """Seconds per forward pass of two windows in this configuration."""
    from segpipe.runtime.allocator import keep_freed_memory

    if reuse:
        keep_freed_memory()
    import torch

    from segpipe.networks import build_network
    from segpipe.networks.inference import optimize_for_inference

    torch.manual_seed(0)
    net = build_network("unet", 3, 4, 4, filters=16, depth=4, norm="instance").eval()
    if fuse:
        net = optimize_for_inference(net, channels_last=channels_last)
    elif channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 4, 96, 96, 96)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(**json.loads(args.one), repeats=args.repeats)))
        return
    base = None
    print("| configuration | s per 2 windows | speed-up |")
    print("|---|---:|---:|")
    for name, options in STEPS:
        proc = subprocess.run([sys.executable, __file__, "--repeats", str(args.repeats), "--one", json.dumps(options)],
                              capture_output=True, text=True, check=True)
        seconds = json.loads(proc.stdout.strip().splitlines()[-1])
        base = base or seconds
        print(f"| {name} | {seconds:.2f} | {base / seconds:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

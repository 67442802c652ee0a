"""Seconds per training iteration (forward, backward, optimiser step) of the networks the
2D ready configs train, beside the seeds' plain MONAI recipes, on CPU.

Each variant runs in this process one after the other with the same thread count; the
batch and patch are the configs' own. Data loading is not included. Every variant is timed
in PyTorch's standard memory layout and in the channels-last layout that `segpipe fit`
trains in (`train.channels_last`, default true).

    OMP_NUM_THREADS=1 python bench/bench_step_cost.py --threads 1 --iters 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (builder, in/out channels, batch, patch, loss)
VARIANTS = {
    "msd_2d_seed (unet plain, 16, depth 4)": ("segpipe", dict(filters=16, depth=4, norm="instance"), 4, 4, 16, (64, 80)),
    "msd_2d (unet strided, 16, depth 4)": ("segpipe", dict(filters=16, depth=4, norm="instance", stem="strided"), 4, 4, 16, (64, 80)),
    "msd plain MONAI seed (UNet 16-256, 128x128)": ("monai", dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2), 4, 4, 16, (128, 128)),
    "figshare_2d_seed (unet plain, 16, 256x256)": ("segpipe", dict(filters=16, depth=4, norm="batch"), 1, 2, 8, (256, 256)),
    "figshare_2d (unet strided, 8, 160x160)": ("segpipe", dict(filters=8, depth=4, norm="batch", stem="strided"), 1, 2, 8, (160, 160)),
    "figshare plain MONAI seed (UNet 16-128, 256x256)": ("monai", dict(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=0), 1, 1, 8, (256, 256)),
}


def build(kind: str, options: dict, cin: int, cout: int) -> torch.nn.Module:
    if kind == "monai":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=cin, out_channels=cout, **options)
    from segpipe.networks import build_network

    return build_network("unet", spatial_dims=2, in_channels=cin, out_channels=cout, **options)


def seconds_per_iteration(net: torch.nn.Module, cin: int, cout: int, batch: int, patch: tuple[int, int], iters: int,
                          channels_last: bool = False) -> float:
    x = torch.randn(batch, cin, *patch)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    y = torch.randint(0, max(cout, 2), (batch, *patch)) if cout > 1 else torch.rand(batch, 1, *patch).round()
    loss_fn = torch.nn.CrossEntropyLoss() if cout > 1 else torch.nn.BCEWithLogitsLoss()
    times = []
    for _ in range(iters + 1):
        started = time.perf_counter()
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - started)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median reported) after one warm-up")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}, fp32"
    print(f"| variant | batch x patch | s / iteration, standard layout ({threads}) | channels-last | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name, (kind, options, cin, cout, batch, patch) in VARIANTS.items():
        seconds = []
        for channels_last in (False, True):
            torch.manual_seed(0)
            net = build(kind, options, cin, cout).train()
            seconds.append(seconds_per_iteration(net, cin, cout, batch, patch, args.iters, channels_last))
        print(f"| {name} | {batch} x {patch[0]}x{patch[1]} | {seconds[0]:.3f} | {seconds[1]:.3f} | "
              f"{seconds[0] / seconds[1]:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

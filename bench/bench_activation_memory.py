"""Peak memory of one inference forward pass of segpipe's networks on CPU, measured, beside
the estimate `infer` checks windows against (`segpipe.prediction.check_activations`:
4 bytes x voxels x (input + output channels + the network's `peak_per_voxel`)), and beside
MONAI's UNet of the same width for scale.

Each variant runs in a fresh process (one thread, inference mode): the measurement is the
growth of the process's peak resident memory over one forward pass of a random batch.

    python bench/bench_activation_memory.py
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHANNELS = 4  # in and out, as a BraTS model
# name: (network, options, spatial dims, window side, windows in a batch)
VARIANTS = {
    "unet 3D plain, 16 filters, 128^3": ("unet", dict(filters=16, depth=4), 3, 128, 1),
    "unet 3D plain, 16 filters, 96^3 x 2": ("unet", dict(filters=16, depth=4), 3, 96, 2),
    "unet 3D plain, 4 filters, 160^3": ("unet", dict(filters=4, depth=4), 3, 160, 1),
    "unet 3D strided, 8 filters, 128^3": ("unet", dict(filters=8, depth=4, stem="strided"), 3, 128, 1),
    "unet 2D plain, 16 filters, 256^2 x 8": ("unet", dict(filters=16, depth=4), 2, 256, 8),
    "unet 2D strided, 16 filters, 256^2 x 8": ("unet", dict(filters=16, depth=4, stem="strided"), 2, 256, 8),
    "linknet 3D, 16 filters, 96^3": ("linknet", dict(filters=16), 3, 96, 1),
    "MONAI UNet 3D 16-256, 2 res units, 128^3": ("monai", dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                                                                num_res_units=2), 3, 128, 1),
}


def measure(name: str) -> dict:
    """Run in a child process: build, forward once, report peak growth and the estimate."""
    import torch

    kind, options, dims, side, batch = VARIANTS[name]
    torch.set_num_threads(1)
    if kind == "monai":
        from monai.networks.nets import UNet

        net = UNet(spatial_dims=dims, in_channels=CHANNELS, out_channels=CHANNELS, **options)
    else:
        from segpipe.networks import build_network

        net = build_network(kind, dims, CHANNELS, CHANNELS, **options)
    net.eval()
    x = torch.randn(batch, CHANNELS, *([side] * dims))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with torch.inference_mode():
        net(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    voxels = batch * side**dims
    per_voxel = getattr(net, "peak_per_voxel", None)
    estimate = 4 * voxels * (2 * CHANNELS + per_voxel) if per_voxel else None
    return {"measured": peak, "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    print("| network, window | measured peak (MiB) | segpipe's estimate (MiB) | estimate / measured |")
    print("|---|---|---|---|")
    for name in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        measured, estimate = row["measured"] / 2**20, row["estimate"]
        shown = f"{estimate / 2**20:.0f} | {row['estimate'] / row['measured']:.2f}" if estimate else "- | -"
        print(f"| {name} | {measured:.0f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()

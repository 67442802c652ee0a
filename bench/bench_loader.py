"""Milliseconds per training batch of the sampling and augmentation chain `segpipe fit` runs,
against MONAI's defaults, side by side: metadata tracking on (MONAI's default) or off (what `fit`
does), and the crop's patch-centre indices searched on every draw (MONAI's default) or found once
per case and cached (`CropIndicesd`, what `fit` does).

The chain is fit's own (load, pad, foreground-oversampled crop, the config's `train.augment`)
over a prepared folder's cached cases; only the data path is timed, no network. The settings
alternate, twice each, in one process with the same thread count.

    python bench/bench_loader.py --prepared /tmp/bq_2t/msd_2d/prepared --config msd_2d --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from monai.data import CacheDataset, DataLoader, set_track_meta
    from monai.transforms import Compose

    from segpipe.config import load_config
    from segpipe.configs import resolve_config
    from segpipe.transforms.augment import CropIndicesd, training_chain, with_prepared_loading

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", type=Path, required=True, help="a `segpipe preprocess` output folder")
    parser.add_argument("--config", default="msd_2d", help="the ready config whose batch, patch and augmentation are timed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t = load_config(resolve_config(args.config)).train
    plan = json.loads((args.prepared / "plan.json").read_text())
    patch = t.patch_size or plan["patch_size"]
    manifest = json.loads((args.prepared / "manifest.json").read_text())["cases"]
    cases = [{"image": str(args.prepared / c["image"]), "label": str(args.prepared / c["label"])} for c in manifest.values()]
    chain = with_prepared_loading(training_chain(patch, t.samples_per_volume, t.pos_neg_ratio, t.augment))
    # MONAI's default: without the cached indices the crop searches the label on every draw
    per_draw = Compose([step for step in chain.transforms if not isinstance(step, CropIndicesd)])
    ways = {  # name: (metadata tracking, chain)
        "MONAI's defaults: metadata on, indices per draw": (True, per_draw),
        "metadata off, indices per draw (segpipe fit before)": (False, per_draw),
        "metadata off, indices once per case (segpipe fit)": (False, chain),
    }
    volumes = max(1, -(-t.batch_size // t.samples_per_volume))
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(2):
        for name, (track, way) in ways.items():
            set_track_meta(track)
            dataset = CacheDataset(cases, transform=way, progress=False)
            sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=args.batches * volumes)
            started = time.perf_counter()
            for _ in DataLoader(dataset, batch_size=volumes, sampler=sampler):
                pass
            times[name].append(1000 * (time.perf_counter() - started) / args.batches)
    base = min(times[next(iter(ways))])
    print(f"{args.config}: batch {t.batch_size}, patch {'x'.join(map(str, patch))}, augment {t.augment}, "
          f"{len(cases)} cases, {args.threads} thread{'s' if args.threads > 1 else ''}, best of 2 runs of {args.batches} batches")
    print("| way | ms / batch | speed-up |")
    print("|---|---:|---:|")
    for name, runs in times.items():
        print(f"| {name} | {min(runs):.1f} | {base / min(runs):.2f}x |")


if __name__ == "__main__":
    main()

"""Quality benchmark (issue 5): segpipe's msd_2d recipe against the seed's plain MONAI recipe.

Both train for the same wall-clock budget on the same patients (fold 0 of segpipe's
patient-grouped 5-fold split: 80 % of patients train, 20 % are held out), at the same
time, one CPU thread each, so any other load on the machine slows both alike. Both are
then scored per patient (slices pooled) on the held-out patients by `segpipe evaluate`.

    python bench/bench_train_2d.py --data ../shared/data/BrainTumour_2D --minutes 15 --work /tmp/bench_train2d

The reference (`--reference`, run by this script) is the seed project's recipe:
monai.networks.nets.UNet (channels 16-32-64-128-256, strides 2, 2 residual units),
cross-entropy, Adam 1e-3, batch 16 of random whole slices (intensities / 255), no
augmentation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LABELS = {1: "edema", 2: "non-enhancing_tumour", 3: "enhancing_tumour"}


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


def reference(data: Path, splits: Path, out: Path, seconds: float, seed: int = 0, fold_index: int = 0, threads: int = 1,
              device: str = "cpu") -> int:
    """Train the plain MONAI recipe for `seconds`, then write PNG masks of the held-out slices; the iterations done."""
    import torch
    from monai.networks.nets import UNet
    from PIL import Image

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    fold = json.loads(splits.read_text())[fold_index]
    images = data / "training_images"
    labels = data / "training_labels"
    x = np.stack([_png(images / f"{c}.png") for c in fold["train"]]).astype(np.float32) / 255.0
    y = np.stack([_png(labels / f"{c}.png") for c in fold["train"]]).astype(np.int64)
    pad = [(0, 0), (4, 4), (4, 4)]  # 120 -> 128, divisible by the four strides
    x, y = torch.from_numpy(np.pad(x, pad))[:, None].to(device), torch.from_numpy(np.pad(y, pad)).to(device)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=4, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
               num_res_units=2).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    start, iterations = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        idx = torch.from_numpy(rng.integers(0, len(x), 16)).to(device)
        opt.zero_grad()
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        torch.get_device_module(device).synchronize(device)  # a wall-clock budget counts finished steps only
        iterations += 1
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for case in fold["val"]:
            img = np.pad(_png(images / f"{case}.png").astype(np.float32) / 255.0, 4)
            pred = net(torch.from_numpy(img)[None, None].to(device)).argmax(1)[0, 4:-4, 4:-4].cpu().numpy().astype(np.uint8)
            Image.fromarray(pred).save(out / f"{case}.png")
    return iterations


def _segpipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "segpipe", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/BrainTumour_2D")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_train2d"))
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--splits", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        iterations = reference(args.data, args.splits, args.work / "reference_pred", args.seconds)
        (args.work / "reference_stats.json").write_text(json.dumps({"iterations": iterations, "seconds": args.seconds}))
        return

    work, seconds = args.work, args.minutes * 60
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(_segpipe("preprocess", "-i", str(args.data), "-o", str(work / "prepared"), "--config", "msd_2d", "-q"), check=True)
    fit = subprocess.Popen(
        _segpipe("fit", "-d", str(work / "prepared"), "-o", str(work / "model"), "--config", "msd_2d", "--fold", "0", "-q",
                 "--set", f"train.max_seconds={seconds}", "--set", "train.epochs=100000", "--set", "train.val_every=100000",
                 "--set", "train.threads=1"),
        env=env,
    )
    ref = subprocess.Popen([sys.executable, __file__, "--reference", "--data", str(args.data), "--work", str(work),
                            "--splits", str(work / "prepared" / "splits.json"), "--seconds", str(seconds)], env=env)
    if fit.wait() != 0 or ref.wait() != 0:
        sys.exit("a training run failed")

    fold = json.loads((work / "prepared" / "splits.json").read_text())[0]
    held_out = work / "held_out_images"
    held_out.mkdir(exist_ok=True)
    for case in fold["val"]:
        link = held_out / f"{case}.png"
        if not link.exists():
            shutil.copyfile((args.data / "training_images" / f"{case}.png").resolve(), link)  # segpipe refuses links out of its input folder
    subprocess.run(_segpipe("infer", "-m", str(work / "model"), "-i", str(held_out), "-o", str(work / "segpipe_pred"), "-q", "--overwrite"), check=True)
    import pandas as pd

    rows = {}
    for name, pred in (("segpipe (msd_2d.yaml)", work / "segpipe_pred"), ("plain MONAI (seed recipe)", work / "reference_pred")):
        report = work / f"report_{pred.name}"
        subprocess.run(_segpipe("evaluate", "-p", str(pred), "-l", str(args.data), "-o", str(report), "-q"), check=True)
        table = pd.read_csv(report / "per_patient.csv")
        rows[name] = {label: table[f"dice_{label}"].mean() for label in LABELS.values()}
        rows[name]["mean"] = float(np.nanmean([rows[name][label] for label in LABELS.values()]))
        rows[name]["patients"] = len(table)
    metrics = pd.read_csv(work / "model" / "metrics.csv")
    ref_stats = json.loads((work / "reference_stats.json").read_text())
    rows["segpipe (msd_2d.yaml)"]["iterations"] = int(metrics["iterations"].sum())
    rows["plain MONAI (seed recipe)"]["iterations"] = ref_stats["iterations"]
    print(f"\nMean per-patient Dice on {len(fold['val'])} held-out slices, {args.minutes:g} min training each, 1 thread each, concurrently\n")
    print("| method | edema | non-enhancing | enhancing | mean | patients | iterations (batch 16) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['edema']:.3f} | {r['non-enhancing_tumour']:.3f} | {r['enhancing_tumour']:.3f} | {r['mean']:.3f} | {r['patients']} | {r['iterations']} |")


if __name__ == "__main__":
    main()

"""Peak memory and time of `segpipe evaluate` against the plain MONAI way, on BraTS-sized volumes.

Makes N synthetic cases of 240 x 240 x 155 (the MSD/BraTS grid): a reference of three nested
labels with rough borders and a prediction that is the reference shifted and eroded in
places. Each arm runs in a fresh process and reports its own peak resident memory:

- segpipe: `segpipe evaluate --pred P --labels L --output R` (per-patient Dice, HD95, volumes,
  sensitivity, precision, overlays and report.html);
- MONAI: `LoadImage`, one-hot labels, `DiceMetric` and `HausdorffDistanceMetric(percentile=95)`
  case by case (the seeds' way of scoring), nothing kept between cases.

The growth of the peak from the smaller to the larger case count, per case, is what a whole
dataset costs: 484 cases for MSD Task01, 1251 for BraTS 2021.

    python bench/bench_evaluate.py --cases 5 20 --work /tmp/bench_evaluate
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = (240, 240, 155)


def make_cases(root: Path, count: int) -> tuple[Path, Path]:
    """`count` reference and prediction NIfTI files under root/labels and root/pred (kept between runs)."""
    import nibabel as nib
    from scipy import ndimage

    labels, pred = root / "labels", root / "pred"
    labels.mkdir(parents=True, exist_ok=True)
    pred.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"case_{i:04d}.nii.gz"
        if (labels / name).is_file() and (pred / name).is_file():
            continue
        rng = np.random.default_rng(i)
        grid = np.indices(SHAPE, dtype=np.float32)
        centre = rng.uniform([70, 70, 45], [170, 170, 110])
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 4) * 40
        dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) + noise
        ref = np.zeros(SHAPE, np.uint8)
        ref[dist < 35] = 1  # edema
        ref[dist < 20] = 2  # non-enhancing
        ref[(dist > 12) & (dist < 17)] = 3  # enhancing rim
        moved = np.roll(ref, (3, -2, 1), axis=(0, 1, 2))
        moved[ndimage.binary_erosion(moved > 0, iterations=2) ^ (moved > 0)] = 0
        nib.save(nib.Nifti1Image(ref, np.eye(4)), labels / name)
        nib.save(nib.Nifti1Image(moved, np.eye(4)), pred / name)
    return labels, pred


def run_segpipe(labels: Path, pred: Path, out: Path) -> None:
    from segpipe.pipeline.evaluate import evaluate

    evaluate(pred, labels, out)


def run_monai(labels: Path, pred: Path, out: Path) -> None:
    import torch
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.transforms import LoadImage

    load = LoadImage(image_only=True)
    dice, hd = DiceMetric(include_background=False), HausdorffDistanceMetric(include_background=False, percentile=95)
    for path in sorted(labels.glob("*.nii.gz")):
        ref = torch.as_tensor(np.asarray(load(path)), dtype=torch.long)
        pre = torch.as_tensor(np.asarray(load(pred / path.name)), dtype=torch.long)
        one_hot = [torch.nn.functional.one_hot(x, 4).permute(3, 0, 1, 2)[None] for x in (pre, ref)]
        dice(*one_hot)
        hd(*one_hot)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mean.json").write_text(json.dumps({"dice": dice.aggregate().item(), "hd95": hd.aggregate().item()}))


def child(arm: str, root: Path, count: int) -> None:
    """Score the first `count` cases with one arm; print seconds and peak memory as JSON."""
    sub = root / f"n{count}"
    for side in ("labels", "pred"):
        (sub / side).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            link = sub / side / f"case_{i:04d}.nii.gz"
            if not link.exists():
                link.hardlink_to(root / side / link.name)  # not a symbolic link: evaluate refuses links out of its inputs
    out = root / f"out_{arm}_{count}"
    start = time.perf_counter()
    (run_segpipe if arm == "segpipe" else run_monai)(sub / "labels", sub / "pred", out)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"arm": arm, "cases": count, "seconds": seconds, "peak_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_evaluate"))
    parser.add_argument("--arms", nargs="+", default=["segpipe", "monai"], choices=["segpipe", "monai"])
    parser.add_argument("--child", nargs=2, metavar=("ARM", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.work, int(args.child[1]))
        return
    make_cases(args.work, max(args.cases))
    rows = []
    for count in sorted(args.cases):
        for arm in args.arms:
            result = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--child", arm, str(count)],
                                    capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print("| arm | cases | peak memory (MB) | seconds | s per case |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arm']} | {r['cases']} | {r['peak_mb']:.0f} | {r['seconds']:.1f} | {r['seconds'] / r['cases']:.2f} |")
    low, high = min(args.cases), max(args.cases)
    for arm in args.arms:
        by = {r["cases"]: r["peak_mb"] for r in rows if r["arm"] == arm}
        if high > low:
            print(f"{arm}: {(by[high] - by[low]) / (high - low):.1f} MB more peak memory per case")


if __name__ == "__main__":
    main()

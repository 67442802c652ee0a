"""figshare slices of 512 x 512 against 256 x 256: one model, both sizes, side by side.

The figshare set mixes 512 x 512 slices (0.49 mm pixels) with 256 x 256 ones of the same
field of view; the shared stand-in is all 256. This takes the fold models and held-out
slices of a `bench_quality.py` figshare run, writes each held-out slice again at 512 x 512
(bicubic image, mask resampled and thresholded at 0.5: the same head, twice the pixels) and
scores the same weights three ways, pooled over the folds, per patient with `segpipe evaluate`:

- the 256 slices as they are;
- the 512 slices segmented at their own pixel size (the plan without a target spacing: what
  segpipe did before MAT-files were read at the set's pixel size);
- the 512 slices on the model's 0.98 mm grid (`figshare_2d`'s `preprocess.target_spacing`).

Both plans are copies of the trained model with only `target_spacing` changed. The weights
fit both: a 256 slice is read at 0.98 mm, so resampling it to 0.98 mm leaves it unchanged.

    python bench/bench_quality.py --task figshare_2d --minutes 20 --threads 1 --work /tmp/bq_f20
    python bench/bench_figshare_sizes.py --run /tmp/bq_f20/figshare_2d/20min --work /tmp/bench_sizes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
GRID = [0.98, 0.98]


def upsample_twice(source: Path, target: Path) -> None:
    """One figshare slice written again with twice the pixels per side."""
    import torch

    from segpipe.data.mat_file import read_mat_field, read_mat_header, write_figshare_mat

    image = torch.from_numpy(read_mat_field(source, "image").astype(np.float32))[None, None]
    mask = torch.from_numpy(read_mat_field(source, "tumorMask").astype(np.float32))[None, None]
    image = torch.nn.functional.interpolate(image, scale_factor=2, mode="bicubic")[0, 0].round().clamp(-32768, 32767)
    mask = torch.nn.functional.interpolate(mask, scale_factor=2, mode="bilinear")[0, 0] > 0.5
    header = read_mat_header(source)
    write_figshare_mat(target, image.numpy().astype(np.int16), mask.numpy(), label=header["tumour_label"], pid=header["pid"])


def model_with_spacing(source: Path, target: Path, spacing: list[float] | None) -> Path:
    """A copy of a model folder whose plan resamples to `spacing` (None: not at all)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("tensorboard"))
    plan = json.loads((target / "plan.json").read_text())
    plan["target_spacing"] = spacing
    plan["preprocess"]["target_spacing"] = spacing
    (target / "plan.json").write_text(json.dumps(plan, indent=1))
    return target


def score(models: Path, held: Path, out: Path, folds: list[int], threads: int) -> dict[str, float]:
    """Each fold model segments its held-out slices; pooled per-patient scores and seconds per slice."""
    pred, refs = out / "pred", out / "refs"
    for folder in (pred, refs):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cases = []
    for k in folds:
        subprocess.run([sys.executable, "-m", "segpipe", "infer", "-m", str(models / f"fold_{k}"), "-i", str(held / f"fold_{k}"),
                        "-o", str(out / f"fold_{k}"), "--threads", str(threads), "-q"], check=True, env=env, cwd=HERE.parent)
        for mask in (out / f"fold_{k}").glob("*.png"):
            shutil.copyfile(mask, pred / mask.name)
        for slice_file in (held / f"fold_{k}").glob("*.mat"):
            shutil.copyfile(slice_file, refs / slice_file.name)
        cases.append(pd.read_csv(out / f"fold_{k}" / "cases.csv"))
    subprocess.run([sys.executable, "-m", "segpipe", "evaluate", "-p", str(pred), "-l", str(refs), "-o", str(out / "eval"), "-q"],
                   check=True, env=env, cwd=HERE.parent)
    summary = pd.read_csv(out / "eval" / "summary.csv").set_index("metric")["mean"]
    per_case = pd.concat(cases)
    return {"dice": summary["dice_tumour"], "hd95_mm": summary["hd95_mm_tumour"],
            "sensitivity": summary["sensitivity_tumour"], "precision": summary["precision_tumour"],
            "spacing_flags": float(per_case["flag_spacing"].mean()), "seconds_per_slice": float(per_case["seconds"].median())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a bench_quality figshare budget folder (figshare_2d/, held_out/)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_figshare_sizes"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    folds = sorted(int(p.name.split("_")[1]) for p in (args.run / "figshare_2d").glob("fold_*"))
    held_256, held_512 = args.run / "held_out", args.work / "held_512"
    for k in folds:
        (held_512 / f"fold_{k}").mkdir(parents=True, exist_ok=True)
        for slice_file in sorted((held_256 / f"fold_{k}").glob("*.mat")):
            upsample_twice(slice_file, held_512 / f"fold_{k}" / slice_file.name)
    own, grid = args.work / "models_own_pixels", args.work / "models_grid"
    for k in folds:
        model_with_spacing(args.run / "figshare_2d" / f"fold_{k}", own / f"fold_{k}", None)
        model_with_spacing(args.run / "figshare_2d" / f"fold_{k}", grid / f"fold_{k}", GRID)
    rows = [
        ("256 x 256 slices", score(grid, held_256, args.work / "s256", folds, args.threads)),
        ("512 x 512, at their own pixel size", score(own, held_512, args.work / "s512_own", folds, args.threads)),
        ("512 x 512, on the 0.98 mm grid (figshare_2d)", score(grid, held_512, args.work / "s512_grid", folds, args.threads)),
    ]
    print("| held-out slices | mean Dice | HD95 (mm) | sensitivity | precision | spacing flagged | s per slice (median) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['dice']:.3f} | {r['hd95_mm']:.1f} | {r['sensitivity']:.2f} | {r['precision']:.2f} "
              f"| {r['spacing_flags']:.0%} | {r['seconds_per_slice']:.3f} |")


if __name__ == "__main__":
    main()

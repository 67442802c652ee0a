"""What validating on the input's grid costs, against validating on the prepared grid.

The figshare set's slices are mostly 512 x 512 at 0.49 mm; `figshare_2d` trains them at
0.98 mm (256 x 256). Validation on the prepared grid then scores other voxels than
`evaluate` does on the masks `infer` writes at 512 x 512. segpipe maps such cases back onto
their input's grid (`segpipe/training/native.py`). This bench makes 512 x 512 slices of the
9 patients of ../shared/data/figshare_format_lgg (each 256 slice upsampled, its mask
smoothed so that it is not the 256 one repeated), trains `figshare_2d` on fold 0 for a
short budget, then times one validation of the fold's patients both ways, and scores the
fold with `infer` + `evaluate`:

    python bench/bench_validation.py --work /tmp/bench_validation
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "figshare_format_lgg"


def make_512(out: Path) -> Path:
    """The figshare-format slices upsampled to 512 x 512 (kept between runs)."""
    import h5py
    from scipy import ndimage

    from segpipe.data.mat_file import read_mat_field, write_figshare_mat

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(DATA.glob("*.mat")):
        if (out / path.name).is_file():
            continue
        with h5py.File(path, "r") as f:
            pid = "".join(chr(int(c)) for c in np.asarray(f["cjdata"]["PID"]).ravel())
        image = ndimage.zoom(read_mat_field(path, "image").astype(float), 2, order=1)
        mask = ndimage.binary_opening(ndimage.zoom(read_mat_field(path, "tumorMask").astype(float), 2, order=1) > 0.5)
        write_figshare_mat(out / path.name, image, mask, pid=pid)
    return out


def segpipe(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "segpipe", *map(str, args), "-q"], check=True)


def timed_validation(model: Path, prepared: Path, natives: bool, repeats: int) -> tuple[float, float, float]:
    """(median seconds of a validation, seconds to build the native grids, its mean Dice)."""
    import torch

    from segpipe.artifacts.model_folder import ModelFolder
    from segpipe.artifacts.prepared import load_prepared
    from segpipe.metrics.patients import label_structures, structures
    from segpipe.training.native import native_grids
    from segpipe.training.steps import Precision
    from segpipe.training.validation import validate

    data, trained = load_prepared(prepared), ModelFolder.open(model).load("best")
    cfg, cases = trained.config, []
    for cid in data.splits[0]["val"]:
        entry = data.manifest["cases"][cid]
        cases.append({"id": cid, "image": str(prepared / entry["image"]), "label": str(prepared / entry["label"]),
                      "patient": entry["patient"]})
    started = time.perf_counter()
    grids = native_grids(cases, data.manifest, data.plan["preprocess"], data.plan["layout"], data.plan["source"])[0] if natives else None
    built = time.perf_counter() - started
    ids, names = data.plan.label_ids, data.plan.label_names
    seconds, result = [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        result = validate(trained.net, cases, cfg.infer, cfg.train.patch_size, structures(ids, names, {}), label_structures(ids, names),
                          torch.device("cpu"), Precision(cfg.train.precision, torch.device("cpu")), trained.network, None,
                          cfg.train.threshold_grid, grids)
        seconds.append(time.perf_counter() - started)
    return float(np.median(seconds)), built, float(result["mean"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_validation"))
    parser.add_argument("--seconds", type=float, default=90, help="fold 0's training budget")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: no such folder (the benches read ../shared/data beside the repository)")
    raw, prepared, model = make_512(args.work / "fig512"), args.work / "prepared", args.work / "model"
    if not (prepared / "splits.json").is_file():
        segpipe("preprocess", "-i", raw, "-o", prepared, "--config", "figshare_2d")
    if not (model / "checkpoints" / "last.pt").is_file():
        segpipe("fit", "-d", prepared, "-o", model, "--config", "figshare_2d", "--fold", "0",
                "--set", f"train.max_seconds={args.seconds:g}")
    val = args.work / "val"
    shutil.rmtree(val, ignore_errors=True)
    val.mkdir()
    for cid in json.loads((prepared / "splits.json").read_text())[0]["val"]:
        shutil.copyfile(raw / f"{cid}.mat", val / f"{cid}.mat")
    shutil.rmtree(args.work / "pred", ignore_errors=True)
    segpipe("infer", "-m", model, "-i", val, "-o", args.work / "pred", "--labels", raw, "--checkpoint", "best")
    import pandas as pd

    shown = float(pd.read_csv(args.work / "pred" / "evaluation" / "summary.csv").set_index("metric").loc["dice_mean", "mean"])
    rows = []
    for natives in (False, True):
        seconds, built, dice = timed_validation(model, prepared, natives, args.repeats)
        rows.append({"validation": "on the input's grid (segpipe)" if natives else "on the prepared grid (before)",
                     "s per validation": round(seconds, 2), "s to build once": round(built, 2),
                     "mean Dice": round(dice, 4), "evaluate says": round(shown, 4), "equal": abs(dice - shown) < 1e-6})
    print(f"fold 0 of 512 x 512 figshare-format slices, {len(list(val.iterdir()))} validation slices\n")
    print("| " + " | ".join(rows[0]) + " |")
    print("|---|" + "---:|" * (len(rows[0]) - 1))
    for row in rows:
        print("| " + " | ".join(map(str, row.values())) + " |")


if __name__ == "__main__":
    main()

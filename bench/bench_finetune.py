"""Fine-tuning benchmark (issue 19): a 2D MSD model fine-tuned to figshare slices against scratch.

A source model is trained on the BrainTumour_2D slices (configs/msd_2d_seed.yaml, fold 0, a
wall-clock budget). Then, on each requested fold of the figshare-format slices, two runs
train with the same config, seed and number of iterations: one from scratch and one with
`segpipe fit --init-from SOURCE` (the head is re-initialised: labels 1-3 there, 1 tumour
here; the 1-channel stem is kept). The figshare slices are resampled to 2 mm pixels (128 x
128), the scale of the BrainTumour_2D slices (240 mm over 120 pixels), since learnt
features are tied to the scale they were learnt at. Each run's last checkpoint is scored on its fold's
held-out patients: Dice of the tumour, slices of a patient pooled. Every patient is held
out in exactly one fold, so with all folds each patient is scored once per variant.

    python bench/bench_finetune.py --work /tmp/bench_finetune --source-seconds 360 --folds 0,1,2,3,4

Both variants use the figshare_2d_seed recipe with the source's architecture (instance norm)
and lr 1e-3, patches of 128 x 128 (whole slices at 2 mm), `--epochs` x `--iterations` steps of batch 8, one CPU
thread. `--finetune-set KEY=VALUE` adds options to the fine-tuned run only (e.g.
train.init_lr_scale=0.3 or train.freeze=[encoder]).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SEGPIPE = [sys.executable, "-m", "segpipe"]


def _run(args: list[str]) -> float:
    print("$ segpipe " + " ".join(args[len(SEGPIPE):]), flush=True)
    started = time.perf_counter()
    subprocess.run(args, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - started


def _prepare(data: Path, out: Path, config: str, *extra: str) -> None:
    if not (out / "manifest.json").is_file():
        _run([*SEGPIPE, "preprocess", "--input", str(data), "--output", str(out), "--config", config, *extra, "--quiet"])


def per_patient_dice(model_dir: Path, prepared: Path, fold: int) -> dict[str, float]:
    """Tumour Dice per held-out patient of `fold` (slices pooled), from the last checkpoint."""
    import torch
    from monai.inferers import sliding_window_inference

    from segpipe.artifacts.model_folder import load_model_folder

    torch.set_num_threads(1)
    folder = load_model_folder(model_dir, "last")
    cases = json.loads((prepared / "manifest.json").read_text())["cases"]
    held_out = json.loads((prepared / "splits.json").read_text())[fold]["val"]
    roi = folder.config.train.patch_size
    tallies: dict[str, list[float]] = {}
    with torch.no_grad():
        for cid in held_out:
            image = torch.from_numpy(np.load(prepared / cases[cid]["image"]))[None]
            ref = np.load(prepared / cases[cid]["label"])[0] > 0
            logits = sliding_window_inference(image, roi_size=roi, sw_batch_size=4, predictor=folder.net, overlap=0.25, mode="gaussian")
            pred = logits.argmax(1)[0].numpy() > 0
            tally = tallies.setdefault(cases[cid]["patient"], [0.0, 0.0])
            tally[0] += 2.0 * float(np.logical_and(pred, ref).sum())
            tally[1] += float(pred.sum() + ref.sum())
    return {p: (inter / total if total else 1.0) for p, (inter, total) in sorted(tallies.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-data", type=Path, default=Path("../shared/data/BrainTumour_2D"))
    parser.add_argument("--target-data", type=Path, default=Path("../shared/data/figshare_format_lgg"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_finetune"))
    parser.add_argument("--source-seconds", type=float, default=360.0, help="training budget of the source model")
    parser.add_argument("--folds", default="0,1,2,3,4", help="figshare folds to run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20, help="iterations per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-spacing", type=float, default=2.0,
                        help="resample the figshare slices (1 mm pixels as read) to this spacing, that of BrainTumour_2D; 0: keep 256 x 256")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    _prepare(args.source_data, work / "prepared_msd2d", "msd_2d")
    spacing = f"preprocess.target_spacing=[{args.target_spacing},{args.target_spacing}]"
    _prepare(args.target_data, work / "prepared_figshare", "figshare_2d", *(["--set", spacing] if args.target_spacing else []))
    source = work / "source_msd2d"
    if not (source / "checkpoints" / "last.pt").is_file():
        _run([*SEGPIPE, "fit", "--data", str(work / "prepared_msd2d"), "--output", str(source), "--config", "msd_2d_seed",
              "--fold", "0", "--set", "train.epochs=12", "--set", "train.iterations_per_epoch=50", "--set", "train.val_every=4",
              "--set", f"train.max_seconds={args.source_seconds}", "--set", "train.threads=1", "--quiet"])
    common = ["--config", "figshare_2d_seed", "--set", "model.norm=instance", "--set", "train.lr=0.001",
              "--set", "train.patch_size=[128,128]", "--set", f"train.epochs={args.epochs}",
              "--set", f"train.iterations_per_epoch={args.iterations}", "--set", "train.val_every=1000",
              "--set", f"train.seed={args.seed}", "--set", "train.threads=1", "--set", "train.precision=fp32", "--quiet"]
    variants = {"scratch": [], "fine-tuned": ["--init-from", str(source), *sum((["--set", s] for s in args.finetune_set), [])]}
    rows: dict[str, dict[str, float]] = {v: {} for v in variants}
    seconds: dict[str, float] = {v: 0.0 for v in variants}
    for fold in [int(f) for f in args.folds.split(",")]:
        for name, extra in variants.items():
            out = work / f"{name}_fold{fold}"
            if not (out / "checkpoints" / "last.pt").is_file():
                seconds[name] += _run([*SEGPIPE, "fit", "--data", str(work / "prepared_figshare"), "--output", str(out),
                                       "--fold", str(fold), *common, *extra])
            rows[name].update(per_patient_dice(out, work / "prepared_figshare", fold))
    patients = sorted(rows["scratch"])
    print(f"\nheld-out tumour Dice per patient (slices pooled); {args.epochs} x {args.iterations} iterations of batch 8 each")
    print(f"{'patient':<16} {'scratch':>8} {'fine-tuned':>10} {'difference':>10}")
    for p in patients:
        a, b = rows["scratch"][p], rows["fine-tuned"][p]
        print(f"{p:<16} {a:8.3f} {b:10.3f} {b - a:+10.3f}")
    a, b = np.mean([rows["scratch"][p] for p in patients]), np.mean([rows["fine-tuned"][p] for p in patients])
    wins = sum(rows["fine-tuned"][p] > rows["scratch"][p] for p in patients)
    print(f"{'mean':<16} {a:8.3f} {b:10.3f} {b - a:+10.3f}   fine-tuned better on {wins}/{len(patients)} patients")
    print(f"training wall time (s): scratch {seconds['scratch']:.0f}, fine-tuned {seconds['fine-tuned']:.0f}")
    summary = {"scratch": rows["scratch"], "fine-tuned": rows["fine-tuned"], "seconds": seconds, "args": vars(args)}
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()

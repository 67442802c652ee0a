"""Quality per CPU minute (issue 14): segpipe's ready configs against the seeds' plain MONAI
recipes, trained side by side for the same wall-clock budgets.

For every task, budget and fold, `segpipe fit --set train.max_seconds=...` and the plain
recipe train at the same time, each with `--threads` threads, on the same patients; each
then segments the fold's held-out patients. Predictions of all folds are pooled and scored
per patient (slices pooled) by `segpipe evaluate`.

- msd_2d on BrainTumour_2D, fold 0 of segpipe's patient-grouped 5-fold split. Plain
  recipe: bench_train_2d.reference (monai UNet 16-256, 2 residual units, CE, Adam 1e-3,
  batch 16 of whole slices).
- figshare_2d on figshare_format_lgg, all 5 folds pooled (9 patients): each fold model
  trains for the whole budget. Plain recipe: monai UNet 16-32-64-128 (strides 2), BCE,
  Adam 1e-4, batch 8 of whole 256x256 slices scaled to 0..1 per slice.

    python bench/bench_quality.py --task msd_2d figshare_2d --minutes 5 10 20 --threads 1 --work /tmp/bench_quality
    python bench/bench_quality.py --task msd_2d --minutes 5 --also msd_2d_seed      # a third arm
    python bench/bench_quality.py --task msd_2d --minutes 10 --threads 2 --sequential --work /tmp/bq_2threads
    python bench/bench_quality.py --task figshare_2d --minutes 10 --seed 1 --work /tmp/bq_seed1   # another draw
    python bench/bench_quality.py --task figshare_2d --minutes 10 --source-minutes 5 --no-ready --sequential

`--source-minutes S` adds a transfer arm: the task's config is first trained for S minutes (on
`--threads` threads, alone, with --seed) on every case of another labelled set of the same kind
of image (figshare_2d: BrainTumour_2D's T1-Gd slices, resampled to the figshare grid's scale),
then each fold fine-tunes from it (`fit --init-from`) for the rest of the budget. The source's
minutes are counted in every fold's budget although one source serves all folds; its steps are
counted once in the arm's iterations. `--no-ready` leaves the task's own config arm out.

segpipe's arms are scored with their last checkpoint (`--checkpoint last`): the held-out
patients are each fold's validation patients, so the best checkpoint would be chosen on the
very patients it is scored on (on figshare_2d that flattered segpipe by 0.02-0.08; on msd_2d the
best was the last). The plain recipe keeps no best either. `--checkpoint best` shows the
flattering number. For the same reason, a fold whose fit chose a foreground threshold on its
validation patients (train.threshold_grid, as figshare_2d) segments its held-out patients at the
median of the other folds' choices (`infer --threshold`), never at its own.

Runs into the same --work folder add up in results.csv (a task, budget and arm run again
replaces its row), so tasks can be given different budgets by separate runs.

Writes WORK/results.csv (one row per task, budget and arm), prints a markdown table, and
draws Dice against minutes into WORK/bench_quality.png (or --figure). With a few patients a
mean carries much luck, so each row also gives the 95 % bootstrap interval of its mean over
patients, and each segpipe arm its lead over the plain recipe patient by patient (mean, 95 %
interval, and on how many patients it is ahead); the figure shades the intervals.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
TASKS = {
    "msd_2d": {"data": DATA / "BrainTumour_2D", "folds": [0], "images": "training_images", "suffix": ".png"},
    "figshare_2d": {"data": DATA / "figshare_format_lgg", "folds": [0, 1, 2, 3, 4], "images": "", "suffix": ".mat",
                    # BrainTumour_2D's 2 mm pixels are read as 1 mm: 0.49 as read is figshare_2d's 0.98 mm
                    "source": {"name": "msd_2d", "data": DATA / "BrainTumour_2D",
                               "set": ["preprocess.target_spacing=[0.49,0.49]"]}},
}
PLAIN = "plain MONAI (seed recipe)"


@dataclass(frozen=True)
class Arm:
    """A segpipe arm: a ready config, trained from scratch or, with `source_minutes`, fine-tuned
    from a model trained first for that part of the budget on the task's source set."""

    config: str
    source: str | None = None
    source_minutes: float = 0.0

    @property
    def name(self) -> str:
        return self.config if self.source is None else f"{self.config} from {self.source} ({self.source_minutes:g} min)"

    @property
    def folder(self) -> str:
        return self.config if self.source is None else f"{self.config}_from_{self.source}_{self.source_minutes:g}min"


def transfer_arm(name: str, source_minutes: float, minutes: list[float]) -> Arm:
    """The transfer arm of task `name`; a task without a source set, or a source budget that
    leaves no fine-tuning, is refused in one line."""
    if "source" not in TASKS[name]:
        sys.exit(f"--source-minutes: task {name} has no source set (only {', '.join(t for t in TASKS if 'source' in TASKS[t])})")
    if source_minutes <= 0 or any(source_minutes >= m for m in minutes):
        sys.exit(f"--source-minutes {source_minutes:g}: must be above 0 and below every budget ({' '.join(f'{m:g}' for m in minutes)} min)")
    return Arm(name, TASKS[name]["source"]["name"], source_minutes)


def fit_command(arm: Arm, prepared: Path, model: Path, fold: int, minutes: float, threads: int, seed: int,
                device: str, source_model: Path | None = None) -> list[str]:
    """`segpipe fit` of one arm's fold: the budget less the source's minutes, from `source_model` if any."""
    seconds = (minutes - arm.source_minutes) * 60
    init = ["--init-from", source_model] if arm.source is not None else []
    return _segpipe("fit", "-d", prepared, "-o", model, "--config", arm.config, "--fold", fold, "-q", "--device", device,
                    *init, "--set", f"train.max_seconds={seconds:g}", "--set", f"train.threads={threads}",
                    "--set", f"train.seed={seed}")


def train_source(name: str, arm: Arm, work: Path, threads: int, seed: int, device: str, env: dict) -> tuple[Path, int]:
    """Train (once per --work) the source model of a transfer arm on every case of the task's
    source set, prepared with the task's config at its scale; its folder and its steps."""
    import pandas as pd

    source = TASKS[name]["source"]
    prepared = work / name / f"source_{arm.source}" / "prepared"
    if not (prepared / "splits.json").is_file():
        subprocess.run(_segpipe("preprocess", "-i", source["data"], "-o", prepared, "--config", arm.config, "-q",
                                *sum((["--set", s] for s in source["set"]), [])), check=True)
    model = work / name / f"source_{arm.source}" / f"{arm.source_minutes:g}min"
    if not (model / "checkpoints" / "last.pt").is_file():
        subprocess.run(_segpipe("fit", "-d", prepared, "-o", model, "--config", arm.config, "--all-cases", "-q",
                                "--device", device, "--set", f"train.max_seconds={arm.source_minutes * 60:g}",
                                "--set", f"train.threads={threads}", "--set", f"train.seed={seed}"), check=True, env=env)
    return model, int(pd.read_csv(model / "metrics.csv")["iterations"].sum())


def figshare_reference(data: Path, splits: Path, out: Path, seconds: float, fold_index: int, threads: int, seed: int = 0,
                       device: str = "cpu") -> int:
    """Train the seed's plain MONAI U-Net on figshare slices for `seconds`; PNG masks of the held-out slices."""
    import torch
    from monai.networks.nets import UNet

    sys.path.insert(0, str(HERE.parent))
    from segpipe.data.figshare import read_mat_field
    from segpipe.writers.masks import write_mask

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    fold = json.loads(splits.read_text())[fold_index]

    def image(cid: str) -> np.ndarray:
        x = read_mat_field(data / f"{cid}.mat", "image").astype(np.float32)
        return (x - x.min()) / max(float(x.max() - x.min()), 1e-6)

    x = torch.from_numpy(np.stack([image(c) for c in fold["train"]]))[:, None].to(device)
    y = torch.from_numpy(np.stack([read_mat_field(data / f"{c}.mat", "tumorMask") for c in fold["train"]]).astype(np.float32))[:, None].to(device)
    net = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(16, 32, 64, 128), strides=(2, 2, 2)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(seed)
    start, iterations = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        idx = torch.from_numpy(rng.integers(0, len(x), 8)).to(device)
        opt.zero_grad()
        loss_fn(net(x[idx]), y[idx]).backward()
        opt.step()
        torch.get_device_module(device).synchronize(device)  # a wall-clock budget counts finished steps only
        iterations += 1
    net.eval()
    out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for cid in fold["val"]:
            pred = (net(torch.from_numpy(image(cid))[None, None].to(device))[0, 0] > 0).cpu().numpy().astype(np.uint8)
            write_mask("figshare", data / f"{cid}.mat", pred, out / f"{cid}.png", None)
    return iterations


def interval(values: np.ndarray, resamples: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of `values` (one per patient), resampling patients."""
    values = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    low, high = np.percentile(values[draws].mean(axis=1), [2.5, 97.5])
    return float(low), float(high)


def paired(ours, plain) -> dict:
    """An arm against the plain recipe on the patients both scored: mean per-patient lead, its
    95 % bootstrap interval and on how many patients the arm is ahead."""
    both = ours[["patient", "dice_mean"]].merge(plain[["patient", "dice_mean"]], on="patient", suffixes=("", "_plain"))
    lead = (both["dice_mean"] - both["dice_mean_plain"]).to_numpy()
    low, high = interval(lead)
    return {"lead": float(lead.mean()), "lead_low": low, "lead_high": high, "ahead_on": int((lead > 0).sum())}


def validated_threshold(model: Path, checkpoint: str) -> float | None:
    """The foreground threshold a fold's `checkpoint` was validated with (train.threshold_grid), from
    metrics.csv: the last validation's for last.pt, the best epoch's for best.pt; None without one."""
    import pandas as pd

    metrics = pd.read_csv(model / "metrics.csv")
    if "val_threshold" not in metrics:
        return None
    rows = metrics[metrics["val_threshold"].notna()]
    if checkpoint == "best":
        rows = rows[rows["val_dice_mean"] == rows["val_dice_mean"].max()].head(1)
    return float(rows["val_threshold"].iloc[-1]) if len(rows) else None


def cross_fitted(chosen: dict[int, float | None], fold: int) -> float | None:
    """The threshold to segment `fold`'s held-out patients with: the median of the other folds'
    choices, so that it is never chosen on the patients it is scored on. With one fold, its
    own (flattering: the caller's table says so); None where no fold chose one."""
    others = [t for k, t in chosen.items() if k != fold and t is not None]
    if not others:
        return chosen.get(fold)
    return float(np.median(others))


def _segpipe(*args: object) -> list[str]:
    return [sys.executable, "-m", "segpipe", *map(str, args)]


def _held_out(task: dict, splits: list[dict], fold: int, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    source = task["data"] / task["images"] if task["images"] else task["data"]
    for cid in splits[fold]["val"]:
        link = folder / f"{cid}{task['suffix']}"
        if not link.exists():
            shutil.copyfile((source / f"{cid}{task['suffix']}").resolve(), link)  # segpipe refuses links out of its input folder
    return folder


def scored_arms(arms: list[Arm], plain: bool) -> list[tuple[str, str]]:
    """Name and folder of every arm a budget scores: the segpipe arms, then the plain recipe if run."""
    return [*((a.name, a.folder) for a in arms), *([(PLAIN, "plain")] if plain else [])]


def run_budget(name: str, minutes: float, threads: int, work: Path, arms: list[Arm], folds: list[int] | None = None,
               sequential: bool = False, checkpoint: str = "last", device: str = "cpu", seed: int = 0,
               plain: bool = True) -> list[dict]:
    """Train every arm (and, with `plain`, the plain recipe) on every fold of `name` for `minutes` (at
    the same time, or one after the other with `sequential`; a transfer arm's source first, alone),
    every arm with `seed`; score the pooled held-out predictions of each segpipe arm's `checkpoint`."""
    import pandas as pd

    task, seconds = TASKS[name], minutes * 60
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    prepared = work / name / "prepared"
    if not (prepared / "splits.json").is_file():
        subprocess.run(_segpipe("preprocess", "-i", task["data"], "-o", prepared, "--config", name, "-q"), check=True)
    splits = json.loads((prepared / "splits.json").read_text())
    run_dir = work / name / f"{minutes:g}min"
    iterations = {arm: 0 for arm, _ in scored_arms(arms, plain)}
    sources = {}
    for arm in arms:  # predictions of an earlier scoring (another checkpoint) must not be pooled in
        shutil.rmtree(run_dir / arm.folder / "pred", ignore_errors=True)
        if arm.source is not None:
            sources[arm], iterations[arm.name] = train_source(name, arm, work, threads, seed, device, env)
    for fold in folds if folds is not None else task["folds"]:
        procs = {}
        for arm in arms:
            model = run_dir / arm.folder / f"fold_{fold}"
            if not (model / "checkpoints" / "last.pt").is_file():
                procs[arm.name] = subprocess.Popen(fit_command(arm, prepared, model, fold, minutes, threads, seed, device,
                                                               sources.get(arm)), env=env)
                if sequential:
                    procs[arm.name].wait()
        ref_out = run_dir / "plain" / "pred"
        stats = run_dir / "plain" / f"fold_{fold}.json"
        if plain and not stats.is_file():
            procs[PLAIN] = subprocess.Popen([sys.executable, __file__, "--reference", name, "--fold", str(fold),
                                             "--seconds", str(seconds), "--threads", str(threads), "--work", str(work),
                                             "--splits", str(prepared / "splits.json"), "--out", str(ref_out),
                                             "--stats", str(stats), "--device", device, "--seed", str(seed)], env=env)
            if sequential:
                procs[PLAIN].wait()
        if any(p.wait() != 0 for p in procs.values()):
            sys.exit(f"{name}, {minutes:g} min, fold {fold}: a training run failed")
        if plain:
            iterations[PLAIN] += json.loads(stats.read_text())["iterations"]
    trained = folds if folds is not None else task["folds"]
    applied = {arm.name: {} for arm in arms}
    for arm in arms:
        chosen = {fold: validated_threshold(run_dir / arm.folder / f"fold_{fold}", checkpoint) for fold in trained}
        for fold in trained:
            model = run_dir / arm.folder / f"fold_{fold}"
            held_out = _held_out(task, splits, fold, run_dir / "held_out" / f"fold_{fold}")
            applied[arm.name][fold] = threshold = cross_fitted(chosen, fold)
            extra = ["--threshold", threshold] if threshold is not None else []
            subprocess.run(_segpipe("infer", "-m", model, "-i", held_out, "-o", run_dir / arm.folder / "pred", "-q",
                                    "--precision", "fp32", "--threads", threads, "--checkpoint", checkpoint, "--device", device,
                                    *extra), check=True, env=env)
            iterations[arm.name] += int(pd.read_csv(model / "metrics.csv")["iterations"].sum())
    tables = {}
    for arm, folder in scored_arms(arms, plain):
        report = run_dir / f"report_{folder}"
        subprocess.run(_segpipe("evaluate", "-p", run_dir / folder / "pred", "-l", task["data"], "-o", report, "-q"), check=True)
        tables[arm] = pd.read_csv(report / "per_patient.csv")
    base = {"task": name, "minutes": minutes, "threads": threads, "checkpoint": checkpoint, "seed": seed}
    return budget_rows(tables, applied, iterations, base)


def budget_rows(tables: dict, applied: dict, iterations: dict, base: dict) -> list[dict]:
    """One results row per scored arm: its per-patient mean and interval, its steps, the
    thresholds its folds were segmented at, and (where the plain recipe ran) its lead over it."""
    rows = []
    for arm, table in tables.items():
        low, high = interval(table["dice_mean"])
        row = {**base, "arm": arm, "dice_mean": table["dice_mean"].mean(), "dice_low": low, "dice_high": high,
               "patients": len(table), "iterations": iterations[arm]}
        if arm == PLAIN:
            row["checkpoint"] = "last"
        if "dice_whole_tumour" in table:
            row["dice_whole_tumour"] = table["dice_whole_tumour"].mean()
        if arm != PLAIN and PLAIN in tables:
            row.update(paired(table, tables[PLAIN]))
        if arm != PLAIN and any(v is not None for v in applied[arm].values()):
            own = "chosen on these patients: " if len(applied[arm]) == 1 else ""
            row["thresholds"] = own + "/".join("argmax" if v is None else f"{v:g}" for v in applied[arm].values())
        rows.append(row)
    return rows


def figure(results, path: Path) -> None:
    """Per-patient Dice against training minutes, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(results["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for arm, part in results[results["task"] == task].groupby("arm"):
            part = part.sort_values("minutes")
            line = ax.plot(part["minutes"], part["dice_mean"], marker="o", label=arm)[0]
            if "dice_low" in part and part["dice_low"].notna().any():
                ax.fill_between(part["minutes"], part["dice_low"], part["dice_high"], color=line.get_color(), alpha=0.15)
        ax.set(title=task, xlabel="training minutes", ylabel="per-patient Dice (mean of labels)", ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--minutes", nargs="+", type=float, default=[5, 10, 20])
    parser.add_argument("--threads", type=int, default=1, help="threads of each training process (they run at the same time)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_quality"))
    parser.add_argument("--also", nargs="*", default=[], help="further segpipe configs to train as arms, e.g. msd_2d_seed")
    parser.add_argument("--source-minutes", type=float, default=None, metavar="S",
                        help="add a transfer arm: S minutes of the budget train a source model on the task's source set, "
                             "the rest fine-tune each fold from it (figshare_2d only)")
    parser.add_argument("--no-ready", action="store_true", help="leave out the task's own ready config arm")
    parser.add_argument("--no-plain", action="store_true",
                        help="leave out the plain MONAI recipe (no lead over it is reported)")
    parser.add_argument("--sequential", action="store_true",
                        help="train the arms one after the other (each with the whole machine) instead of at the same time")
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument("--folds", nargs="+", type=int, default=None, help="only these folds (a quick check; the task's own folds otherwise)")
    parser.add_argument("--checkpoint", choices=["last", "best"], default="last",
                        help="segpipe's weights to score (best is chosen on the held-out patients themselves)")
    parser.add_argument("--device", default="cpu", help="where every arm trains and infers, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of every arm's training (a folder's trained models are reused: give each seed its own --work)")
    parser.add_argument("--reference", choices=list(TASKS), help=argparse.SUPPRESS)
    for hidden in ("--fold", "--seconds", "--splits", "--out", "--stats"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        if args.reference == "msd_2d":
            sys.path.insert(0, str(HERE))
            from bench_train_2d import reference

            iterations = reference(TASKS["msd_2d"]["data"], Path(args.splits), Path(args.out), float(args.seconds),
                                   seed=args.seed, fold_index=int(args.fold), threads=args.threads, device=args.device)
        else:
            iterations = figshare_reference(TASKS["figshare_2d"]["data"], Path(args.splits), Path(args.out),
                                            float(args.seconds), int(args.fold), args.threads, args.seed, device=args.device)
        Path(args.stats).write_text(json.dumps({"iterations": iterations, "seconds": float(args.seconds)}))
        return

    import pandas as pd

    arms = {name: [*([] if args.no_ready else [Arm(name)]), *map(Arm, args.also),
                   *([transfer_arm(name, args.source_minutes, args.minutes)] if args.source_minutes is not None else [])]
            for name in args.task}
    if not all(arms.values()):
        sys.exit("--no-ready: no arm is left to train (add --also or --source-minutes)")
    needed = [TASKS[n]["data"] for n in args.task] + [TASKS[n]["source"]["data"] for n in args.task if args.source_minutes]
    for data in needed:  # before any training, not after a fold's other arms have trained
        if not data.is_dir():
            sys.exit(f"{data}: no such folder (the benches read ../shared/data beside the repository)")
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.task:
        for minutes in args.minutes:
            rows += run_budget(name, minutes, args.threads, args.work, arms[name], args.folds, args.sequential,
                               args.checkpoint, args.device, args.seed, not args.no_plain)
    results = pd.DataFrame(rows)
    earlier = args.work / "results.csv"
    if earlier.is_file():  # runs of other tasks or budgets into the same folder add up
        before = pd.read_csv(earlier)
        keys = set(zip(results["task"], results["minutes"], results["arm"]))
        before = before[[k not in keys for k in zip(before["task"], before["minutes"], before["arm"])]]
        results = pd.concat([before, results], ignore_index=True).sort_values(["task", "minutes", "arm"])
    results.to_csv(earlier, index=False)
    rows = results.to_dict("records")
    figure(results, args.figure or args.work / "bench_quality.png")
    together = "one after the other" if args.sequential else "concurrently"
    where = f"{args.threads} thread(s) per run" if args.device == "cpu" else f"on {args.device}"
    print(f"\nPer-patient Dice on held-out patients (slices pooled), {where}, arms trained {together}\n")
    print("| task | minutes | arm | checkpoint | threshold per fold | mean Dice (95 % interval) | whole tumour "
          "| lead over plain (95 % interval) | ahead on | patients | iterations |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def spread(r: dict, key: str, low: str, high: str, form: str) -> str:  # rows of earlier runs lack the interval
        if pd.isna(r.get(key)):
            return "-"
        if pd.isna(r.get(low)):
            return format(r[key], form)
        return f"{r[key]:{form}} ({r[low]:{form}} to {r[high]:{form}})"

    for r in rows:
        wt = f"{r['dice_whole_tumour']:.3f}" if pd.notna(r.get("dice_whole_tumour")) else "-"
        checkpoint = r.get("checkpoint") if isinstance(r.get("checkpoint"), str) else "best"  # rows of runs before the column
        ahead = f"{int(r['ahead_on'])}/{r['patients']}" if pd.notna(r.get("ahead_on")) else "-"
        thresholds = r.get("thresholds") if isinstance(r.get("thresholds"), str) else "argmax"
        print(f"| {r['task']} | {r['minutes']:g} | {r['arm']} | {checkpoint} | {thresholds} | {spread(r, 'dice_mean', 'dice_low', 'dice_high', '.3f')} | {wt} "
              f"| {spread(r, 'lead', 'lead_low', 'lead_high', '+.3f')} | {ahead} | {r['patients']} | {r['iterations']} |")


if __name__ == "__main__":
    main()

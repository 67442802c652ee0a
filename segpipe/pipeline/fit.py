"""`segpipe fit`: train a network on a prepared dataset into a model folder."""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, ThreadDataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import Compose, LoadImaged
from tqdm import tqdm

from segpipe.atomic import remove_stale_partials, write_json, write_with, write_yaml
from segpipe.config import Config, TrainConfig
from segpipe.errors import SegpipeError
from segpipe.networks.inference import optimize_for_inference
from segpipe.pipeline.allocator import keep_freed_memory
from segpipe.pipeline.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from segpipe.pipeline.distributed import Dist, init_distributed, shutdown
from segpipe.pipeline.evaluate import default_regions
from segpipe.pipeline.model import build_from_spec, network_spec
from segpipe.pipeline.precision import ARITHMETIC, resolve_precision
from segpipe.pipeline.preprocess import load_prepared
from segpipe.pipeline.training import ListSampler, Precision, epoch_indices, make_optimizer, make_scheduler
from segpipe.reports.figures import training_curves
from segpipe.reports.metrics import dice_per_label, dice_per_region
from segpipe.transforms.augment import KEYS, training_chain


@dataclass
class FitResult:
    """Where the model went and how good it got."""

    model_dir: Path
    epochs: int
    best_metric: float
    best_epoch: int
    stopped_early: bool = False
    precision: str = "fp32"  # the arithmetic that trained (what "auto" chose)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally make torch's kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _cases(prepared: Path, manifest: dict[str, Any], ids: list[str]) -> list[dict[str, str]]:
    cases = manifest["cases"]
    missing = [cid for cid in ids if cid not in cases]
    if missing:
        raise SegpipeError(f"{prepared / 'splits.json'}: cases {missing[:3]} are not in manifest.json (re-run preprocess)")
    return [{"image": str(prepared / cases[c]["image"]), "label": str(prepared / cases[c]["label"]), "id": c} for c in ids]


def deep_supervised_loss(loss_fn: DiceCELoss, outputs: Any, target: torch.Tensor) -> torch.Tensor:
    """Loss of one output, or a halving-weighted sum over deep-supervision outputs."""
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target)
    total, norm = 0.0, 0.0
    for i, out in enumerate(outputs):
        weight = 0.5**i
        tgt = target if out.shape[2:] == target.shape[2:] else torch.nn.functional.interpolate(
            target.float(), size=out.shape[2:], mode="nearest"
        )
        total = total + weight * loss_fn(out, tgt)
        norm += weight
    return total / norm


def _nanmean(values: list[float]) -> float:
    """Mean over the scored (non-NaN) values; NaN when none was scored."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


@torch.no_grad()
def validate(
    net: torch.nn.Module, cases: list[dict[str, str]], cfg: Config, patch: list[int], labels: list[int],
    regions: dict[str, list[int]], device: torch.device, precision: Precision,
) -> dict[str, float]:
    """Sliding-window prediction of whole validation cases; mean Dice per label and region.

    Runs a copy of `net` rewritten for inference as `segpipe infer` does (infer.fuse,
    infer.channels_last), so validation Dice is what infer will give.
    """
    net.eval()
    predictor = optimize_for_inference(net, channels_last=cfg.infer.channels_last) if cfg.infer.fuse else net
    scores: dict[str, list[float]] = {}
    for case in cases:
        image = torch.from_numpy(np.load(case["image"]))[None].to(device)
        ref = np.load(case["label"])[0]
        with precision.autocast():
            logits = sliding_window_inference(
                image, roi_size=patch, sw_batch_size=cfg.infer.sw_batch_size, predictor=predictor,
                overlap=cfg.infer.overlap, mode=cfg.infer.mode,
            )
        pred = logits.argmax(1)[0].cpu().numpy()
        for k, v in dice_per_label(pred, ref, labels).items():
            scores.setdefault(str(k), []).append(v)
        for name, v in dice_per_region(pred, ref, regions).items():
            scores.setdefault(name, []).append(v)
    net.train()
    return {k: _nanmean(v) for k, v in scores.items()}


def _can_resume(model_dir: Path, resume: bool) -> bool:
    """Whether to continue from last.pt. A folder that `fit` started (it has checkpoints/)
    but that was stopped before its first checkpoint starts afresh; a folder that `fit`
    never touched is refused, so a mistyped --output is not silently trained from scratch."""
    last = model_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        if (model_dir / "checkpoints").is_dir():
            return False
        raise SegpipeError(f"{last}: nothing to resume from")
    return resume


def _prepare_model_dir(model_dir: Path, resume: bool) -> None:
    last = model_dir / "checkpoints" / "last.pt"
    if not resume and last.is_file():
        raise SegpipeError(f"{model_dir}: already holds a trained model; pass --resume to continue it or choose another --output")
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for folder in (model_dir, model_dir / "checkpoints"):  # temporaries of a process killed mid-write
        remove_stale_partials(folder)


def _tensorboard(model_dir: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(model_dir / "tensorboard"))


def fit(
    prepared_dir: str | Path,
    model_dir: str | Path,
    cfg: Config,
    *,
    resume: bool = False,
    quiet: bool = False,
    epochs_this_run: int | None = None,
) -> FitResult:
    """Train `cfg.model` on fold `cfg.train.fold` of a prepared dataset.

    Writes the model folder: config.yaml (resolved), plan.json, network.json,
    checkpoints/last.pt and best.pt (every epoch, atomically), metrics.csv, curves.png and
    TensorBoard events (if tensorboard is installed). With `resume`, training continues
    from last.pt with its optimiser, scheduler, scaler and random states: in
    deterministic mode the result equals an uninterrupted run.

    `epochs_this_run` stops after that many epochs (the schedule still spans
    train.epochs), for jobs in time-limited slots that `--resume` later.

    Under torchrun (WORLD_SIZE > 1) each process trains on its share of every epoch's
    batches with DistributedDataParallel, and only rank 0 writes.
    """
    prepared, model_dir = Path(prepared_dir), Path(model_dir)
    if cfg.train.reuse_memory and not cfg.train.device.startswith("cuda"):
        keep_freed_memory()  # 3D steps ~15 % faster on CPU (docs/benchmarks.md)
    d, device = init_distributed(cfg.train.device)
    try:
        return _fit(prepared, model_dir, cfg, d, device, resume, quiet or not d.main, epochs_this_run)
    finally:
        shutdown(d)


def _training_precision(t: TrainConfig, device: torch.device, d: Dist) -> str:
    """train.precision, with "auto" decided once by the main process for all.

    In deterministic mode "auto" is fp32: the run must not depend on a timing.
    """
    if t.precision != "auto":
        return t.precision
    if t.deterministic:
        return "fp32"
    choice = resolve_precision("auto", device) if d.main else "fp32"
    return ARITHMETIC[int(d.broadcast(ARITHMETIC.index(choice)))]


def _fit(prepared: Path, model_dir: Path, cfg: Config, d: Dist, device: torch.device, resume: bool, quiet: bool,
         epochs_this_run: int | None) -> FitResult:
    plan, splits, manifest = load_prepared(prepared)
    t = cfg.train
    if not 0 <= t.fold < len(splits):
        raise SegpipeError(f"option train.fold={t.fold}: {prepared / 'splits.json'} has folds 0..{len(splits) - 1}")
    resume = _can_resume(model_dir, resume)
    d.barrier()  # every rank decides before rank 0 creates the folder
    if d.main:
        _prepare_model_dir(model_dir, resume)
    d.barrier()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    t.precision = _training_precision(t, device, d)  # config.yaml records the concrete choice, for --resume
    split = splits[t.fold]
    patch = list(t.patch_size or plan["patch_size"])
    dims = cfg.model.spatial_dims
    if len(patch) != dims:
        raise SegpipeError(f"config key 'train.patch_size': {patch} has {len(patch)} sides for a {dims}D model")
    if plan.get("spatial_dims", 3) != dims:
        raise SegpipeError(f"config key 'model.spatial_dims': {dims}, but {prepared} holds {plan.get('spatial_dims', 3)}D cases")
    t.patch_size = patch
    if cfg.infer.roi_size is None:
        cfg.infer.roi_size = patch
    labels = {str(k): v for k, v in plan["labels"].items()}
    label_ids = [int(k) for k in labels if int(k) != 0]
    regions = cfg.evaluate.regions if cfg.evaluate.regions is not None else default_regions(label_ids)
    spec = network_spec(cfg.model, plan["in_channels"], plan["out_channels"])
    if d.main:
        write_yaml(model_dir / "config.yaml", cfg.to_dict())
        write_json(model_dir / "plan.json", plan)
        write_json(model_dir / "network.json", spec)

    seed_everything(t.seed, t.deterministic)
    model = build_from_spec(spec).to(device)
    optimizer = make_optimizer(model.parameters(), t)
    scheduler = make_scheduler(optimizer, t)
    precision = Precision(t.precision, device)
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, include_background=t.include_background,
        lambda_dice=t.lambda_dice, lambda_ce=t.lambda_ce,
    )
    start_epoch, best_metric, best_epoch, stale, rows = 0, -math.inf, -1, 0, []
    ckpt = None
    if resume:
        ckpt = load_checkpoint(model_dir / "checkpoints" / "last.pt")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        precision.load_state_dict(ckpt.get("scaler", {}))
        start_epoch, best_metric, best_epoch = ckpt["epoch"] + 1, ckpt["best_metric"], ckpt["best_epoch"]
        stale = ckpt.get("stale_validations", 0)
        if (model_dir / "metrics.csv").is_file():
            rows = pd.read_csv(model_dir / "metrics.csv").to_dict("records")[:start_epoch]

    net: torch.nn.Module = model
    if t.compile:
        net = torch.compile(net)
    if d.enabled:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    train_cases = _cases(prepared, manifest, split["train"])
    val_cases = _cases(prepared, manifest, split["val"])
    chain = Compose([LoadImaged(KEYS, reader="NumpyReader", image_only=True),
                     *training_chain(patch, t.samples_per_volume, t.pos_neg_ratio, t.augment).transforms])
    dataset = CacheDataset(train_cases, transform=chain, cache_rate=t.cache_rate, progress=False, num_workers=None)
    volumes_per_batch = max(1, math.ceil(t.batch_size / t.samples_per_volume))
    sampler = ListSampler()
    loader_cls = ThreadDataLoader if t.thread_loader else DataLoader
    loader = loader_cls(dataset, batch_size=volumes_per_batch, sampler=sampler, num_workers=t.num_workers)
    writer = _tensorboard(model_dir) if d.main else None
    if ckpt is not None:  # after the loader: MONAI's DataLoader re-seeds torch's generator when built
        set_rng_state(ckpt["rng"])

    net.train()
    stopped_early = False
    budget = TimeBudget(t.max_seconds, optimizer, t.schedule, already=sum(r.get("seconds", 0.0) for r in rows))
    end_epoch = t.epochs if epochs_this_run is None else min(t.epochs, start_epoch + epochs_this_run)
    for epoch in range(start_epoch, end_epoch):
        started = time.perf_counter()
        sampler.indices = epoch_indices(len(dataset), t.iterations_per_epoch * volumes_per_batch, t.seed, epoch, d.rank, d.world)
        chain.set_random_state(seed=(t.seed * 100_003 + epoch * 7_919 + d.rank) % (2**32))
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="it", disable=quiet, leave=False)
        for batch in bar:
            if budget.spent():
                break
            # plain tensors: MONAI's MetaTensor costs ~30 % of a 2D step in per-op overhead
            x = batch["image"].as_subclass(torch.Tensor).to(device)
            y = batch["label"].as_subclass(torch.Tensor).to(device)
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = deep_supervised_loss(loss_fn, net(x), y)
            precision.step(loss, net, optimizer, t.grad_clip)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        lr = optimizer.param_groups[0]["lr"]
        if not budget.active:
            scheduler.step()
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": d.mean(mean_loss), "iterations": len(losses), "lr": lr}
        is_val_epoch = bool(val_cases) and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs or budget.spent())
        if is_val_epoch:
            metric = float("nan")
            if d.main:
                per = validate(model, val_cases, cfg, patch, label_ids, regions, device, precision)
                row["val_dice_mean"] = metric = _nanmean([per[str(k)] for k in label_ids])
                for k in label_ids:
                    row[f"val_dice_{labels[str(k)].replace(' ', '_')}"] = per[str(k)]
                for name in regions:
                    row[f"val_dice_{name}"] = per[name]
            metric = d.broadcast(metric)
            if not math.isnan(metric) and metric > best_metric:
                best_metric, best_epoch, stale = metric, epoch + 1, 0
            else:
                stale += 1
        elif not val_cases:
            best_metric, best_epoch = float("nan"), epoch + 1  # nothing to validate on: last is best
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        if d.main:
            _save_epoch(model_dir, rows, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": precision.state_dict(), "epoch": epoch, "best_metric": best_metric, "best_epoch": best_epoch,
                "stale_validations": stale, "rng": rng_state(), "network": spec, "labels": labels, "config": cfg.to_dict(),
            }, is_best=best_epoch == epoch + 1, writer=writer)
            if not quiet:
                dice_txt = f", val Dice {row['val_dice_mean']:.3f}" if "val_dice_mean" in row else ""
                tqdm.write(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}{dice_txt} ({row['seconds']:.1f} s)")
        d.barrier()
        if budget.spent():
            if not quiet:
                tqdm.write(f"time budget of {t.max_seconds:.0f} s spent after epoch {epoch + 1}")
            break
        if t.early_stopping > 0 and stale >= t.early_stopping:
            stopped_early = True
            if not quiet:
                tqdm.write(f"early stop: no validation improvement in {stale} validations")
            break
    if d.main and rows:
        training_curves(pd.DataFrame(rows), model_dir / "curves.png")
    if writer is not None:
        writer.close()
    return FitResult(model_dir, t.epochs, best_metric, best_epoch, stopped_early, t.precision)


class TimeBudget:
    """A training-time budget: the learning rate follows the schedule over elapsed time.

    Inactive when `seconds` is 0; then the per-epoch scheduler drives the learning rate.
    Time-driven runs are not bit-exact on `--resume` (elapsed time is not reproducible).
    """

    def __init__(self, seconds: float, optimizer: torch.optim.Optimizer, schedule: str, already: float = 0.0) -> None:
        self.seconds = seconds
        self.active = seconds > 0
        self.optimizer = optimizer
        self.schedule = schedule
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.start = time.perf_counter() - already

    def spent(self) -> bool:
        """True once the budget is used; otherwise sets the learning rate for the time left."""
        if not self.active:
            return False
        progress = (time.perf_counter() - self.start) / self.seconds
        if progress >= 1.0:
            return True
        if self.schedule == "poly":
            factor = (1 - progress) ** 0.9
        elif self.schedule == "cosine":
            factor = 0.5 * (1 + math.cos(math.pi * progress))
        else:
            factor = 1.0
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * factor
        return False


def _save_epoch(model_dir: Path, rows: list[dict[str, Any]], state: dict[str, Any], is_best: bool, writer: Any) -> None:
    """metrics.csv, last.pt (and best.pt), TensorBoard scalars: each written atomically."""
    metrics = pd.DataFrame(rows)
    write_with(model_dir / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))
    ckpt_dir = model_dir / "checkpoints"
    if is_best:  # best.pt before last.pt: a run killed between the two redoes this epoch on --resume
        save_checkpoint(ckpt_dir / "best.pt", state)
        write_with(ckpt_dir / "last.pt", lambda tmp: shutil.copyfile(ckpt_dir / "best.pt", tmp))
    else:
        save_checkpoint(ckpt_dir / "last.pt", state)
    if writer is not None:
        for key, value in rows[-1].items():
            if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(value):
                writer.add_scalar(key, value, rows[-1]["epoch"])
        writer.flush()


def fit_folds(prepared_dir: str | Path, model_dir: str | Path, cfg: Config, folds: list[int], *, resume: bool = False, quiet: bool = False) -> list[FitResult]:
    """Cross-validation: one model folder per fold, `model_dir/fold_<k>`."""
    results = []
    for k in folds:
        cfg.train.fold = k
        fold_dir = Path(model_dir) / f"fold_{k}"
        fold_resume = resume and (fold_dir / "checkpoints" / "last.pt").is_file()
        if not quiet:
            tqdm.write(f"fold {k}")
        results.append(fit(prepared_dir, fold_dir, cfg, resume=fold_resume, quiet=quiet))
    return results

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
from monai.data import CacheDataset, DataLoader
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.transforms import Compose, LoadImaged
from tqdm import tqdm

from segpipe.atomic import write_json, write_with, write_yaml
from segpipe.config import Config
from segpipe.errors import SegpipeError
from segpipe.pipeline.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from segpipe.pipeline.model import build_from_spec, network_spec
from segpipe.pipeline.preprocess import load_prepared
from segpipe.reports.figures import training_curves
from segpipe.reports.metrics import dice_per_label
from segpipe.transforms.augment import KEYS, training_chain


@dataclass
class FitResult:
    """Where the model went and how good it got."""

    model_dir: Path
    epochs: int
    best_metric: float
    best_epoch: int


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


@torch.no_grad()
def validate(net: torch.nn.Module, cases: list[dict[str, str]], cfg: Config, patch: list[int], labels: list[int], device: torch.device) -> dict[int, float]:
    """Sliding-window prediction of whole validation cases; mean Dice per label."""
    net.eval()
    scores: dict[int, list[float]] = {k: [] for k in labels}
    for case in cases:
        image = torch.from_numpy(np.load(case["image"]))[None].to(device)
        ref = np.load(case["label"])[0]
        logits = sliding_window_inference(
            image, roi_size=patch, sw_batch_size=cfg.infer.sw_batch_size, predictor=net,
            overlap=cfg.infer.overlap, mode=cfg.infer.mode,
        )
        pred = logits.argmax(1)[0].cpu().numpy()
        for k, v in dice_per_label(pred, ref, labels).items():
            scores[k].append(v)
    net.train()
    return {k: _nanmean(v) for k, v in scores.items()}


def _nanmean(values: list[float]) -> float:
    """Mean over the scored (non-NaN) values; NaN when none was scored."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def _prepare_model_dir(model_dir: Path, resume: bool) -> None:
    last = model_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise SegpipeError(f"{last}: nothing to resume from")
    if not resume and last.is_file():
        raise SegpipeError(f"{model_dir}: already holds a trained model; pass --resume to continue it or choose another --output")
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)


def fit(prepared_dir: str | Path, model_dir: str | Path, cfg: Config, *, resume: bool = False, quiet: bool = False) -> FitResult:
    """Train `cfg.model` on fold `cfg.train.fold` of a prepared dataset.

    Writes the model folder: config.yaml (resolved), plan.json, checkpoints/last.pt and
    best.pt (every epoch, atomically), metrics.csv and curves.png. With `resume`, training
    continues from last.pt with its optimiser, scheduler and random states.
    """
    prepared = Path(prepared_dir)
    model_dir = Path(model_dir)
    plan, splits, manifest = load_prepared(prepared)
    t = cfg.train
    if not 0 <= t.fold < len(splits):
        raise SegpipeError(f"option train.fold={t.fold}: {prepared / 'splits.json'} has folds 0..{len(splits) - 1}")
    _prepare_model_dir(model_dir, resume)
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    device = torch.device(t.device)
    split = splits[t.fold]
    patch = list(t.patch_size or plan["patch_size"])
    if len(patch) != cfg.model.spatial_dims:
        raise SegpipeError(f"config key 'train.patch_size': {patch} has {len(patch)} sides for a {cfg.model.spatial_dims}D model")
    t.patch_size = patch
    if cfg.infer.roi_size is None:
        cfg.infer.roi_size = patch
    labels = {str(k): v for k, v in plan["labels"].items()}
    label_ids = [int(k) for k in labels if int(k) != 0]
    spec = network_spec(cfg.model, plan["in_channels"], plan["out_channels"])

    write_yaml(model_dir / "config.yaml", cfg.to_dict())
    write_json(model_dir / "plan.json", plan)
    write_json(model_dir / "network.json", spec)

    seed_everything(t.seed)
    net = build_from_spec(spec).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(t.epochs, 1), power=0.9)
    loss_fn = DiceCELoss(
        to_onehot_y=True, softmax=True, include_background=t.include_background,
        lambda_dice=t.lambda_dice, lambda_ce=t.lambda_ce,
    )
    start_epoch, best_metric, best_epoch, rows = 0, -math.inf, -1, []
    if resume:
        ckpt = load_checkpoint(model_dir / "checkpoints" / "last.pt")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start_epoch, best_metric, best_epoch = ckpt["epoch"] + 1, ckpt["best_metric"], ckpt["best_epoch"]
        rows = pd.read_csv(model_dir / "metrics.csv").to_dict("records")[:start_epoch] if (model_dir / "metrics.csv").is_file() else []
        set_rng_state(ckpt["rng"])

    train_cases = _cases(prepared, manifest, split["train"])
    val_cases = _cases(prepared, manifest, split["val"])
    chain = Compose([LoadImaged(KEYS, reader="NumpyReader", image_only=True), *training_chain(patch, t.samples_per_volume, t.pos_neg_ratio).transforms])
    chain.set_random_state(seed=t.seed + start_epoch)
    dataset = CacheDataset(train_cases, transform=chain, cache_rate=t.cache_rate, progress=False, num_workers=None)
    volumes_per_batch = max(1, math.ceil(t.batch_size / t.samples_per_volume))
    generator = torch.Generator().manual_seed(t.seed + start_epoch)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=t.iterations_per_epoch * volumes_per_batch, generator=generator)
    loader = DataLoader(dataset, batch_size=volumes_per_batch, sampler=sampler, num_workers=t.num_workers)

    net.train()
    for epoch in range(start_epoch, t.epochs):
        started = time.perf_counter()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t.epochs}", unit="it", disable=quiet, leave=False)
        for batch in bar:
            x = batch["image"].to(device)
            y = batch["label"].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = deep_supervised_loss(loss_fn, net(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "lr": lr}
        is_val_epoch = bool(val_cases) and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs)
        if is_val_epoch:
            per_label = validate(net, val_cases, cfg, patch, label_ids, device)
            row["val_dice_mean"] = _nanmean(list(per_label.values()))
            for k, v in per_label.items():
                row[f"val_dice_{labels[str(k)].replace(' ', '_')}"] = v
        row["seconds"] = round(time.perf_counter() - started, 2)
        rows.append(row)
        metric = row.get("val_dice_mean", float("nan")) if val_cases else float(epoch)
        improved = is_val_epoch and not math.isnan(metric) and metric > best_metric
        if not val_cases or improved:
            best_metric, best_epoch = (metric, epoch + 1) if val_cases else (float("nan"), epoch + 1)
        state = {
            "model": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "best_metric": best_metric, "best_epoch": best_epoch, "rng": rng_state(),
            "network": spec, "labels": labels, "config": cfg.to_dict(),
        }
        metrics = pd.DataFrame(rows)
        write_with(model_dir / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))
        save_checkpoint(model_dir / "checkpoints" / "last.pt", state)
        if best_epoch == epoch + 1:
            shutil.copyfile(model_dir / "checkpoints" / "last.pt", model_dir / "checkpoints" / ".best.pt.partial")
            (model_dir / "checkpoints" / ".best.pt.partial").replace(model_dir / "checkpoints" / "best.pt")
        if not quiet:
            dice_txt = f", val Dice {row['val_dice_mean']:.3f}" if "val_dice_mean" in row else ""
            tqdm.write(f"epoch {epoch + 1}/{t.epochs}: loss {row['train_loss']:.4f}{dice_txt} ({row['seconds']:.1f} s)")
    if rows:
        training_curves(pd.DataFrame(rows), model_dir / "curves.png")
    return FitResult(model_dir=model_dir, epochs=t.epochs, best_metric=best_metric, best_epoch=best_epoch)

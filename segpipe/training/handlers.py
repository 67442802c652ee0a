"""Side jobs of the training loop, each a small unit testable without training:
model selection and early stopping, checkpoints and metrics, the console line."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from segpipe.artifacts.checkpoints import save_checkpoint
from segpipe.atomic import write_with


@dataclass
class ModelSelection:
    """The best validation metric so far, its epoch, and validations since it improved.

    Without validation cases every epoch is the best (best.pt = last.pt), its metric NaN.
    """

    best_metric: float = -math.inf
    best_epoch: int = -1
    stale: int = 0

    def observe(self, metric: float, epoch: int) -> bool:
        """Record a validation of `epoch` (1-based); True when it is the new best."""
        if not math.isnan(metric) and metric > self.best_metric:
            self.best_metric, self.best_epoch, self.stale = metric, epoch, 0
            return True
        self.stale += 1
        return False

    def unvalidated(self, epoch: int) -> None:
        """An epoch of a run with nothing to validate on: the last is the best."""
        self.best_metric, self.best_epoch = float("nan"), epoch


@dataclass
class EarlyStopping:
    """Stop after `patience` validations without improvement (0: never)."""

    patience: int

    def should_stop(self, selection: ModelSelection) -> bool:
        return self.patience > 0 and selection.stale >= self.patience


class Checkpointer:
    """metrics.csv, last.pt (and best.pt), TensorBoard scalars after every epoch, each written atomically."""

    def __init__(self, model_dir: Path, make_writer: Callable[[], Any] | None = None) -> None:
        self.model_dir = model_dir
        self.make_writer = make_writer  # called at the first save: a run refused before it leaves no event file
        self.writer: Any = None

    def save(self, rows: list[dict[str, Any]], state: dict[str, Any], is_best: bool) -> None:
        metrics = pd.DataFrame(rows)
        write_with(self.model_dir / "metrics.csv", lambda tmp: metrics.to_csv(tmp, index=False))
        ckpt_dir = self.model_dir / "checkpoints"
        if is_best:  # best.pt before last.pt: a run killed between the two redoes this epoch on --resume
            save_checkpoint(ckpt_dir / "best.pt", state)
            write_with(ckpt_dir / "last.pt", lambda tmp: shutil.copyfile(ckpt_dir / "best.pt", tmp))
        else:
            save_checkpoint(ckpt_dir / "last.pt", state)
        if self.writer is None and self.make_writer is not None:
            self.writer, self.make_writer = self.make_writer(), None
        if self.writer is not None:
            for key, value in rows[-1].items():
                if key != "epoch" and isinstance(value, (int, float)) and not math.isnan(value):
                    self.writer.add_scalar(key, value, rows[-1]["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


FEW_PATIENTS = 10  # a best validation Dice chosen on fewer patients than this is reported with a caution


def selection_caution(patients: int) -> str:
    """The caution for a best validation Dice chosen on few patients ('' when there are enough)."""
    if not 0 < patients < FEW_PATIENTS:
        return ""
    return (f" (chosen on {patients} validation patient{'s' if patients > 1 else ''}: it overstates Dice on new "
            "patients, see docs/training.md)")


def console_line(row: dict[str, Any], epochs: int) -> str:
    """The line printed after an epoch."""
    dice = f", val Dice {row['val_dice_mean']:.3f}" if "val_dice_mean" in row else ""
    if "val_threshold" in row:
        dice += f" at threshold {row['val_threshold']:g}"
    if not row.get("iterations", 1):
        return (f"epoch {row['epoch']}/{epochs}: no step (the time budget's slot for it was spent; its weights "
                f"are the last epoch's) ({row['seconds']:.1f} s)")
    return f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}{dice} ({row['seconds']:.1f} s)"

"""Figures: training curves from a model folder's metrics.csv, and mask overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from segpipe.atomic import write_with
from segpipe.own_files import FIGURE_METADATA


def training_curves(metrics: pd.DataFrame, path: str | Path) -> Path:
    """Plot training loss and validation Dice per epoch to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(metrics["epoch"], metrics["train_loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss (Dice + CE)", title="Training loss")
    dice_cols = [c for c in metrics.columns if c.startswith("val_dice_")]
    for col in dice_cols:
        style = "-" if col == "val_dice_mean" else "--"
        ax_dice.plot(metrics["epoch"], metrics[col], style, marker="o", label=col.removeprefix("val_dice_"))
    ax_dice.set(xlabel="epoch", ylabel="Dice", title="Validation Dice", ylim=(0, 1))
    if dice_cols:
        ax_dice.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata=FIGURE_METADATA))
    plt.close(fig)
    return Path(path)


LABEL_COLOURS = np.array(
    [[0, 0, 0, 0], [1.0, 0.85, 0.1, 0.55], [0.2, 0.45, 1.0, 0.6], [0.95, 0.15, 0.15, 0.65], [0.2, 0.85, 0.3, 0.6]]
)


def _rgba(mask: np.ndarray) -> np.ndarray:
    index = np.clip(mask, 0, len(LABEL_COLOURS) - 1)
    index[(mask >= len(LABEL_COLOURS))] = len(LABEL_COLOURS) - 1
    return LABEL_COLOURS[index]


def overlay(image: np.ndarray | None, ref: np.ndarray, pred: np.ndarray, title: str, path: str | Path, labels: dict[int, str]) -> Path:
    """Image with reference and prediction side by side, in one colour per label.

    Arrays are drawn as given (row 0 at the top); callers put volume slices in display
    orientation first. Without an image (`image` None) only the two mask panels are
    drawn, on a plain background: never an empty image panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = [(None, "image"), (ref, "reference"), (pred, "prediction")] if image is not None else [
        (ref, "reference"), (pred, "prediction")]
    fig, axes = plt.subplots(1, len(panels), figsize=(11 if image is not None else 7.5, 4))
    background = image if image is not None else np.zeros(ref.shape, np.float32)
    lo, hi = np.percentile(background, [1, 99]) if background.any() else (0.0, 1.0)
    for ax, (mask, name) in zip(axes, panels):
        ax.imshow(background, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        if mask is not None:
            ax.imshow(_rgba(mask), interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [Patch(color=LABEL_COLOURS[min(k, len(LABEL_COLOURS) - 1)][:3], label=v) for k, v in labels.items() if k]
    fig.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), fontsize=8)
    fig.suptitle(title)
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90, metadata=FIGURE_METADATA))
    plt.close(fig)
    return Path(path)

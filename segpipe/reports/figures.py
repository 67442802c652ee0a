"""Figures: training curves from a model folder's metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segpipe.atomic import write_with


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
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)

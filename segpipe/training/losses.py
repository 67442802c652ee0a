"""Training losses: DiceCE over softmax labels, or Dice + BCE over sigmoid regions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.losses import DiceCELoss, DiceLoss

from segpipe.config import TrainConfig

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RegionLoss(torch.nn.Module):
    """Soft Dice plus binary cross-entropy over overlapping sigmoid channels.

    MONAI's DiceCELoss takes a softmax cross-entropy for several channels, which suits
    exclusive labels, not overlapping regions.
    """

    def __init__(self, lambda_dice: float, lambda_ce: float) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True)
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.lambda_dice * self.dice(logits, target) + self.lambda_ce * self.bce(logits, target)


def make_loss(t: TrainConfig, regions: bool) -> Loss:
    """The loss for label (softmax) or region (sigmoid) targets."""
    if regions:
        return RegionLoss(t.lambda_dice, t.lambda_ce)
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=t.include_background,
                      lambda_dice=t.lambda_dice, lambda_ce=t.lambda_ce)


def deep_supervised_loss(loss_fn: Loss, outputs: Any, target: torch.Tensor) -> torch.Tensor:
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

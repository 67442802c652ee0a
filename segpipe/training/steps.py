"""Building blocks of the training loop: optimiser, schedule, precision, data loader."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from monai.data import get_track_meta, set_track_meta
from torch import nn

from segpipe.config import TrainConfig
from segpipe.errors import SegpipeError
from segpipe.runtime.precision import autocast, check_precision


def make_optimizer(params: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (Nesterov) as configured."""
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay)
    raise SegpipeError(f"config key 'train.optimizer': expected adam, adamw or sgd, got {t.optimizer!r}")


def make_scheduler(optimizer: torch.optim.Optimizer, t: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate schedule: poly (power 0.9), cosine or constant."""
    total = max(t.epochs, 1)
    if t.schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1 - min(e, total - 1) / total) ** 0.9)
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 0.5 * (1 + math.cos(math.pi * min(e, total) / total)))
    if t.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    raise SegpipeError(f"config key 'train.schedule': expected poly, cosine or constant, got {t.schedule!r}")


def schedule_resumed(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """After loading a checkpoint: set each group's rate to what the schedule gives its current
    epoch. The optimiser's state holds the rate the stored schedule left, which another
    `train.epochs` (`--resume --epochs N`) would have given differently."""
    for group, base, rate in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * rate(scheduler.last_epoch)


class Precision:
    """Autocast and (for fp16 on CUDA) gradient scaling, as one object the loop calls."""

    def __init__(self, precision: str, device: torch.device) -> None:
        check_precision(precision, device, "config key 'train.precision'")
        if precision == "auto":
            raise SegpipeError("config key 'train.precision': 'auto' must be resolved before training")
        self.precision = precision
        self.device = device
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward-pass context."""
        return autocast(self.precision, self.device)

    def step(self, loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer, clip: float) -> None:
        """Backward, optional gradient clipping, optimiser step."""
        if self.scaler is None:
            loss.backward()
            if clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip > 0:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


def epoch_indices(n_items: int, n_draws: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    """The cases drawn (with replacement) in one epoch, this rank's share of them.

    Depends only on (seed, epoch), so an epoch re-run after `--resume` draws exactly what
    it drew the first time, and ranks split one global draw without overlap.
    """
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    draws = torch.randint(n_items, (n_draws * world,), generator=generator).tolist()
    return draws[rank::world]


class ListSampler(torch.utils.data.Sampler[int]):
    """Yields a list of indices set before each epoch."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@contextlib.contextmanager
def without_metadata() -> Iterator[None]:
    """MONAI transforms make plain tensors instead of `MetaTensor`s inside the block.

    `fit` trains inside it: patches need no geometry, and the metadata costs more than half
    of the sampling and augmentation chain on CPU (15 against 50 ms per msd_2d batch of
    16, `bench/bench_loader.py`). Loader threads and worker processes see the same switch.
    """
    before = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(before)

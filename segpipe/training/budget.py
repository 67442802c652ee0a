"""Training-time budgets: epochs sized from measured costs, a schedule over elapsed time.

With `train.max_seconds`, `fit` first times a few training steps and one validation, then
sizes the epochs (:func:`plan_budget`) so that the run validates and checkpoints several
times within the budget. The learning rate warms up linearly and then follows the
schedule over the elapsed share of the budget (:func:`lr_factor`, :class:`TimeBudget`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from segpipe.errors import SegpipeError
from segpipe.limits import MAX_EPOCH_ITERATIONS

WARMUP_FLOOR = 0.02  # the first warm-up step's share of the base learning rate


def lr_factor(schedule: str, progress: float, warmup: float = 0.0) -> float:
    """Multiplier of the base learning rate at `progress` (0..1) of training.

    Args:
        schedule: "poly" (power 0.9), "cosine" or "constant", spanning what follows the warm-up.
        progress: share of training done (steps, epochs or seconds).
        warmup: leading share over which the rate rises linearly to its base value.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, WARMUP_FLOOR)
    rest = (progress - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    if schedule == "poly":
        return (1.0 - rest) ** 0.9
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * rest))
    if schedule == "constant":
        return 1.0
    raise SegpipeError(f"config key 'train.schedule': expected poly, cosine or constant, got {schedule!r}")


@dataclass
class BudgetPlan:
    """Epoch sizes chosen for a time budget, recorded in the checkpoint and config.

    Epochs end at their time slot (:meth:`training_ends`), not at an iteration count.
    """

    iterations_per_epoch: int
    epochs: int
    validations: int
    step_seconds: float
    validation_seconds: float
    measured_at: float = 0.0  # budget seconds used when the plan was made

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def training_ends(self, epoch: int, seconds: float) -> float:
        """Budget seconds at which epoch `epoch` (0-based) stops training and validates.

        The time left after measuring is cut into equal slots, one per validation, so the
        run validates `validations` times even when steps get slower or faster than measured
        (a shared machine); `iterations_per_epoch` is what the measured speed fits in a slot.
        """
        slot = (seconds - self.measured_at) / self.validations
        return self.measured_at + (epoch + 1) * slot - self.validation_seconds


def plan_budget(seconds: float, spent: float, step_seconds: float, validation_seconds: float,
                validations: int = 5, validation_share: float = 0.25) -> BudgetPlan:
    """Size epochs so that `validations` validations (fewer if they would take more than
    `validation_share` of what is left) fall evenly within the budget.

    Args:
        seconds: the whole budget (train.max_seconds).
        spent: seconds already used (measuring the costs).
        step_seconds: measured seconds per training step (data included).
        validation_seconds: estimated seconds per validation (0 without validation cases).
        validations: wanted number of validations and checkpoints.
        validation_share: most of the remaining time that validations may take.

    Raises:
        SegpipeError: naming train.max_seconds when not even one validation and a few steps fit.
    """
    left = seconds - spent
    needed = validation_seconds + 10 * step_seconds
    if left < needed:
        raise SegpipeError(
            f"config key 'train.max_seconds': {seconds:g} s is too short for a single validation here "
            f"(a validation takes ~{validation_seconds:.1f} s, a step ~{step_seconds:.2f} s, measuring took {spent:.1f} s); "
            f"give at least {math.ceil(spent + needed)} s"
        )
    n = max(1, validations)
    while n > 1 and n * validation_seconds > validation_share * left:
        n -= 1
    train_seconds = left - n * validation_seconds
    iterations = max(1, int(train_seconds / n / step_seconds))
    if iterations > MAX_EPOCH_ITERATIONS:  # a long budget: more epochs, each one's draws kept small
        n = math.ceil(left / (validation_seconds + MAX_EPOCH_ITERATIONS * step_seconds))
        iterations = max(1, int((left - n * validation_seconds) / n / step_seconds))
    return BudgetPlan(iterations, n, n, step_seconds, validation_seconds, spent)


class TimeBudget:
    """Elapsed time against a budget, the final validation's time held in reserve.

    Inactive when `seconds` is 0. `clock` is injectable for tests.

    Args:
        seconds: the budget (train.max_seconds); 0: none.
        reserve: seconds kept for the last validation and checkpoint.
        already: seconds used by earlier runs of the same training (--resume).
        clock: a monotonic clock in seconds.
    """

    def __init__(self, seconds: float, reserve: float = 0.0, already: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = seconds
        self.active = seconds > 0
        self.reserve = min(reserve, 0.5 * seconds)
        self.clock = clock
        self.start = clock() - already

    def elapsed(self) -> float:
        return self.clock() - self.start

    def progress(self) -> float:
        """Share of the training time used (0..1)."""
        if not self.active:
            return 0.0
        return min(self.elapsed() / (self.seconds - self.reserve), 1.0)

    def expired(self) -> bool:
        """True once training must stop to leave time for the last validation."""
        return self.active and self.progress() >= 1.0


class BudgetSchedule:
    """Sets the optimiser's learning rate from the budget's progress (call before each step)."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget: TimeBudget, schedule: str, warmup: float) -> None:
        self.optimizer = optimizer
        self.budget = budget
        self.schedule = schedule
        self.warmup = warmup
        self.base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]

    def update(self) -> float:
        """Apply and return the factor for now."""
        factor = lr_factor(self.schedule, self.budget.progress(), self.warmup)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * factor
        return factor

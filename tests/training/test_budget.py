"""Time budgets and schedules (fake clock), epoch sizing, and the loop's handlers, without training."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from segpipe.artifacts.checkpoints import load_checkpoint
from segpipe.errors import SegpipeError
from segpipe.limits import MAX_EPOCH_ITERATIONS
from segpipe.training.budget import BudgetSchedule, TimeBudget, lr_factor, plan_budget
from segpipe.training.handlers import Checkpointer, EarlyStopping, ModelSelection, console_line, selection_caution


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lr_factor_warms_up_then_follows_the_schedule():
    assert lr_factor("poly", 0.0, 0.1) == pytest.approx(0.02)  # the floor: the first step still learns
    assert lr_factor("poly", 0.05, 0.1) == pytest.approx(0.5)
    assert lr_factor("poly", 0.1, 0.1) == pytest.approx(1.0)
    assert lr_factor("poly", 0.55, 0.1) == pytest.approx(0.5**0.9)
    assert lr_factor("cosine", 0.55, 0.1) == pytest.approx(0.5)
    assert lr_factor("constant", 0.9, 0.1) == 1.0
    assert lr_factor("poly", 1.0) == 0.0 and lr_factor("poly", 2.0) == 0.0
    assert lr_factor("poly", 0.5) == pytest.approx(0.5**0.9)  # no warm-up
    with pytest.raises(SegpipeError, match="train.schedule"):
        lr_factor("step", 0.5)


def test_time_budget_keeps_a_reserve_and_counts_earlier_runs():
    clock = FakeClock()
    budget = TimeBudget(100, reserve=20, already=10, clock=clock)
    assert budget.active and budget.elapsed() == pytest.approx(10)
    assert budget.progress() == pytest.approx(10 / 80)
    clock.now += 69
    assert not budget.expired()
    clock.now += 1
    assert budget.expired() and budget.progress() == 1.0
    off = TimeBudget(0, clock=clock)
    assert not off.active and not off.expired() and off.progress() == 0.0


def test_budget_schedule_sets_the_learning_rate_from_elapsed_time():
    clock = FakeClock()
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    budget = TimeBudget(200, clock=clock)
    schedule = BudgetSchedule(opt, budget, "poly", warmup=0.05)
    schedule.update()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.02)
    clock.now += 10  # end of warm-up
    schedule.update()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.now += 40  # a quarter of the budget: far from zero
    assert schedule.update() == pytest.approx((1 - 40 / 190) ** 0.9)
    clock.now += 150
    assert schedule.update() == 0.0


def test_plan_budget_validates_several_times_and_counts_validation_time():
    plan = plan_budget(240, spent=5, step_seconds=0.5, validation_seconds=4, validations=5)
    assert plan.validations == plan.epochs == 5
    train_time = plan.validations * plan.iterations_per_epoch * plan.step_seconds
    assert train_time + plan.validations * plan.validation_seconds <= 240 - 5
    assert train_time > 0.8 * (240 - 5 - 5 * 4)
    # slow validation: fewer of them, so that they take at most a quarter of the time left
    slow = plan_budget(240, spent=5, step_seconds=0.5, validation_seconds=30, validations=5)
    assert slow.validations == 1
    # nothing to validate on: still five checkpoints
    assert plan_budget(60, spent=1, step_seconds=0.1, validation_seconds=0).validations == 5


def test_a_long_budget_of_fast_steps_gets_more_epochs_not_huge_ones():
    """One epoch's sample draws are one list: a week of 1 ms steps must not be five epochs of 10^8."""
    plan = plan_budget(7 * 86400, spent=5, step_seconds=0.001, validation_seconds=0.5)
    assert plan.iterations_per_epoch <= MAX_EPOCH_ITERATIONS and plan.epochs == plan.validations > 5
    spent = plan.epochs * (plan.iterations_per_epoch * plan.step_seconds + plan.validation_seconds)
    assert 0.95 * (7 * 86400 - 5) <= spent <= 7 * 86400 - 5


def test_plan_budget_refuses_a_budget_too_short_for_one_validation():
    with pytest.raises(SegpipeError, match=r"config key 'train.max_seconds': 20 s is too short for a single validation"):
        plan_budget(20, spent=2, step_seconds=0.5, validation_seconds=15)


def test_model_selection_and_early_stopping():
    selection, stopping = ModelSelection(), EarlyStopping(2)
    assert selection.observe(0.4, 1) and selection.best_epoch == 1
    assert not selection.observe(0.3, 2) and not stopping.should_stop(selection)
    assert not selection.observe(float("nan"), 3) and stopping.should_stop(selection)
    assert selection.observe(0.5, 4) and selection.stale == 0 and selection.best_metric == 0.5
    assert not EarlyStopping(0).should_stop(ModelSelection(stale=100))
    selection.unvalidated(5)
    assert selection.best_epoch == 5 and math.isnan(selection.best_metric)


def test_checkpointer_writes_best_then_last_and_metrics(tmp_path: Path):
    (tmp_path / "checkpoints").mkdir()
    saver = Checkpointer(tmp_path)
    rows = [{"epoch": 1, "train_loss": 1.0, "seconds": 2.0}]
    saver.save(rows, {"epoch": 0, "model": {"w": torch.ones(2)}}, is_best=True)
    rows.append({"epoch": 2, "train_loss": 0.5, "seconds": 2.0})
    saver.save(rows, {"epoch": 1, "model": {"w": torch.zeros(2)}}, is_best=False)
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["epoch"] == 0
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1
    assert list(pd.read_csv(tmp_path / "metrics.csv")["epoch"]) == [1, 2]


def test_console_line():
    row = {"epoch": 3, "train_loss": 0.25, "seconds": 1.5}
    assert console_line(row, 10) == "epoch 3/10: loss 0.2500 (1.5 s)"
    idle = console_line({**row, "iterations": 0, "train_loss": float("nan")}, 10)
    assert idle.startswith("epoch 3/10: no step") and "nan" not in idle
    assert console_line({**row, "val_dice_mean": 0.5}, 10) == "epoch 3/10: loss 0.2500, val Dice 0.500 (1.5 s)"


def test_a_best_dice_chosen_on_few_patients_carries_a_caution():
    assert "chosen on 2 validation patients: it overstates Dice on new patients" in selection_caution(2)
    assert "chosen on 1 validation patient:" in selection_caution(1)
    assert selection_caution(9) != ""
    assert selection_caution(10) == "" and selection_caution(68) == ""
    assert selection_caution(0) == ""  # nothing validated: there is no best Dice to caution about


def test_budget_epochs_end_at_equal_time_slots():
    plan = plan_budget(110, spent=10, step_seconds=0.5, validation_seconds=2, validations=5)
    ends = [plan.training_ends(e, 110) for e in range(5)]
    assert ends == pytest.approx([28, 48, 68, 88, 108])  # slots of 20 s, each ending with a 2 s validation
    assert plan.measured_at == 10


def _budget_seen_by_rank(rank: int, port: int, out: str) -> None:
    """One of two processes: start a budget at a different moment, read it after a barrier."""
    import os
    import time

    import torch.distributed as dist

    from segpipe.runtime.distributed import Dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    d = Dist(rank=rank, world=2)
    time.sleep(0.4 * rank)  # rank 1 starts its budget 0.4 s after rank 0, like a rank held up by file writes
    budget = TimeBudget(10.0, clock=d.clock)
    d.barrier()
    seen = torch.tensor([budget.elapsed(), budget.progress()], dtype=torch.float64)
    gathered = [torch.zeros(2, dtype=torch.float64) for _ in range(2)]
    dist.all_gather(gathered, seen)
    if rank == 0:
        torch.save(torch.stack(gathered), out)
    dist.destroy_process_group()


def test_every_process_reads_the_main_process_clock(tmp_path):
    """Under torchrun every rank must stop an epoch after the same step and set the same rate;
    with its own clock each rank's budget started at its own moment."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "seen.pt"
    mp.spawn(_budget_seen_by_rank, args=(port, str(out)), nprocs=2, join=True)
    seen = torch.load(out, weights_only=True)
    assert seen[0].tolist() == seen[1].tolist()
    assert seen[0, 0] > 0.3  # rank 0's budget also counts the 0.4 s rank 1 spent before starting its own

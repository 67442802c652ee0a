"""PyTorch's own distributed engine, for `torchrun --nproc_per_node=N -m segpipe fit ...`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # where collective tensors live: NCCL takes only CUDA ones

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a number over all processes."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def broadcast(self, value: float) -> float:
        """The main process's value, on every process."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def clock(self) -> float:
        """The main process's `time.perf_counter()`, on every process.

        A collective: every process calls it at the same points. Time budgets read it, so
        that every process stops an epoch after the same step and sets the same rate.
        """
        return self.broadcast(time.perf_counter())


def is_main_process() -> bool:
    """True unless torchrun started this process as a rank other than 0 (those neither write nor print)."""
    return os.environ.get("RANK", "0") in ("", "0")


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA), if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), torch.device(device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        cuda = torch.device("cuda", local_rank)
        return Dist(rank, world, local_rank, cuda), cuda
    return Dist(rank, world, local_rank), torch.device("cpu")


def shutdown(d: Dist) -> None:
    """Leave the process group."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

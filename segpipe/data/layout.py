"""The `Layout` record: how one dataset layout on disk is recognised, read and described.

Every layout module (decathlon.py, slices.py, ...) exports one `LAYOUT`; the table in
`segpipe.data.layouts` lists them, and every verb gets its readers from that table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset


def held_out_else_training(dataset: Dataset) -> list[Case]:
    """A dataset's held-out cases, or its training cases when it has none."""
    return list(dataset.test or dataset.training)


def every_case(dataset: Dataset) -> list[Case]:
    """All of a dataset's cases, labelled or not (a cohort to segment)."""
    return dataset.cases


@dataclass(frozen=True)
class Layout:
    """One dataset layout.

    Attributes:
        name: the name `--layout` and `Dataset.layout` use.
        describe: one line for `--help` and for the "no layout recognised" error.
        detect: True when a folder is in this layout (cheap: listings and headers only).
        read: folder (and reader options) -> `Dataset`.
        inputs: the cases `infer` segments when given the folder itself.
    """

    name: str
    describe: str
    detect: Callable[[Path], bool]
    read: Callable[..., Dataset]
    inputs: Callable[[Dataset], list[Case]] = held_out_else_training


__all__ = ["Layout", "every_case", "held_out_else_training"]

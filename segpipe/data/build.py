"""`build_dataset`: the checks and the ending every layout reader shares."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from segpipe.data.case import Case
from segpipe.data.dataset import Dataset
from segpipe.errors import SegpipeError


def check_unique_ids(cases: Iterable[Case]) -> None:
    """Refuse two cases with one id (output files are named after it).

    Raises:
        SegpipeError: naming the second case's first file and the first case's.
    """
    seen: dict[str, Case] = {}
    for case in cases:
        other = seen.setdefault(case.case_id, case)
        if other is not case:
            raise SegpipeError(
                f"{case.images[0]}: case id '{case.case_id}' also used by {other.images[0]}"
            )


def check_no_orphan_labels(cases: Iterable[Case], label_files: Iterable[Path]) -> None:
    """Refuse a label file that no case uses (its image is missing or misnamed).

    Raises:
        SegpipeError: naming the first such label file.
    """
    used = {c.label for c in cases if c.label is not None}
    for path in sorted(label_files):
        if path not in used:
            raise SegpipeError(f"{path}: label without an image (no image of the same case beside it)")


def build_dataset(
    root: Path,
    layout: str,
    *,
    training: Sequence[Case],
    test: Sequence[Case] = (),
    labels: dict[int, str],
    modalities: list[str],
    spatial_dims: int = 3,
    name: str | None = None,
    label_files: Iterable[Path] = (),
    label_mapping: dict[int, int] | None = None,
    folds: dict[str, int] | None = None,
) -> Dataset:
    """A checked `Dataset`: case ids unique over training and test, every label file used.

    Args:
        root: the folder that was read.
        layout: the layout's name.
        training: labelled cases.
        test: held-out cases (labelled or not).
        labels: label value -> name.
        modalities: channel names.
        spatial_dims: 2 for slices, 3 for volumes.
        name: defaults to the folder name.
        label_files: every label file the reader found on disk; each must be a case's label.
        label_mapping: see `Dataset`.
        folds: see `Dataset`.

    Raises:
        SegpipeError: a repeated case id or a label without an image.
    """
    cases = [*training, *test]
    check_unique_ids(cases)
    check_no_orphan_labels(cases, label_files)
    return Dataset(
        root=root,
        name=name if name is not None else root.name,
        modalities=list(modalities),
        labels=dict(sorted(labels.items())),
        training=list(training),
        test=list(test),
        layout=layout,
        spatial_dims=spatial_dims,
        label_mapping=label_mapping,
        folds=folds,
    )


__all__ = ["build_dataset", "check_no_orphan_labels", "check_unique_ids"]

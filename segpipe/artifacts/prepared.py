"""The prepared-dataset folder `segpipe preprocess` writes: plan, splits, manifest, cached cases."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.artifacts.files import read_json
from segpipe.artifacts.plan import Plan
from segpipe.data.paths import existing_folder
from segpipe.errors import SegpipeError, shown
from segpipe.own_files import text_with

# the files of a prepared folder, recognised by what segpipe writes into them (segpipe.own_files)
PREPARED_FILES = {"plan.json": text_with('"target_spacing"', '"preprocess"'), "splits.json": text_with('"fold"', '"train"'),
                  "manifest.json": text_with('"settings"', '"cases"')}


@dataclass(frozen=True)
class PreparedDataset:
    """plan.json, splits.json and manifest.json of a prepared folder."""

    root: Path
    plan: Plan
    splits: list[dict[str, Any]]
    manifest: dict[str, Any]

    @property
    def folds(self) -> list[int]:
        """The fold numbers of splits.json."""
        return list(range(len(self.splits)))


def load_prepared(prepared_dir: str | Path) -> PreparedDataset:
    """Read a prepared folder's plan, splits and manifest, with clear errors."""
    root = existing_folder(prepared_dir, "prepared-dataset folder", " (run `segpipe preprocess` first)")
    missing = f"{root} is not a complete prepared dataset (run `segpipe preprocess`)"
    plan, splits, manifest = (read_json(root / name, missing) for name in ("plan.json", "splits.json", "manifest.json"))
    check_splits(splits, root / "splits.json")
    return PreparedDataset(root, Plan.from_dict(plan, root / "plan.json"), splits, manifest)


def check_splits(splits: Any, path: Path) -> None:
    """splits.json is a list of folds, fold k at position k, each with lists of case ids:
    `train` not empty, no case twice and none in both `train` and `val` (a validation case
    that was trained on makes the validation Dice a training score)."""
    if not isinstance(splits, list) or not splits:
        raise SegpipeError(f"{path}: expected a list of folds, got {shown(splits)}")
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict):
            raise SegpipeError(f"{path}: fold {k} is {shown(fold)}, expected an object with 'fold', 'train' and 'val'")
        if fold.get("fold") != k:
            raise SegpipeError(f"{path}: entry {k} says fold {shown(fold.get('fold'))}; fold {k} must be entry {k}")
        for key in ("train", "val"):
            ids = fold.get(key)
            if not isinstance(ids, list) or not all(isinstance(c, str) for c in ids):
                raise SegpipeError(f"{path}: fold {k} '{key}' must be a list of case ids, got {shown(ids)}")
            twice = sorted(c for c, n in Counter(ids).items() if n > 1)
            if twice:
                raise SegpipeError(f"{path}: fold {k} lists {shown(twice)} twice in '{key}'")
        if not fold["train"]:
            raise SegpipeError(f"{path}: fold {k} has no training cases")
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise SegpipeError(f"{path}: fold {k} has {shown(both)} in both 'train' and 'val'; its validation "
                               "Dice would be measured on cases it trained on")

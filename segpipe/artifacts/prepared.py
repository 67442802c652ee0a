"""The prepared-dataset folder `segpipe preprocess` writes: plan, splits, manifest, cached cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.artifacts.files import read_json
from segpipe.artifacts.plan import Plan
from segpipe.data.paths import existing_folder


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
    return PreparedDataset(root, Plan.from_dict(plan, root / "plan.json"), splits, manifest)

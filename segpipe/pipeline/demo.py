"""`segpipe demo`: the whole pipeline on a synthetic dataset the demo makes itself."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segpipe.config import load_config
from segpipe.configs import resolve_config
from segpipe.data.synthetic import LABELS, make_synthetic_dataset
from segpipe.errors import SegpipeError
from segpipe.outputs import LOCK_NAME
from segpipe.pipeline.evaluate import evaluate
from segpipe.pipeline.fit import fit
from segpipe.pipeline.infer import infer
from segpipe.pipeline.preprocess import preprocess

MARKER = ".segpipe-demo"


@dataclass
class DemoResult:
    """The held-out scores and where everything went."""

    per_patient: pd.DataFrame
    mean_dice: float
    seconds: float
    paths: dict[str, Path]


PARTS = ("dataset", "prepared", "model", "predictions", "reports")  # what the demo makes in its folder


def _fresh_folder(root: Path) -> None:
    """Create `root`, replacing an earlier demo's parts (`PARTS`, whole) but never the user's own files:
    a folder holding anything else beside them is refused."""
    if root.exists() and any(p.name != LOCK_NAME for p in root.iterdir()):  # the CLI's lock is taken first
        if not (root / MARKER).is_file():
            raise SegpipeError(f"{root}: exists and is not a segpipe demo folder; choose another --output")
        foreign = sorted(p.name for p in root.iterdir() if p.name not in (*PARTS, MARKER, LOCK_NAME))
        if foreign:
            raise SegpipeError(f"{root / foreign[0]}: not made by segpipe demo, which replaces its folder's "
                               f"{', '.join(PARTS)}; move it or choose another --output")
        for part in PARTS:
            if (root / part).exists():
                shutil.rmtree(root / part)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by segpipe demo; safe to delete\n")


def run_demo(output: str | Path, *, cases: int = 12, epochs: int | None = None, seed: int = 0, quiet: bool = False) -> DemoResult:
    """Make data, preprocess, fit, infer the held-out cases and evaluate them."""
    started = time.perf_counter()
    root = Path(output)
    _fresh_folder(root)
    overrides = [f"train.seed={seed}"] + ([f"train.epochs={epochs}"] if epochs else [])
    cfg = load_config(resolve_config("demo"), overrides)
    paths = {
        "dataset": root / "dataset",
        "prepared": root / "prepared",
        "model": root / "model",
        "predictions": root / "predictions",
        "reports": root / "reports",
    }
    make_synthetic_dataset(paths["dataset"], cases=cases, test_cases=3, seed=seed)
    preprocess(paths["dataset"], paths["prepared"], cfg, workers=1, quiet=quiet)
    fit(paths["prepared"], paths["model"], cfg, quiet=quiet)
    infer(paths["model"], [paths["dataset"]], paths["predictions"], quiet=quiet)
    label_names = {int(k): v for k, v in LABELS.items()}
    result = evaluate(
        paths["predictions"], paths["dataset"] / "labelsTs", paths["reports"], cfg.evaluate, label_names,
        images=paths["dataset"] / "imagesTs", model_dir=paths["model"],
    )
    label_cols = [f"dice_{name.replace(' ', '_')}" for k, name in label_names.items() if k != 0]
    mean = float(np.nanmean(result.per_patient[label_cols].to_numpy()))
    paths["per_patient"] = result.files[0]
    paths["report"] = paths["reports"] / "report.html"
    paths["curves"] = paths["model"] / "curves.png"
    return DemoResult(per_patient=result.per_patient, mean_dice=mean, seconds=time.perf_counter() - started, paths=paths)

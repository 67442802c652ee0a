"""`segpipe report`: find the report.html of a reports folder (or of the evaluations beside a
model), and rebuild it from the inputs its summary.json records."""

from __future__ import annotations

import json
from pathlib import Path

from segpipe.errors import SegpipeError

SEARCH_DEPTH = 2  # a model folder's reports: MODEL/evaluation/, MODEL/<predictions>/evaluation/


def find_reports(folder: str | Path) -> list[Path]:
    """Reports folders (holding summary.json or report.html) at or below `folder`, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SegpipeError(f"{folder}: no such model or reports folder")
    found = []
    for depth in range(SEARCH_DEPTH + 1):
        pattern = "/".join(["*"] * depth)
        for marker in ("summary.json", "report.html"):
            found += [p.parent for p in folder.glob(f"{pattern}/{marker}" if pattern else marker)]
    unique = sorted(set(found), key=lambda p: max((p / m).stat().st_mtime for m in ("summary.json", "report.html") if (p / m).is_file()),
                    reverse=True)
    return unique


def report_folder(folder: str | Path) -> Path:
    """The reports folder to open: `folder` itself, or its newest reports folder."""
    found = find_reports(folder)
    if not found:
        raise SegpipeError(f"{folder}: holds no report (no summary.json or report.html); "
                           f"run `segpipe evaluate --pred PREDICTIONS --labels LABELS --output REPORTS` first")
    return Path(folder) if Path(folder) in found else found[0]


def rebuild(reports: str | Path, quiet: bool = True):
    """Run `evaluate` again with the inputs and settings summary.json records."""
    from segpipe.config import config_from_dict
    from segpipe.pipeline.evaluate import evaluate

    reports = Path(reports)
    summary_path = reports / "summary.json"
    try:
        inputs = json.loads(summary_path.read_text())["inputs"]
    except FileNotFoundError:
        raise SegpipeError(f"{summary_path}: missing; the report cannot be rebuilt without it") from None
    except (KeyError, ValueError):
        raise SegpipeError(f"{summary_path}: records no inputs (written by an older segpipe); run `segpipe evaluate` again") from None
    for key in ("pred", "labels", "images", "model"):
        if inputs.get(key) and not Path(inputs[key]).exists():
            raise SegpipeError(f"{summary_path}: its {key} folder {inputs[key]} no longer exists")
    ecfg = config_from_dict({"evaluate": inputs.get("evaluate_config", {})}, str(summary_path)).evaluate
    return evaluate(inputs["pred"], inputs["labels"], reports, ecfg, images=inputs.get("images"), model_dir=inputs.get("model"),
                    quiet=quiet, lesion_wise=bool(inputs.get("lesion_wise")))


__all__ = ["find_reports", "rebuild", "report_folder"]

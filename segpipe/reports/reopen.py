"""`segpipe report`: find the report.html of a reports folder (or of the evaluations beside a
model), and the inputs its summary.json records (`segpipe report --rebuild` evaluates them again)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.config import EvaluateConfig
from segpipe.data.brats import LABEL_SETS
from segpipe.data.paths import existing_folder
from segpipe.errors import SegpipeError
from segpipe.parsing import parse_json, read_text

SEARCH_DEPTH = 2  # a model folder's reports: MODEL/evaluation/, MODEL/<predictions>/evaluation/


def find_reports(folder: str | Path) -> list[Path]:
    """Reports folders (holding summary.json or report.html) at or below `folder`, newest first."""
    folder = existing_folder(folder, "model or reports folder")
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


def recorded_inputs(reports: str | Path) -> tuple[dict[str, Any], EvaluateConfig]:
    """The inputs and evaluate settings a reports folder's summary.json records, checked to still exist.

    `segpipe report --rebuild` runs `evaluate` again with them.
    """
    from segpipe.config import config_from_dict

    reports = Path(reports)
    summary_path = reports / "summary.json"
    if not summary_path.exists():
        raise SegpipeError(f"{summary_path}: missing; the report cannot be rebuilt without it")
    summary = parse_json(read_text(summary_path), summary_path)
    inputs = summary.get("inputs") if isinstance(summary, dict) else None
    if inputs is None:
        raise SegpipeError(f"{summary_path}: records no inputs (written by an older segpipe); run `segpipe evaluate` again")
    if not isinstance(inputs, dict):
        raise SegpipeError(f"{summary_path}: 'inputs' holds {type(inputs).__name__}, expected an object")
    for key in ("pred", "labels", "images", "model"):
        if inputs.get(key) is not None and not isinstance(inputs[key], str):
            raise SegpipeError(f"{summary_path}: 'inputs.{key}' holds {type(inputs[key]).__name__}, expected a path")
        if inputs.get(key) and not Path(inputs[key]).exists():
            raise SegpipeError(f"{summary_path}: its {key} folder {inputs[key]} no longer exists")
    if not isinstance(inputs.get("lesion_wise", False), bool):
        raise SegpipeError(f"{summary_path}: 'inputs.lesion_wise' is {inputs['lesion_wise']!r}, expected true or false")
    if inputs.get("pred") and Path(str(inputs["pred"])).resolve() == reports.resolve():
        raise SegpipeError(f"{summary_path}: its predictions folder is the reports folder itself; run `segpipe evaluate` again")
    if inputs.get("label_set") is not None and (not isinstance(inputs["label_set"], str) or inputs["label_set"] not in LABEL_SETS):
        raise SegpipeError(f"{summary_path}: 'inputs.label_set' is {inputs['label_set']!r}, expected one of {', '.join(LABEL_SETS)}")
    for key in ("pred", "labels"):
        if not inputs.get(key):
            raise SegpipeError(f"{summary_path}: 'inputs.{key}' is missing; run `segpipe evaluate` again")
    settings = inputs.get("evaluate_config", {})
    if not isinstance(settings, dict):
        raise SegpipeError(f"{summary_path}: 'inputs.evaluate_config' holds {type(settings).__name__}, expected an object")
    return inputs, config_from_dict({"evaluate": settings}, str(summary_path)).evaluate


__all__ = ["find_reports", "recorded_inputs", "report_folder"]

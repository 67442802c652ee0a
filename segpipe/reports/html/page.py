"""report.html: summary, a sortable and filterable per-patient table and a slice viewer.

The page opens from disk with no server and no network: its script and style are inline,
each patient's slices sit in `report_files/<n>.js` (PNG data URIs), which the page loads
with a <script> tag when the patient is opened.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from pathlib import Path

import pandas as pd

from segpipe.atomic import write_text
from segpipe.reports.html.views import PatientView

DATA_DIR = "report_files"
LABEL_COLOURS = ["#000000", "#ffd91a", "#3373ff", "#f22626", "#33d94d", "#cc66ff", "#ff8c00"]


def _asset(name: str) -> str:
    return resources.files("segpipe.reports.html").joinpath(name).read_text(encoding="utf-8")


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _json_value(value.item())
    return value


def _script_json(data) -> str:
    """JSON safe to place inside a <script> element."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_patient_data(folder: Path, views: list[PatientView]) -> dict[str, str]:
    """One script per patient under `folder`; returns patient -> its path relative to the page."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, view in enumerate(views):
        payload = {"patient": view.patient, "case": view.case,
                   "slices": [{"name": s.name, "image": s.image, "ref": s.ref, "pred": s.pred} for s in view.slices]}
        path = folder / f"patient_{i:05d}.js"
        write_text(path, f"window.segpipeLoaded({_script_json(payload)});\n")
        files[view.patient] = f"{DATA_DIR}/{path.name}"
    for stale in folder.glob("patient_*.js"):  # from an earlier run with more patients
        if f"{DATA_DIR}/{stale.name}" not in files.values():
            stale.unlink()
    return files


def render_report(
    path: str | Path,
    title: str,
    summary: pd.DataFrame,
    per_patient: pd.DataFrame,
    figures: dict[str, Path],
    notes: list[str],
    views: list[PatientView] | None = None,
    labels: dict[int, str] | None = None,
) -> Path:
    """Write report.html (and report_files/ with the patients' slices) into `path`'s folder."""
    path = Path(path)
    views = views or []
    data_files = write_patient_data(path.parent / DATA_DIR, views) if views else {}
    columns = list(per_patient.columns)
    rows = [[_json_value(v) for v in record] for record in per_patient.itertuples(index=False)]
    config = {
        "columns": columns,
        "rows": rows,
        "sortBy": "dice_mean" if "dice_mean" in columns else columns[0],
        "data": data_files,
        "labels": [{"value": int(k), "name": v, "colour": LABEL_COLOURS[min(int(k), len(LABEL_COLOURS) - 1)]}
                   for k, v in sorted((labels or {}).items()) if int(k) != 0],
    }
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta name='viewport' content='width=device-width'><title>{esc(title)}</title><style>{_asset('viewer.css')}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
        *[f"<p class='note'>{esc(n)}</p>" for n in notes],
    ]
    if views:
        parts.append(
            "<h2 id='viewer-title'>Patient</h2><section id='viewer'>"
            "<div class='controls'><label>slice <input type='range' id='slice' min='0' max='0' value='0'></label>"
            "<span id='slice-name'></span> <span class='hint'>&larr; &rarr; slices, &uarr; &darr; patients</span>"
            "<span id='toggles'></span></div>"
            "<div class='panels'><figure><canvas id='ref-canvas'></canvas><figcaption>reference</figcaption></figure>"
            "<figure><canvas id='pred-canvas'></canvas><figcaption>prediction</figcaption></figure></div>"
            "<div id='patient-row'></div></section>"
        )
    parts += [
        "<h2>Per patient</h2><p><input type='search' id='filter' placeholder='filter: patient id, or e.g. dice_mean<0.5'>"
        " <span id='row-count'></span> <span class='hint'>click a column to sort, a row to view the patient</span></p>",
        "<div class='table-wrap'><table id='patients'><thead></thead><tbody></tbody></table></div>",
        "<h2>Summary over patients</h2><details><summary>mean, std, median, quartiles and n of every column</summary>",
        summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="NaN", classes="summary"),
        "</details>",
    ]
    for caption, fig in figures.items():
        rel = fig.relative_to(path.parent) if fig.is_relative_to(path.parent) else fig
        parts.append(f"<h2>{esc(caption)}</h2><img src='{esc(str(rel))}' alt='{esc(caption)}'>")
    parts.append(f"<script>window.SEGPIPE = {_script_json(config)};</script><script>{_asset('viewer.js')}</script></body></html>")
    return write_text(path, "\n".join(parts))


__all__ = ["DATA_DIR", "render_report", "write_patient_data"]

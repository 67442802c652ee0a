"""An HTML report assembling the evaluation tables and figures."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from segpipe.atomic import write_text

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "img{max-width:100%;border:1px solid #eee;margin:4px 0}"
)


def html_report(
    path: str | Path,
    title: str,
    summary: pd.DataFrame,
    per_patient: pd.DataFrame,
    figures: dict[str, Path],
    notes: list[str],
    views: list | None = None,
    labels: dict[int, str] | None = None,
) -> Path:
    """Write report.html next to the figures (linked by relative path).

    With `views` (segpipe.reports.html.PatientView), the page gets a slice viewer and a
    sortable, filterable patient table (segpipe.reports.html.page); without, a static page.
    """
    if views:
        from segpipe.reports.html import render_report

        return render_report(path, title, summary, per_patient, figures, notes, views, labels)
    path = Path(path)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Summary over patients</h2>")
    parts.append(summary.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="NaN"))
    for caption, fig in figures.items():
        rel = fig.relative_to(path.parent) if fig.is_relative_to(path.parent) else fig
        parts.append(f"<h2>{html.escape(caption)}</h2><img src='{html.escape(str(rel))}' alt='{html.escape(caption)}'>")
    parts.append("<h2>Per patient</h2>")
    parts.append(per_patient.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="NaN"))
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts))

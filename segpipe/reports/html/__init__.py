"""The browsable report: report.html with a per-patient slice viewer (see page.py, views.py)."""

from segpipe.reports.html.page import render_report
from segpipe.reports.html.views import PatientView, patient_views

__all__ = ["PatientView", "patient_views", "render_report"]

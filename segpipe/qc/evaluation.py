"""Confidence and flags from an infer run's cases.csv, beside the Dice that `evaluate` measures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segpipe.atomic import write_with
from segpipe.qc.casetable import read_cases
from segpipe.qc.confidence import REVIEW_THRESHOLD


def add_qc_columns(per_case: pd.DataFrame, per_patient: pd.DataFrame, pred_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Join confidence, needs_review and flags of pred_dir/cases.csv onto the tables.

    Per patient: the mean confidence of its cases, the union of their flags, and
    needs_review when that mean is under the review threshold or any case is flagged. Returns the tables and whether cases.csv was found.
    """
    cases = read_cases(pred_dir)
    if cases is None or "confidence" not in cases:
        return per_case, per_patient, False
    qc = cases[["case", "confidence", "needs_review", "flags"]].copy()
    qc["flags"] = ["" if pd.isna(v) else str(v) for v in qc["flags"]]
    qc["needs_review"] = qc["needs_review"].astype(str).str.lower().isin(("true", "1"))
    per_case = per_case.merge(qc, on="case", how="left")
    grouped = per_case.groupby("patient", sort=False)
    patient_qc = pd.DataFrame({
        "confidence": grouped["confidence"].mean(),
        "flags": grouped["flags"].agg(lambda v: ";".join(sorted({f for text in v if isinstance(text, str) for f in text.split(";") if f}))),
    }).reset_index()
    # a patient's slices are scored pooled, so its review flag follows its mean confidence (or any flag)
    patient_qc.insert(2, "needs_review", (patient_qc["confidence"] < REVIEW_THRESHOLD) | (patient_qc["flags"] != ""))
    per_patient = per_patient.merge(patient_qc, on="patient", how="left")
    return per_case, per_patient, True


def confidence_figure(per_patient: pd.DataFrame, path: str | Path) -> Path:
    """Scatter of per-patient confidence against mean Dice, patients needing review in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    frame = per_patient.dropna(subset=["confidence", "dice_mean"])
    review = frame["needs_review"].astype(bool)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(frame.loc[~review, "confidence"], frame.loc[~review, "dice_mean"], s=18, label="no review needed")
    ax.scatter(frame.loc[review, "confidence"], frame.loc[review, "dice_mean"], s=18, c="tab:red", label="needs_review")
    rho = spearmanr(frame["confidence"], frame["dice_mean"]).statistic if len(frame) > 2 else float("nan")
    ax.set(xlabel="confidence (expected Dice, no ground truth)", ylabel="mean Dice (per patient)",
           title=f"Confidence against Dice: Spearman rho {rho:.2f}, {len(frame)} patients", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(path)

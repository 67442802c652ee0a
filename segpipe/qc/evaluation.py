"""Confidence and flags from an infer run's cases.csv, beside the Dice that `evaluate` measures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segpipe.atomic import write_with
from segpipe.qc.casetable import read_cases
from segpipe.own_files import FIGURE_METADATA
from segpipe.qc.confidence import REVIEW_THRESHOLD, expected_dice

FAILED_FLAG = "infer_failed"  # cases.csv says the run that wrote this folder failed on the case
UNLISTED_FLAG = "not_in_cases_csv"  # the folder's cases.csv has no row for the mask: not an infer run's
PARTIAL_FLAG = "partly_predicted"  # some of the patient's reference slices or volumes have no prediction


def flag_patients(per_patient: pd.DataFrame, patients: list[str], flag: str) -> pd.DataFrame:
    """Add `flag` to the named patients' flags and mark them needs_review (adding both columns
    where an infer run's cases.csv gave none)."""
    if not patients:
        return per_patient
    out = per_patient.copy()
    if "flags" not in out:
        out["needs_review"], out["flags"] = False, ""
    hit = out["patient"].isin(patients)
    out["flags"] = out["flags"].fillna("").astype(str)
    out.loc[hit, "flags"] = [";".join(sorted(set(filter(None, f.split(";"))) | {flag})) for f in out.loc[hit, "flags"]]
    out.loc[hit, "needs_review"] = True
    return out


def add_qc_columns(per_case: pd.DataFrame, per_patient: pd.DataFrame, pred_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Join confidence, needs_review and flags of pred_dir/cases.csv onto the tables.

    Per patient: its expected Dice with its cases pooled (as its Dice is), the union of
    their flags, and
    needs_review when that confidence is under the review threshold or any case is flagged. Returns the tables and whether cases.csv was found.
    """
    cases = read_cases(pred_dir)
    if cases is None or "confidence" not in cases:
        return per_case, per_patient, False
    soft = [c for c in cases.columns if c.startswith(("soft_overlap_", "soft_total_"))]
    qc = cases[["case", "confidence", "needs_review", "flags", *soft]].copy()
    qc["flags"] = ["" if pd.isna(v) else str(v) for v in qc["flags"]]
    qc["needs_review"] = qc["needs_review"].astype(str).str.lower().isin(("true", "1"))
    if "status" in cases:  # the run's last word on the case is a failure: a mask there is an earlier run's
        failed = ~cases["status"].astype(str).isin(("ok", "skipped"))
        qc.loc[failed, "flags"] = [";".join(filter(None, (f, FAILED_FLAG))) for f in qc.loc[failed, "flags"]]
        qc.loc[failed, "needs_review"] = True
    merged = per_case.merge(qc.assign(_row=True), on="case", how="left")
    unlisted = merged["_row"].isna()  # a mask in the folder that no infer run there wrote (a copy, a user's file)
    merged.loc[unlisted, "flags"] = UNLISTED_FLAG
    merged.loc[unlisted, "needs_review"] = True
    merged = merged.drop(columns="_row")
    per_case = merged.drop(columns=soft)
    grouped = merged.groupby("patient", sort=False)
    patient_qc = pd.DataFrame({
        "confidence": _pooled_confidence(merged, soft) if soft else grouped["confidence"].mean(),
        "flags": grouped["flags"].agg(lambda v: ";".join(sorted({f for text in v if isinstance(text, str) for f in text.split(";") if f}))),
    }).reset_index()
    # a patient's slices are scored pooled, so its review flag follows its mean confidence (or any flag)
    patient_qc.insert(2, "needs_review", (patient_qc["confidence"] < REVIEW_THRESHOLD) | (patient_qc["flags"] != ""))
    per_patient = per_patient.merge(patient_qc, on="patient", how="left")
    return per_case, per_patient, True


def _pooled_confidence(merged: pd.DataFrame, soft: list[str]) -> pd.Series:
    """Expected Dice of each patient with its slices pooled (as its Dice is), from the per-case terms."""
    sums = merged.groupby("patient", sort=False)[soft].sum(min_count=1)
    names = [c.removeprefix("soft_overlap_") for c in soft if c.startswith("soft_overlap_")]
    return pd.Series({
        patient: expected_dice([(row[f"soft_overlap_{n}"], row[f"soft_total_{n}"]) for n in names
                                if pd.notna(row[f"soft_overlap_{n}"])]) if row.notna().any() else float("nan")
        for patient, row in sums.iterrows()
    }).rename_axis("patient")


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
    varies = len(frame) > 2 and frame["confidence"].nunique() > 1 and frame["dice_mean"].nunique() > 1
    rho = spearmanr(frame["confidence"], frame["dice_mean"]).statistic if varies else float("nan")  # no rank order: no rho
    ax.set(xlabel="confidence (expected Dice, no ground truth)", ylabel="mean Dice (per patient)",
           title=f"Confidence against Dice: Spearman rho {rho:.2f}, {len(frame)} patients", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata=FIGURE_METADATA))
    plt.close(fig)
    return Path(path)

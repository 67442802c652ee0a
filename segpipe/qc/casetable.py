"""cases.csv: one row per input case of an `infer` run, no ground truth needed.

Columns: case, input, mask, status (ok, skipped, refused by --strict, failed), seconds,
precision, voxels_<label> and ml_<label> for every label and region (true voxel size
from the input's header; a 2D slice counts as 1 mm thick), components_tumour (connected
components of all non-zero labels, face connectivity), confidence (expected Dice,
segpipe.qc.confidence), soft_overlap_<label> and soft_total_<label> (its terms, so
`evaluate` can pool the slices of a patient), needs_review, flags (out-of-distribution flag names joined
with ';') and one 0/1 column flag_<name> per check (segpipe.qc.ood.FLAGS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segpipe.atomic import write_with
from segpipe.errors import SegpipeError
from segpipe.qc.confidence import REVIEW_THRESHOLD
from segpipe.qc.ood import FLAGS, Flag

CASES_CSV = "cases.csv"


def voxel_ml(affine: Any, ndim: int) -> float:
    """Volume of one voxel in ml from an affine (a 2D pixel counts as 1 mm thick)."""
    if affine is None:
        return 1e-3
    a = np.asarray(affine, dtype=float)
    n = min(ndim, a.shape[0] - 1)
    return abs(float(np.linalg.det(a[:n, :n]))) / 1000.0 or 1e-3


def volumes(labels: np.ndarray, affine: Any, structures: dict[str, list[int]]) -> dict[str, float]:
    """voxels_<name> and ml_<name> of every label or region in `structures`."""
    ml = voxel_ml(affine, labels.ndim)
    out: dict[str, float] = {}
    for name, members in structures.items():
        count = int(np.isin(labels, members).sum())
        out[f"voxels_{name}"] = count
        out[f"ml_{name}"] = round(count * ml, 4)
    return out


def tumour_components(labels: np.ndarray) -> int:
    """Connected components of the non-zero labels taken together."""
    return int(ndimage.label(labels > 0)[1])


def structures_of(label_names: dict[int, str], regions: dict[str, list[int]]) -> dict[str, list[int]]:
    """Labels (by name) and regions to report volumes for."""
    out = {name.replace(" ", "_"): [k] for k, name in sorted(label_names.items()) if k != 0}
    out.update(regions)
    return out


def case_row(case_id: str, source: Path, *, mask: Path | None, status: str, seconds: float, precision: str,
             labels: np.ndarray | None, affine: Any, structures: dict[str, list[int]], confidence: float | None,
             flags: list[Flag], terms: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """One row of cases.csv."""
    row: dict[str, Any] = {"case": case_id, "input": str(source), "mask": str(mask) if mask else "", "status": status,
                           "seconds": round(seconds, 3), "precision": precision}
    if labels is not None:
        row.update(volumes(labels, affine, structures))
        row["components_tumour"] = tumour_components(labels)
    else:
        row.update({f"{kind}_{name}": None for name in structures for kind in ("voxels", "ml")})
        row["components_tumour"] = None
    row["confidence"] = None if confidence is None else round(confidence, 4)
    names = list(terms) if terms else [name for name, members in structures.items() if len(members) == 1]
    for name in names:
        num, den = terms[name] if terms else (None, None)
        row[f"soft_overlap_{name}"] = None if num is None else round(num, 3)
        row[f"soft_total_{name}"] = None if den is None else round(den, 3)
    row["needs_review"] = bool(flags) or (confidence is not None and confidence < REVIEW_THRESHOLD)
    row["flags"] = ";".join(f.name for f in flags)
    names = {f.name for f in flags}
    row.update({f"flag_{name}": int(name in names) for name in FLAGS})
    return row


def cases_file(index: int = 0, count: int = 1) -> str:
    """The table's name: cases.csv, or cases_shard<i>of<n>.csv for shard i of n, so that
    processes writing one folder never overwrite each other's rows."""
    return CASES_CSV if count == 1 else f"cases_shard{index}of{count}.csv"


def write_cases(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write the rows as CSV (atomically); rows of an earlier run for other cases are kept."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.is_file():
        try:
            old = pd.read_csv(path, dtype={"case": str}, keep_default_na=False, na_values=[""])
            old = old[~old["case"].astype(str).isin(frame["case"].astype(str))] if "case" in old else None
        except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            old = None
        if old is not None and len(old):
            frame = pd.concat([old, frame], ignore_index=True)
    write_with(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


def read_cases(folder: Path) -> Any:
    """The cases.csv of a predictions folder (and those of --shard runs) as one DataFrame, or None."""
    import pandas as pd

    paths = sorted(p for p in Path(folder).glob("cases*.csv") if p.name == CASES_CSV or p.name.startswith("cases_shard"))
    if not paths:
        return None
    frame = pd.concat([_read_table(p) for p in paths], ignore_index=True)
    return frame.drop_duplicates("case", keep="last")


QC_COLUMNS = ("case", "confidence", "needs_review", "flags")  # what evaluate joins from it


def _read_table(path: Path) -> Any:
    """One cases.csv, its case ids as written (`NA` is a case, not a missing value) and its QC
    columns checked: a table infer did not write is named, not half read."""
    import pandas as pd

    wrong = f"{path}: not a cases.csv as segpipe infer writes it"
    try:
        frame = pd.read_csv(path, dtype={"case": str, "flags": str}, keep_default_na=False, na_values=[""])
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SegpipeError(f"{wrong} ({type(exc).__name__}); move it away or run infer again") from None
    if "case" not in frame:
        raise SegpipeError(f"{wrong} (no 'case' column)")
    if "confidence" not in frame:
        return frame  # a table of another version: no QC to join
    missing = [c for c in QC_COLUMNS if c not in frame]
    if missing:
        raise SegpipeError(f"{wrong} (no {', '.join(map(repr, missing))} column)")
    for column in ["confidence", *(c for c in frame.columns if c.startswith(("soft_overlap_", "soft_total_")))]:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = (values.isna() & frame[column].notna()) | (values < 0) | ((values > 1) & (column == "confidence"))
        if bad.any():
            raise SegpipeError(f"{wrong}: column '{column}' holds '{frame.loc[bad, column].iloc[0]}' for case "
                               f"{frame.loc[bad, 'case'].iloc[0]} (expected a number of 0 or more{', at most 1' if column == 'confidence' else ''})")
        frame[column] = values
    return frame

"""`segpipe evaluate`: per-patient Dice tables from predicted and reference masks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from segpipe.atomic import write_json, write_with
from segpipe.config import EvaluateConfig
from segpipe.data.decathlon import read_decathlon
from segpipe.data.paths import case_id_of, is_image_file
from segpipe.errors import SegpipeError
from segpipe.reports.metrics import dice_per_label, dice_per_region

EMPTY_CONVENTION = (
    "Dice is NaN when reference and prediction are both empty for a label or region "
    "(nothing to find, nothing found: the patient is left out of that column's statistics); "
    "it is 0 when only one of them is empty."
)


@dataclass
class EvaluateResult:
    """The tables and where they were written."""

    per_patient: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path]


def reference_masks(labels: Path) -> tuple[dict[str, Path], dict[int, str] | None]:
    """Reference masks by case id, from a Decathlon folder or a folder of mask files."""
    if not labels.exists():
        raise SegpipeError(f"{labels}: no such file or folder")
    if labels.is_dir() and (labels / "dataset.json").is_file():
        ds = read_decathlon(labels)
        return {c.case_id: c.label for c in ds.training if c.label is not None}, ds.labels
    if labels.is_dir():
        return {case_id_of(p): p for p in sorted(labels.iterdir()) if is_image_file(p)}, None
    raise SegpipeError(f"{labels}: expected a folder of reference masks or a Decathlon dataset folder")


def _load_mask(path: Path) -> np.ndarray:
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:  # nibabel raises many types for broken files
        raise SegpipeError(f"{path}: cannot read mask ({exc})") from None
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if not np.allclose(data, np.round(data)):
        raise SegpipeError(f"{path}: mask holds non-integer values")
    return data.astype(np.int32)


def summarise(per_patient: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, median, IQR and number of scored patients for each numeric column."""
    numeric = per_patient.select_dtypes("number")
    return pd.DataFrame(
        {
            "mean": numeric.mean(),
            "std": numeric.std(),
            "median": numeric.median(),
            "q25": numeric.quantile(0.25),
            "q75": numeric.quantile(0.75),
            "iqr": numeric.quantile(0.75) - numeric.quantile(0.25),
            "n": numeric.count(),
        }
    ).rename_axis("metric").reset_index()


def evaluate(
    pred_dir: str | Path,
    labels: str | Path,
    output_dir: str | Path,
    ecfg: EvaluateConfig | None = None,
    label_names: dict[int, str] | None = None,
) -> EvaluateResult:
    """Score every prediction that has a reference; write per_patient.csv and summary.csv.

    Labels are named from the dataset.json of `labels`, else from `label_names`, else
    `label_<k>` for each value present.
    """
    ecfg = ecfg or EvaluateConfig()
    pred_dir, out = Path(pred_dir), Path(output_dir)
    if not pred_dir.is_dir():
        raise SegpipeError(f"{pred_dir}: no such predictions folder")
    refs, names = reference_masks(Path(labels))
    names = names or label_names
    preds = {case_id_of(p): p for p in sorted(pred_dir.iterdir()) if is_image_file(p)}
    matched = sorted(set(preds) & set(refs))
    if not matched:
        raise SegpipeError(f"{pred_dir}: no prediction matches a reference case in {labels}")
    rows = []
    for cid in matched:
        pred, ref = _load_mask(preds[cid]), _load_mask(refs[cid])
        if pred.shape != ref.shape:
            raise SegpipeError(f"{preds[cid]}: shape {pred.shape} differs from the reference's {ref.shape}")
        label_ids = sorted(names) if names else sorted(set(np.unique(ref)) | set(np.unique(pred)))
        label_ids = [k for k in label_ids if k != 0]
        row: dict[str, object] = {"patient": cid}
        for k, v in dice_per_label(pred, ref, label_ids).items():
            label_name = (names or {}).get(k, f"label_{k}").replace(" ", "_")
            row[f"dice_{label_name}"] = v
        for region, v in dice_per_region(pred, ref, ecfg.regions).items():
            row[f"dice_{region}"] = v
        rows.append(row)
    per_patient = pd.DataFrame(rows)
    summary = summarise(per_patient)
    files = [out / "per_patient.csv", out / "summary.csv", out / "summary.json"]
    write_with(files[0], lambda tmp: per_patient.to_csv(tmp, index=False, float_format="%.6f"))
    write_with(files[1], lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6f"))
    write_json(
        files[2],
        {
            "patients": len(per_patient),
            "unmatched_predictions": sorted(set(preds) - set(refs)),
            "regions": ecfg.regions,
            "empty_mask_convention": EMPTY_CONVENTION,
            "mean": json.loads(summary.set_index("metric")["mean"].to_json()),
        },
    )
    return EvaluateResult(per_patient=per_patient, summary=summary, files=files)

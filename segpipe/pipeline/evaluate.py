"""`segpipe evaluate`: per-patient reports from predicted and reference masks."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from segpipe.artifacts.files import read_table
from segpipe.artifacts.plan import check_regions, default_regions
from segpipe.atomic import write_json, write_with
from segpipe.config import EvaluateConfig
from segpipe.data.brats import label_set_named
from segpipe.data.paths import existing_folder, has_suffix
from segpipe.data.validate import label_values
from segpipe.errors import SegpipeError
from segpipe.metrics.overlap import EMPTY_CONVENTION
from segpipe.metrics.patients import PatientScores, label_structures, structures
from segpipe.own_files import check_own, csv_with, figure, figures_beside, text_with
from segpipe.progress import progress
from segpipe.reports.figures import overlay, training_curves
from segpipe.reports.mask_store import MaskStore
from segpipe.reports.masks import is_mask_file, load_display_slice, load_mask_grid, masks_by_case, on_reference_grid
from segpipe.reports.references import Reference, matched_splits, model_label_names, no_match_error, read_references
from segpipe.reports.report import html_report


@dataclass
class EvaluateResult:
    """The tables and where they were written."""

    per_patient: pd.DataFrame
    per_case: pd.DataFrame
    summary: pd.DataFrame
    files: list[Path] = field(default_factory=list)
    references: dict = field(default_factory=dict)  # source, layout and the splits that matched
    warnings: list[str] = field(default_factory=list)  # doubtful inputs, one line each, for the console

    def matched_line(self) -> str:
        """Which references the predictions matched, for the console."""
        r = self.references
        count = sum(r["matched_splits"].values())
        if not r["layout"]:
            return f"matched {count} prediction(s) to the masks in {r['path']}"
        splits = ", ".join(f"{n} in the {s} split" for s, n in r["matched_splits"].items())
        return f"matched {count} prediction(s) to references of the {r['layout']} dataset {r['path']}: {splits}"


INFER_SIDE_OUTPUTS = ("_probabilities", "_uncertainty")  # maps infer writes beside the masks: not predictions


def map_labels(mask: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Substitute label values (all at once, so 1->2 and 2->1 swap rather than merge)."""
    out = mask.copy()
    for src, dst in mapping.items():
        out[mask == src] = dst
    return out


def evaluate(
    pred_dir: str | Path,
    labels: str | Path,
    output_dir: str | Path,
    ecfg: EvaluateConfig | None = None,
    label_names: dict[int, str] | None = None,
    *,
    images: str | Path | None = None,
    model_dir: str | Path | None = None,
    quiet: bool = True,
    lesion_wise: bool = False,
    label_set: str = "msd",
) -> EvaluateResult:
    """Score every prediction that has a reference and write the reports.

    Writes per_case.csv (one row per slice or volume), per_patient.csv (a patient's slices
    pooled before scoring), summary.csv (mean, std, median, IQR, n per column),
    summary.json (conventions, missing cases), overlays of the best, median and worst
    patients, curves.png (with `model_dir`) and report.html. With `lesion_wise`, the
    tables also hold BraTS 2023 lesion-wise Dice and HD95 and PQ/RQ/SQ per region
    (segpipe.reports.lesions; needs panoptica). When `pred_dir` holds the cases.csv of
    `segpipe infer`, its confidence, needs_review and flags join the tables and
    confidence_vs_dice.png plots confidence against Dice. A BraTS-layout `labels` dataset is
    read in the model's label set (`label_names` or `model_dir`'s), else in `label_set`.
    """
    ecfg = ecfg or EvaluateConfig()
    if lesion_wise:
        from segpipe.reports.lesions import require_panoptica

        require_panoptica()  # before any work: a missing extra is named at once
    pred_dir, out = existing_folder(pred_dir, "predictions folder"), Path(output_dir)
    check_report_folder(out)
    model_names = model_label_names(model_dir) if model_dir is not None else None  # checked even with label_names
    label_set = label_set_named(label_names or model_names) or label_set
    references = read_references(Path(labels), ecfg.patient_pattern, images, label_set)
    curves = Path(model_dir) / "metrics.csv" if model_dir is not None else None
    metrics = read_table(curves) if curves is not None and curves.is_file() else None  # before anything is written
    names = label_names or model_names or references.labels or {}
    preds = masks_by_case([p for p in sorted(pred_dir.iterdir()) if is_mask_file(p)])
    matched = sorted(set(preds) & set(references.cases))
    if not matched:
        raise no_match_error(pred_dir, preds, references)
    splits = matched_splits(references, matched)
    # references of a split no prediction touched (a dataset's training cases) are not "missing"
    refs = {cid: r for cid, r in references.cases.items() if r.split in splits}
    missing = sorted(set(refs) - set(preds))
    unmatched = sorted(set(preds) - set(refs))

    loaded = MaskStore()  # compressed: a whole dataset's masks stay at hand for lesions, overlays and views
    predicted: dict[str, set[int]] = {}
    label_ids: set[int] = {k for k in names if k != 0}
    for cid in progress(matched, desc="evaluate", unit="case", quiet=quiet):
        (pred, _, pred_affine), (ref, spacing, ref_affine) = load_mask_grid(preds[cid]), load_mask_grid(refs[cid].mask)
        if refs[cid].mapping:
            ref = map_labels(ref, refs[cid].mapping)
        pred = _same_axis_order(pred, preds[cid], refs[cid].mask)
        pred = on_reference_grid(pred, pred_affine, preds[cid], ref.shape, ref_affine, refs[cid].mask)
        if pred.shape != ref.shape:
            raise SegpipeError(f"{preds[cid]}: shape {pred.shape} differs from the reference's {ref.shape} ({refs[cid].mask})")
        predicted[cid] = {int(v) for v in label_values(pred)[0]}
        held = {int(v) for v in label_values(ref)[0]}
        if names and held - set(names) - {0}:  # its tumour there would be scored as background
            raise SegpipeError(f"{refs[cid].mask}: holds label value(s) {', '.join(map(str, sorted(held - set(names) - {0})))} "
                               f"outside the label set ({', '.join(str(k) for k in sorted(names) if k)}) it is scored in; "
                               "is it another numbering (BraTS 4 for enhancing: preprocess.label_set)?")
        if not names:
            label_ids |= held
        loaded.add(cid, pred, ref, spacing)
    # a predicted value the references lack is doubtful (another label set): with declared labels it
    # is scored as background, without them as a label of its own that no reference holds
    known = (set(names) if names else label_ids) | {0}
    undeclared = {cid: sorted(values - known) for cid, values in predicted.items() if values - known}
    label_ids.discard(0)
    # regions from the references' labels: a stray predicted value must not turn BraTS's off
    regions = ecfg.regions if ecfg.regions is not None else default_regions(sorted(label_ids))
    check_regions(ecfg.regions, known - {0})
    if not names:
        label_ids |= {v for values in undeclared.values() for v in values}
    scored = structures(sorted(label_ids), names, regions)
    if not scored:
        raise SegpipeError(f"{pred_dir}: every prediction and reference is background only and no label set is declared, "
                           "so there is no label to score (give the labels: --model, or a dataset folder as --labels)")
    scores = PatientScores(scored, label_structures(sorted(label_ids), names))
    for cid in matched:
        pred, ref, spacing = loaded[cid]
        scores.add(cid, refs[cid].patient, pred, ref, spacing)
    per_case, per_patient = scores.per_case(), scores.per_patient()
    if lesion_wise:
        from segpipe.reports.lesions import lesion_columns

        lesion_structures = {k: v for k, v in scored.items() if k in regions} if regions else scored
        per_case, per_patient = lesion_columns(per_case, per_patient, loaded, lesion_structures, ecfg, quiet)
    from segpipe.qc.evaluation import FAILED_FLAG, PARTIAL_FLAG, UNLISTED_FLAG, add_qc_columns, confidence_figure, flag_patients

    per_case, per_patient, with_qc = add_qc_columns(per_case, per_patient, pred_dir)  # from pred_dir/cases.csv
    partial = sorted({refs[cid].patient for cid in missing} & set(per_patient["patient"]))
    per_patient = flag_patients(per_patient, partial, PARTIAL_FLAG)
    summary = summarise(per_patient.drop(columns=["slices_or_volumes", "needs_review"], errors="ignore"))

    files = [out / n for n in ("per_patient.csv", "per_case.csv", "summary.csv", "summary.json")]
    write_with(files[0], lambda tmp: per_patient.to_csv(tmp, index=False, float_format="%.6f"))
    write_with(files[1], lambda tmp: per_case.to_csv(tmp, index=False, float_format="%.6f"))
    write_with(files[2], lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6f"))
    write_json(
        files[3],
        {
            "patients": int(len(per_patient)),
            "cases": int(len(per_case)),
            "labels": {str(k): names.get(k, f"label_{k}") for k in sorted(label_ids)},
            "regions": regions,
            "references": {"path": str(references.source), "layout": references.layout, "matched_splits": splits,
                           "images": str(references.images) if references.images else None},
            "missing_predictions": missing,
            "undeclared_prediction_labels": undeclared,
            "unmatched_predictions": unmatched,
            "pooling": "per_patient.csv pools all slices or volumes of a patient before scoring",
            "empty_mask_convention": EMPTY_CONVENTION,
            "inputs": {"pred": str(pred_dir.resolve()), "labels": str(Path(labels).resolve()),
                       "images": str(Path(images).resolve()) if images else None,
                       "model": str(Path(model_dir).resolve()) if model_dir else None, "lesion_wise": lesion_wise,
                       "label_set": label_set,
                       "evaluate_config": dataclasses.asdict(ecfg)},
            **({"lesion_wise": _lesion_rule(ecfg)} if lesion_wise else {}),
            "units": {"hd95_mm": "mm (voxel spacing from the reference header; 1 per pixel for PNG; for MAT-files the figshare set's pixel size, 0.49 mm at 512 x 512)", "vol_ref_ml": "ml"},
            "mean": {k: (None if pd.isna(v) else float(v)) for k, v in summary.set_index("metric")["mean"].items()},
        },
    )
    figures, without_image, unusable = _overlays(per_patient, per_case, loaded, refs, names, out)
    if with_qc:
        figures["Confidence against Dice"] = confidence_figure(per_patient, out / "confidence_vs_dice.png")
    if metrics is not None:
        figures["Training curves"] = training_curves(metrics, out / "curves.png")
    notes = [
        f"{len(per_patient)} patients, {len(per_case)} slices or volumes; predictions {pred_dir}, references {labels}.",
        "Dice: " + EMPTY_CONVENTION["dice"] + ". HD95: " + EMPTY_CONVENTION["hd95_mm"] + ".",
    ]
    stray = [cid for cid in unmatched if not cid.endswith(INFER_SIDE_OUTPUTS)]
    itself = [cid for cid in matched if preds[cid].resolve() == refs[cid].mask.resolve()]
    warnings = references.notes + _warnings(undeclared, missing, names, sorted(known), stray, itself, partial)
    for flag, why in ((FAILED_FLAG, "are listed as failed in {table}: their masks are an earlier run's"),
                      (UNLISTED_FLAG, "have no row in {table}: no infer run there wrote them")):
        doubtful = sorted(per_case.loc[per_case["flags"].str.contains(flag, na=False), "case"]) if with_qc else []
        if doubtful:
            warnings.append(f"{len(doubtful)} scored prediction(s) {why.format(table=pred_dir / 'cases.csv')} (e.g. case "
                            f"{doubtful[0]}); marked needs_review (flag {flag})")
    notes += warnings
    if without_image:
        notes.append(f"No image found for case(s) {', '.join(without_image)}: their overlays show the masks only "
                     "(give the image folder with --images).")
    for path in unusable:
        notes.append(f"{path}: not drawn under its overlay (unreadable, or its shape differs from the mask's).")
    views = None
    if ecfg.viewer_slices > 0:
        from segpipe.reports.html import patient_views

        views = patient_views(per_case, loaded, {c: refs[c].image for c in matched}, ecfg.viewer_slices)
    files.append(html_report(out / "report.html", "segpipe evaluation", summary, per_patient, figures, notes, views,
                             {k: names.get(k, f"label_{k}") for k in sorted(label_ids)}))
    files.extend(figures.values())
    return EvaluateResult(per_patient=per_patient, per_case=per_case, summary=summary, files=files,
                          references={"path": str(references.source), "layout": references.layout, "matched_splits": splits},
                          warnings=warnings)


# what evaluate replaces in its output folder, recognised by what it writes there
_SUMMARY = text_with('"empty_mask_convention"')
REPORT_FILES = {"per_patient.csv": csv_with("patient", "slices_or_volumes"), "per_case.csv": csv_with("case", "patient"),
                "summary.csv": csv_with("metric", "mean"), "summary.json": _SUMMARY,
                "report.html": text_with("<title>segpipe evaluation</title>"),
                "report_files/patient_*.js": text_with("window.segpipeLoaded("),
                **{name: figure() for name in ("overlay_best.png", "overlay_median.png", "overlay_worst.png", "curves.png",
                                               "confidence_vs_dice.png")}}


def check_report_folder(out: Path) -> None:
    """Refuse before any work when `out` holds a file evaluate would replace that it did not write
    (figures drawn before they carried segpipe's mark count as its own beside its summary.json)."""
    check_own(out, figures_beside(REPORT_FILES, out / "summary.json", _SUMMARY), "evaluate")


def _lesion_rule(ecfg: EvaluateConfig) -> dict[str, object]:
    from segpipe.reports.lesions import RULE

    return {**RULE, "dilation_iterations": ecfg.lesion_dilation, "min_lesion_volume_mm3": ecfg.lesion_min_volume}


def _same_axis_order(pred: np.ndarray, pred_path: Path, ref_path: Path) -> np.ndarray:
    """A 2D prediction in the reference's axis order: a PNG holds rows first, a NIfTI, NRRD or
    MHA slice x first (ITK converts one into the other keeping every pixel in place), so a
    PNG scored against one of those is its transpose."""
    def kind(path: Path) -> str:
        return "png" if has_suffix(path, ".png") else "mat" if has_suffix(path, ".mat") else "itk"

    return pred.T if pred.ndim == 2 and {kind(pred_path), kind(ref_path)} == {"png", "itk"} else pred


def _warnings(undeclared: dict[str, list[int]], missing: list[str], names: dict[int, str], known: list[int],
              unmatched: list[str], itself: list[str], partial: list[str]) -> list[str]:
    """Doubtful results, one line each: predictions that are the reference files themselves,
    predicted label values the references do not declare (or, without declared labels, that
    no reference holds), references without a prediction (and the patients scored without
    them), and predictions without a reference."""
    lines = []
    if itself:
        lines.append(f"{len(itself)} prediction(s) are the reference files themselves (e.g. case {itself[0]}): "
                     "their scores compare a mask with itself")
    if undeclared:
        first, values = next(iter(undeclared.items()))
        how = ("do not declare", "background") if names else ("do not hold", "labels of their own")
        lines.append(f"{len(undeclared)} prediction(s) hold label values the references {how[0]} "
                     f"({', '.join(map(str, known))}), scored as {how[1]}: case {first} has "
                     f"{', '.join(map(str, values))} (summary.json: undeclared_prediction_labels)")
    if missing:
        lines.append(f"{len(missing)} reference case(s) have no prediction, e.g. {missing[0]} "
                     "(summary.json: missing_predictions)")
    if partial:
        from segpipe.qc.evaluation import PARTIAL_FLAG

        lines.append(f"{len(partial)} patient(s) are scored on part of their slices or volumes, the others having no "
                     f"prediction (e.g. {partial[0]}); marked needs_review (flag {PARTIAL_FLAG})")
    if unmatched:
        lines.append(f"{len(unmatched)} prediction(s) match no reference case and are not scored, e.g. {unmatched[0]} "
                     "(summary.json: unmatched_predictions)")
    return lines


def summarise(per_patient: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, median, IQR and number of scored patients for each numeric column."""
    numeric = per_patient.select_dtypes("number")
    q25, q75 = numeric.quantile(0.25), numeric.quantile(0.75)
    return pd.DataFrame(
        {
            "mean": numeric.mean(),
            "std": numeric.std(),
            "median": numeric.median(),
            "q25": q25,
            "q75": q75,
            "iqr": q75 - q25,
            "n": numeric.count(),
        }
    ).rename_axis("metric").reset_index()


def _overlays(per_patient: pd.DataFrame, per_case: pd.DataFrame, loaded: Mapping, refs: dict[str, Reference],
              names: dict[int, str], out: Path) -> tuple[dict[str, Path], list[str], list[Path]]:
    """Overlay PNGs of the best, median and worst patients by mean label Dice, the cases drawn
    without an image (none was found) and the images found but not drawn (unreadable, or of
    another shape)."""
    ranked = per_patient.dropna(subset=["dice_mean"]).sort_values("dice_mean", ascending=False)
    without_image: list[str] = []
    unusable: list[Path] = []
    if ranked.empty:
        return {}, without_image, unusable
    picks = {"best": ranked.iloc[0], "median": ranked.iloc[len(ranked) // 2], "worst": ranked.iloc[-1]}
    figures = {}
    for rank, row in picks.items():
        cases = per_case.loc[per_case["patient"] == row["patient"], "case"].tolist()
        # the slice or volume with most reference foreground, at its largest axial slice
        cid = max(cases, key=lambda c: int(np.count_nonzero(loaded[c][1])))
        pred, ref, _ = loaded[cid]
        index = None
        if ref.ndim == 3:
            index = int(np.argmax(np.count_nonzero(ref, axis=(0, 1)))) if ref.any() else ref.shape[2] // 2
            ref2d, pred2d = ref[:, :, index], pred[:, :, index]
        else:
            ref2d, pred2d = ref, pred
        image = load_display_slice(refs[cid].image, ref.shape, index) if refs[cid].image else None
        if ref.ndim == 3:  # volume slices: x to the right, y (anterior) up
            ref2d, pred2d = ref2d.T[::-1], pred2d.T[::-1]
            image = image.T[::-1] if image is not None else None
        if image is not None and image.shape != ref2d.shape:
            image = None
        title = f"{rank}: patient {row['patient']} (case {cid}), mean Dice {row['dice_mean']:.3f}"
        if image is None and refs[cid].image:
            unusable.append(refs[cid].image)
            title += f"\n{refs[cid].image.name} unreadable or of another shape: masks only"
        elif image is None:
            without_image.append(cid)
            title += "\nno image found: masks only (give --images)"
        figures[f"{rank.capitalize()} patient"] = overlay(image, ref2d, pred2d, title, out / f"overlay_{rank}.png", names)
    return figures, sorted(set(without_image)), sorted(set(unusable))

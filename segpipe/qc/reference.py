"""The training reference out-of-distribution checks compare with (plan.json's "qc_reference").

`segpipe preprocess` records each case's features (segpipe.qc.features) in manifest.json;
`segpipe fit` summarises those of the fold's training cases into the model folder's
plan.json, so held-out cases never shape the reference. A model folder trained before
this existed gets one with `python -m segpipe.qc.reference PREPARED MODEL`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from segpipe.qc.feature_version import VERSION

SPACING_SLACK = 1.25  # spacing may differ from the training range by this factor
BOX_SLACK = 1.3  # the non-zero box may be this much smaller or larger than in training
INTENSITY_MARGIN = 1.5  # intensity distance above this many times the training 99.5th percentile
MIN_SCALE = 0.05  # floor of a quantile's training spread (z units), for small training sets
MIN_LIMIT = 1.0  # floor of the intensity distance limit
ORIENTATION_MIN = 0.05  # a rotated or mirrored map must beat the stored one by at least this
ORIENTATION_MARGIN = 1.5  # ... and by 1.5x the most any training patient's did
SKULL_COVERAGE = 0.75  # non-zero voxels outside the brain-like foreground in at least 3/4 of directions
SKULL_SHARE = 0.10  # ... and at least 10% of all non-zero voxels
UNMASKED_FILL = 0.95  # non-zero voxels filling this much of their box: no brain mask was applied (a
# skull-stripped brain fills at most ~0.84 of its box in a 2D slice, ~0.5 in a volume)
UNSTRIPPED_TRAINED = 0.10  # a model whose training cases were whole heads more often than this has seen skulls
CONTRAST_MARGIN = 1.25  # contrast distance above this many times the training 99.5th percentile
CONTRAST_MIN_PATIENTS = 20  # fewer training patients cannot show the contrast's spread
POOL_MAX = 16  # the most slices of one patient pooled (the limits' list length)


def skull_kind(features: dict[str, Any]) -> str | None:
    """How a case shows it was not skull-stripped: "shell" (scalp and skull around the brain),
    "unmasked" (no brain mask: the non-zero voxels fill their box), or None."""
    if features["outside_share"] >= SKULL_SHARE and features["outside_coverage"] >= SKULL_COVERAGE:
        return "shell"
    if features.get("nonzero_fill", 0.0) >= UNMASKED_FILL:
        return "unmasked"
    return None


def _map(features: dict[str, Any]) -> np.ndarray:
    values = np.asarray(features["map"], dtype=np.float32)
    dims = len(features["box_mm"])
    side = round(values.size ** (1 / dims))
    return values.reshape((side,) * dims)


def alternatives(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Every mirroring and axis order of a square (cubic) map but the stored one."""
    import itertools

    dims = volume.ndim
    out = []
    for perm in itertools.permutations(range(dims)):
        for flips in itertools.product((False, True), repeat=dims):
            if perm == tuple(range(dims)) and not any(flips):
                continue
            v = np.transpose(volume, perm)
            axes = tuple(i for i, f in enumerate(flips) if f)
            out.append((f"axes{perm}flip{axes}", np.flip(v, axes) if axes else v))
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum())) or 1.0
    return float((a * b).sum() / denom)


def orientation_margins(features: dict[str, Any], template: np.ndarray, candidates: list[str]) -> float:
    """How much better the best candidate re-orientation matches the template than the image as stored."""
    volume = _map(features)
    if volume.shape != template.shape:
        return 0.0
    stored = _corr(volume, template)
    best = max((_corr(v, template) for name, v in alternatives(volume) if name in candidates), default=stored)
    return best - stored


def intensity_distance(profile: list[float], median: list[float], scale: list[float]) -> float:
    """Mean absolute deviation of a z-scored quantile profile from the training median, in training spreads."""
    x, m, s = (np.asarray(v, dtype=float) for v in (profile, median, scale))
    return float(np.mean(np.abs(x - m) / np.maximum(s, 1e-3)))


def contrast_distance(values: Sequence[float], median: float, scale: float) -> float:
    """Departure of a (pooled) contrast value from the training median, in training spreads."""
    return abs(float(np.mean(values)) - median) / max(scale, 1e-3)


def pooled_limits(groups: list[np.ndarray], statistic: Callable[[np.ndarray], float], quantile: float) -> list[float]:
    """The `quantile` of `statistic` over subsets of n cases of one training patient, for n = 1, 2, ...

    A patient's slices are checked together, so the limit depends on how many are pooled;
    subsets of each training patient's cases (all of them for n = 1 and n = its count,
    three drawn at random in between) give the training spread for each n.
    """
    rng = np.random.default_rng(0)
    most = min(POOL_MAX, max(len(g) for g in groups))
    limits = []
    for n in range(1, most + 1):
        values = []
        for g in groups:
            if len(g) < n:
                continue
            if n == 1:
                values += [statistic(g[i : i + 1]) for i in range(len(g))]
            elif n == len(g):
                values.append(statistic(g))
            else:
                values += [statistic(g[rng.choice(len(g), n, replace=False)]) for _ in range(3)]
        limits.append(float(np.percentile(values, quantile)))
    return limits


def _by_patient(values: list[float], patients: list[str]) -> list[np.ndarray]:
    order: dict[str, list[float]] = {}
    for v, p in zip(values, patients):
        order.setdefault(p, []).append(v)
    return [np.asarray(v, dtype=float) for v in order.values()]


def _by_patient_rows(rows: np.ndarray, patients: list[str]) -> list[np.ndarray]:
    order: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        order.setdefault(p, []).append(i)
    return [rows[i] for i in order.values()]


def contrast_reference(features: list[dict[str, Any]], patients: list[str]) -> list[dict[str, Any]] | None:
    """Per channel: the median and spread of `bright_texture` and its limits by slices pooled."""
    if len(set(patients)) < CONTRAST_MIN_PATIENTS or any("contrast" not in f for f in features):
        return None
    out = []
    for c in range(len(features[0]["contrast"])):
        measured = [(f["contrast"][c], p) for f, p in zip(features, patients) if f["contrast"][c] is not None]
        if len({p for _, p in measured}) < CONTRAST_MIN_PATIENTS:
            return None
        values = np.asarray([v for v, _ in measured], dtype=float)
        median = float(np.median(values))
        scale = max(1.4826 * float(np.median(np.abs(values - median))), 1e-3)
        limits = pooled_limits(_by_patient(values.tolist(), [p for _, p in measured]), lambda g: contrast_distance(g, median, scale), 99.5)
        out.append({"median": round(median, 4), "scale": round(scale, 4),
                    "limits": [round(max(MIN_LIMIT, v * CONTRAST_MARGIN), 4) for v in limits]})
    return out


def build_reference(features: list[dict[str, Any]], tumour_ml: list[float], patients: list[str] | None = None) -> dict[str, Any]:
    """Summarise training cases' features into the reference the checks use.

    `patients` (one per case; default: every case its own patient) groups the slices
    of one patient, whose checks pool them.
    """
    patients = patients or [str(i) for i in range(len(features))]
    spacing = np.asarray([f["spacing"] for f in features], dtype=float)
    box = np.asarray([f["box_mm"] for f in features], dtype=float)
    channels = len(features[0]["intensity"])
    intensity = []
    for c in range(channels):
        profiles = np.asarray([f["intensity"][c] for f in features], dtype=float)
        median = np.median(profiles, 0)
        scale = np.maximum(1.4826 * np.median(np.abs(profiles - median), 0), MIN_SCALE)
        distances = [intensity_distance(p, median.tolist(), scale.tolist()) for p in profiles]
        intensity.append({
            "median": median.round(4).tolist(), "scale": scale.round(4).tolist(),
            "limit": round(max(MIN_LIMIT, float(np.percentile(distances, 99.5)) * INTENSITY_MARGIN), 4),
        })
    maps = np.stack([_map(f) for f in features])
    template = maps.mean(0)
    # only re-orientations that the stored map beats for nearly every training patient
    # (not, say, a left-right mirror of a brain)
    names = [name for name, _ in alternatives(template)]
    beats = np.asarray([[_corr(m, template) - _corr(alt, template) for _, alt in alternatives(m)] for m in maps])
    per_patient = np.stack([g.mean(0) for g in _by_patient_rows(beats, patients)])
    candidates = [name for name, share in zip(names, (per_patient > 0).mean(0)) if share >= 0.9]
    margins = [orientation_margins(f, template, candidates) for f in features]
    orientation_limits = pooled_limits(_by_patient(margins, patients), lambda g: float(np.mean(g)), 100)
    volumes = np.asarray(tumour_ml, dtype=float)
    contrast = contrast_reference(features, patients) if all(f.get("version") == VERSION for f in features) else None
    return {
        "version": VERSION if all(f.get("version") == VERSION for f in features) else 1,
        "cases": len(features),
        "patients": len(set(patients)),
        "channels": int(features[0]["channels"]),
        "spacing_min": spacing.min(0).tolist(), "spacing_max": spacing.max(0).tolist(),
        "box_mm_low": np.percentile(box, 0.5, axis=0).round(2).tolist(),
        "box_mm_high": np.percentile(box, 99.5, axis=0).round(2).tolist(),
        "intensity": intensity,
        "template": template.round(3).ravel().tolist(),
        "orientation_candidates": candidates,
        "orientation_limits": [round(max(ORIENTATION_MIN, v * ORIENTATION_MARGIN), 4) for v in orientation_limits],
        **({"contrast": contrast} if contrast else {}),
        "unstripped_share": round(float(np.mean([skull_kind(f) is not None for f in features])), 4),
        "outside_share_p99": round(float(np.percentile([f["outside_share"] for f in features], 99)), 4),
        "tumour_ml_quantiles": {str(q): round(float(np.percentile(volumes, q)), 4) for q in (1, 5, 25, 50, 75, 95, 99)}
        if volumes.size else {},
    }


def tumour_ml(entry: dict[str, Any], target_spacing: list[float] | None) -> float:
    """Labelled (non-zero) volume of a prepared case in ml, on its prepared grid."""
    spacing = target_spacing or entry["qc"]["spacing"]
    voxels = sum(int(v) for k, v in entry["label_counts"].items() if int(k) != 0)
    return voxels * math.prod(spacing) / 1000.0


def with_reference(plan: dict[str, Any], manifest: dict[str, Any], case_ids: list[str]) -> dict[str, Any]:
    """The plan with "qc_reference" built from `case_ids` (a fold's training cases), when they have features."""
    entries = [manifest["cases"][c] for c in case_ids if c in manifest.get("cases", {})]
    entries = [e for e in entries if e.get("qc")]
    if not entries:
        return plan
    volumes = [tumour_ml(e, plan.get("target_spacing")) for e in entries]
    patients = [str(e.get("patient") or e.get("case_id") or i) for i, e in enumerate(entries)]
    return {**plan, "qc_reference": build_reference([e["qc"] for e in entries], volumes, patients)}


def main(argv: list[str] | None = None) -> None:
    """Add a QC reference to a model folder trained before segpipe recorded one."""
    from pathlib import Path

    from segpipe.artifacts.model_folder import ModelFolder
    from segpipe.artifacts.prepared import load_prepared
    from segpipe.atomic import write_json
    from segpipe.errors import SegpipeError

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("prepared", type=Path, help="prepared-dataset folder the model was trained from (re-run preprocess first)")
    parser.add_argument("model", type=Path, help="model folder to update (its plan.json)")
    args = parser.parse_args(argv)
    prepared, model = load_prepared(args.prepared), ModelFolder.open(args.model)
    fold = model.config.train.fold
    plan = with_reference(model.plan, prepared.manifest, prepared.splits[fold]["train"])
    if "qc_reference" not in plan:
        raise SystemExit(str(SegpipeError(f"{args.prepared}: manifest.json has no QC features; re-run segpipe preprocess")))
    write_json(args.model / "plan.json", plan)
    print(f"{args.model / 'plan.json'}: QC reference from {plan['qc_reference']['cases']} training cases of fold {fold}")


if __name__ == "__main__":  # pragma: no cover
    main()

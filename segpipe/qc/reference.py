"""The training reference out-of-distribution checks compare with (plan.json's "qc_reference").

`segpipe preprocess` records each case's features (segpipe.qc.features) in manifest.json;
`segpipe fit` summarises those of the fold's training cases into the model folder's
plan.json, so held-out cases never shape the reference. A model folder trained before
this existed gets one with `python -m segpipe.qc.reference PREPARED MODEL`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

SPACING_SLACK = 1.25  # spacing may differ from the training range by this factor
BOX_SLACK = 1.3  # the non-zero box may be this much smaller or larger than in training
INTENSITY_MARGIN = 1.5  # intensity distance above this many times the training 99.5th percentile
MIN_SCALE = 0.05  # floor of a quantile's training spread (z units), for small training sets
MIN_LIMIT = 1.0  # floor of the intensity distance limit
ORIENTATION_MIN = 0.05  # a rotated or mirrored silhouette must beat the stored one by at least this
SKULL_COVERAGE = 0.75  # non-zero voxels outside the brain-like foreground in at least 3/4 of directions
SKULL_SHARE = 0.10  # ... and at least 10% of all non-zero voxels


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


def build_reference(features: list[dict[str, Any]], tumour_ml: list[float]) -> dict[str, Any]:
    """Summarise training cases' features into the reference the checks use."""
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
    # only re-orientations that the stored silhouette beats in nearly every training case
    # (not, say, a left-right mirror of a brain)
    sample = maps[:: max(1, len(maps) // 400)]
    names = [name for name, _ in alternatives(template)]
    wins = np.mean([[_corr(m, template) > _corr(alt, template) for _, alt in alternatives(m)] for m in sample], 0)
    candidates = [name for name, share in zip(names, wins) if share >= 0.9]
    margins = [orientation_margins(f, template, candidates) for f in features]
    volumes = np.asarray(tumour_ml, dtype=float)
    return {
        "cases": len(features),
        "channels": int(features[0]["channels"]),
        "spacing_min": spacing.min(0).tolist(), "spacing_max": spacing.max(0).tolist(),
        "box_mm_low": np.percentile(box, 0.5, axis=0).round(2).tolist(),
        "box_mm_high": np.percentile(box, 99.5, axis=0).round(2).tolist(),
        "intensity": intensity,
        "template": template.round(3).ravel().tolist(),
        "orientation_candidates": candidates,
        "orientation_limit": round(max(ORIENTATION_MIN, max(margins, default=0.0)), 4),
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
    return {**plan, "qc_reference": build_reference([e["qc"] for e in entries], volumes)}


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

"""Out-of-distribution checks: a case's features against the model's training reference.

Each check that fails gives a named flag and one line saying what differs:

- ``channels``: the image has another number of channels than the model was trained on;
- ``spacing``: the voxel size is outside the training range by more than 25% (only coarser
  counts where the model resamples to a target spacing: a finer image is resampled as the
  training cases were);
- ``shape``: the non-zero box (the brain's extent, in mm) is over 1.3x smaller or larger
  than the training range;
- ``intensity``: the z-scored intensity quantiles inside the brain-like foreground depart
  from the training cases' more than 1.5x the largest departure of 199 in 200 training
  cases (a different contrast, or a non-linear intensity change); or the contrast (do
  bright voxels lie in smooth tissue, as white matter in T1, or at tissue borders, as
  fluid and cortex in T2 and FLAIR: `segpipe.qc.features.bright_texture`) departs from
  the training cases' more than 1.25x the 99.5th percentile of the training departures,
  with the slices of one patient pooled;
- ``not_skull_stripped``: at least 10% of the non-zero voxels lie outside the brain-like
  foreground, around it in at least 3/4 of the directions (a scalp and skull); or the
  non-zero voxels fill at least 95% of their bounding box (the background was never
  masked to zero: a raw head image, with its scanner noise). Only when the model was
  trained on skull-stripped brains: where more than 1 in 10 of its training cases were
  whole heads (the figshare set, for one), a head is what it expects;
- ``orientation``: a mirrored or transposed image matches the training map (the brain's
  proportions and z-scored content) better than the image as stored, by more than 1.5x
  the most any training patient's did (at least 0.05), with the slices of one patient
  pooled.

After segmenting, one check of the prediction itself:

- ``tumour_volume``: the predicted tumour (all non-zero labels) is over twice the 99th
  percentile of the training cases' labelled volume (a mask spilling over the image: a
  slice predicted as tumour almost whole).

2D slices of one patient (a `segpipe infer` run's slices with the same patient id) are
checked together for ``intensity`` (contrast) and ``orientation``: one slice says little,
a patient's six say more. The limits depend on how many are pooled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.qc import reference as ref
from segpipe.qc.feature_version import VERSION

FLAGS = ("channels", "spacing", "shape", "intensity", "not_skull_stripped", "orientation", "tumour_volume")
VOLUME_MARGIN = 2.0  # a predicted tumour over this many times the training cases' 99th percentile is flagged


@dataclass
class Flag:
    """One departure from the training distribution."""

    name: str
    message: str


def _fmt(values: list[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def _limit(limits: list[float], n: int) -> float:
    return limits[min(n, len(limits)) - 1]


def check_case(features: dict[str, Any], plan: dict[str, Any], in_channels: int, model_dims: int,
               peers: list[dict[str, Any]] | tuple = ()) -> list[Flag]:
    """Compare one case's features (segpipe.qc.features) with the model's plan.

    `peers` are the features of the other slices of the same patient, pooled with this
    one for the contrast and orientation checks. Only the channel count is checked when
    the plan has no "qc_reference" (a model folder trained before segpipe recorded one);
    contrast and orientation only when the reference was built from features of this
    version (else rebuild it: `python -m segpipe.qc.reference`).
    """
    flags: list[Flag] = []
    if features["channels"] != in_channels:
        flags.append(Flag("channels", f"{features['channels']} channel(s), the model was trained on {in_channels}"))
    reference = plan.get("qc_reference")
    if not reference:
        return flags
    axes = len(reference["spacing_min"])
    spacing, box = features["spacing"][:axes], features["box_mm"][:axes]
    # a model that resamples to its target spacing sees a finer image as the training cases were seen
    low = [0.0 if plan.get("target_spacing") else v / ref.SPACING_SLACK for v in reference["spacing_min"]]
    high = [v * ref.SPACING_SLACK for v in reference["spacing_max"]]
    if any(s < lo or s > hi for s, lo, hi in zip(spacing, low, high)):
        flags.append(Flag("spacing", f"voxel size {_fmt(spacing)} mm, trained on {_fmt(reference['spacing_min'])} to "
                                     f"{_fmt(reference['spacing_max'])} mm"))
    low = [v / ref.BOX_SLACK for v in reference["box_mm_low"]]
    high = [v * ref.BOX_SLACK for v in reference["box_mm_high"]]
    if len(box) == axes and any(b < lo or b > hi for b, lo, hi in zip(box, low, high)):
        flags.append(Flag("shape", f"non-zero extent {_fmt([round(b) for b in box])} mm, trained on "
                                   f"{_fmt([round(v) for v in reference['box_mm_low']])} to "
                                   f"{_fmt([round(v) for v in reference['box_mm_high']])} mm"))
    current = reference.get("version") == VERSION and features.get("version") == VERSION
    group = [features, *(p for p in peers if p.get("version") == VERSION and p["channels"] == features["channels"])]
    if features["channels"] == in_channels:
        worst = []
        for c, (profile, stats) in enumerate(zip(features["intensity"], reference["intensity"])):
            distance = ref.intensity_distance(profile, stats["median"], stats["scale"])
            if distance > stats["limit"]:
                worst.append(f"channel {c} distance {distance:.1f} (training limit {stats['limit']:.1f})")
        for c, stats in enumerate(reference.get("contrast", []) if current and features["channels"] == reference["channels"] else []):
            values = [f["contrast"][c] for f in group if f["contrast"][c] is not None]
            if not values:
                continue
            distance, limit = ref.contrast_distance(values, stats["median"], stats["scale"]), _limit(stats["limits"], len(values))
            if distance > limit:
                pooled = f", {len(values)} slices of the patient pooled" if len(values) > 1 else ""
                worst.append(f"channel {c} contrast {sum(values) / len(values):+.2f}, training {stats['median']:+.2f} "
                             f"(distance {distance:.1f}, limit {limit:.1f}{pooled}): another MR sequence?")
        if worst:
            flags.append(Flag("intensity", "intensity distribution inside the brain differs from training: " + "; ".join(worst)))
    kind = ref.skull_kind(features) if reference.get("unstripped_share", 0.0) <= ref.UNSTRIPPED_TRAINED else None
    if kind == "shell":
        flags.append(Flag("not_skull_stripped", f"{features['outside_share']:.0%} of non-zero voxels lie outside a "
                                                f"brain-like foreground, around it in {features['outside_coverage']:.0%} "
                                                "of directions (skull and scalp?)"))
    elif kind == "unmasked":
        flags.append(Flag("not_skull_stripped", f"non-zero voxels fill {features['nonzero_fill']:.0%} of their bounding "
                                                "box: the background is not zero, no brain mask was applied (skull, "
                                                "scalp and noise kept?)"))
    template = np.asarray(reference["template"], dtype=np.float32)
    dims = len(reference["spacing_min"])
    template = template.reshape((round(template.size ** (1 / dims)),) * dims)
    if current and len(features["box_mm"]) == dims and reference["orientation_candidates"]:
        margin = float(np.mean([ref.orientation_margins(f, template, reference["orientation_candidates"]) for f in group]))
        limit = _limit(reference["orientation_limits"], len(group))
        if margin > limit:
            pooled = f", {len(group)} slices of the patient pooled" if len(group) > 1 else ""
            flags.append(Flag("orientation", f"a mirrored or transposed image matches the training anatomy better "
                                             f"(by {margin:.2f}; limit {limit:.2f}{pooled}): "
                                             "flipped axes or a wrong header?"))
    return flags


def check_prediction(tumour_ml: float, plan: dict[str, Any]) -> list[Flag]:
    """The ``tumour_volume`` flag of a predicted tumour far larger than any training case's."""
    quantiles = (plan.get("qc_reference") or {}).get("tumour_ml_quantiles") or {}
    largest = quantiles.get("99")
    if not isinstance(largest, (int, float)) or largest <= 0 or tumour_ml <= VOLUME_MARGIN * largest:
        return []
    return [Flag("tumour_volume", f"predicted tumour {tumour_ml:.4g} ml, over {VOLUME_MARGIN:g}x the training cases' "
                                  f"{largest:.4g} ml (99th percentile): a mask spilling over the image?")]

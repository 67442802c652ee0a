"""Out-of-distribution checks: a case's features against the model's training reference.

Each check that fails gives a named flag and one line saying what differs:

- ``channels``: the image has another number of channels than the model was trained on;
- ``spacing``: the voxel size is outside the training range by more than 25%;
- ``shape``: the non-zero box (the brain's extent, in mm) is over 1.3x smaller or larger
  than the training range;
- ``intensity``: the z-scored intensity quantiles inside the brain-like foreground depart
  from the training cases' more than 1.5x the largest departure of 199 in 200 training
  cases (a different contrast, or a non-linear intensity change);
- ``not_skull_stripped``: at least 10% of the non-zero voxels lie outside the brain-like
  foreground, around it in at least 3/4 of the directions (a scalp and skull);
- ``orientation``: a mirrored or transposed image matches the training silhouette better
  than the image as stored, by more than any training case did (at least 0.05).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.qc import reference as ref

FLAGS = ("channels", "spacing", "shape", "intensity", "not_skull_stripped", "orientation")


@dataclass
class Flag:
    """One departure from the training distribution."""

    name: str
    message: str


def _fmt(values: list[float]) -> str:
    return "x".join(f"{v:g}" for v in values)


def check_case(features: dict[str, Any], plan: dict[str, Any], in_channels: int, model_dims: int) -> list[Flag]:
    """Compare one case's features (segpipe.qc.features) with the model's plan.

    Only the channel count is checked when the plan has no "qc_reference" (a model folder
    trained before segpipe recorded one).
    """
    flags: list[Flag] = []
    if features["channels"] != in_channels:
        flags.append(Flag("channels", f"{features['channels']} channel(s), the model was trained on {in_channels}"))
    reference = plan.get("qc_reference")
    if not reference:
        return flags
    axes = len(reference["spacing_min"])
    spacing, box = features["spacing"][:axes], features["box_mm"][:axes]
    low = [v / ref.SPACING_SLACK for v in reference["spacing_min"]]
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
    if features["channels"] == in_channels:
        worst = []
        for c, (profile, stats) in enumerate(zip(features["intensity"], reference["intensity"])):
            distance = ref.intensity_distance(profile, stats["median"], stats["scale"])
            if distance > stats["limit"]:
                worst.append(f"channel {c} distance {distance:.1f} (training limit {stats['limit']:.1f})")
        if worst:
            flags.append(Flag("intensity", "intensity distribution inside the brain differs from training: " + "; ".join(worst)))
    share, coverage = features["outside_share"], features["outside_coverage"]
    if share >= ref.SKULL_SHARE and coverage >= ref.SKULL_COVERAGE:
        flags.append(Flag("not_skull_stripped", f"{share:.0%} of non-zero voxels lie outside a brain-like foreground, "
                                                f"around it in {coverage:.0%} of directions (skull and scalp?)"))
    template = np.asarray(reference["template"], dtype=np.float32)
    dims = len(reference["spacing_min"])
    template = template.reshape((round(template.size ** (1 / dims)),) * dims)
    if len(features["box_mm"]) == dims and reference["orientation_candidates"]:
        margin = ref.orientation_margins(features, template, reference["orientation_candidates"])
        if margin > reference["orientation_limit"]:
            flags.append(Flag("orientation", f"a mirrored or transposed image matches the training anatomy better "
                                             f"(by {margin:.2f}; training at most {reference['orientation_limit']:.2f}): "
                                             "flipped axes or a wrong header?"))
    return flags

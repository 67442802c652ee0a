"""How a plan chooses its intensity normalisation: z-score over the non-zero voxels, or the whole image.

nnU-Net's rule: use the non-zero mask only where cropping a case to its non-zero voxels
removes at least a quarter of the image (median over cases). A skull-stripped brain sits in
a zero background that is not part of the image; a whole-head slice keeps its air, which a
non-zero z-score would leave at 0, the tissue's mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

CROP_SHARE_LIMIT = 0.75  # below it (median share of a case kept by the non-zero crop): non-zero z-score
SAMPLE_CASES = 20  # cases read to measure the share; evenly spread over the dataset


def crop_share(image: Any) -> float:
    """Share of the voxels kept by cropping (C, *spatial) `image` to the box of voxels non-zero in any channel.

    The box is MONAI's `generate_spatial_bounding_box`, the one `CropForegroundd` crops to.
    """
    from monai.transforms.utils import generate_spatial_bounding_box

    image = np.asarray(image)
    start, end = generate_spatial_bounding_box(image, select_fn=lambda x: x != 0)
    return float(np.prod(np.subtract(end, start), dtype=np.float64) / np.prod(image.shape[1:], dtype=np.float64))


def choose(shares: Sequence[float]) -> dict[str, Any]:
    """The non-zero z-score where the median crop keeps less than CROP_SHARE_LIMIT of a case."""
    if not shares:  # nothing could be read: the case pass reports why; keep the default
        return {"nonzero": True, "crop_share_median": None, "cases": 0}
    median = float(np.median(shares))
    return {"nonzero": median < CROP_SHARE_LIMIT, "crop_share_median": round(median, 4), "cases": len(shares)}


def evenly_spread(items: Sequence[Any], count: int = SAMPLE_CASES) -> list[Any]:
    """Up to `count` items at even steps through `items`, first and last included."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)]


def resolve(requested: bool | str, cases: Sequence[Any], digests: dict[str, str], previous: Any = None, *,
            measure: Callable[[list[Any]], Iterable[float | None]]) -> dict[str, Any]:
    """The normalisation a preprocess run uses, as recorded in its manifest and plan.

    `requested` is the config's `preprocess.normalize_nonzero`: True or False is taken as
    given; "auto" takes the crop shares `measure` gives for a sample of `cases` (None for a
    case it could not read), or reuses `previous`, the last run's record, when the sampled
    cases' `digests` are unchanged.
    """
    if not isinstance(requested, str):
        return {"rule": "config", "nonzero": bool(requested)}
    sample = evenly_spread(sorted(cases, key=lambda c: c.case_id))
    key = {case.case_id: digests[case.case_id] for case in sample}
    if _reusable(previous, key):
        return previous
    shares = [share for share in measure(sample) if share is not None]
    return {"rule": "auto", **choose(shares), "sample": key}


def _reusable(previous: Any, key: dict[str, str]) -> bool:
    """A last run's record (read back from its manifest) that measured these very cases."""
    return (isinstance(previous, dict) and previous.get("rule") == "auto" and previous.get("sample") == key
            and isinstance(previous.get("nonzero"), bool) and isinstance(previous.get("cases"), int)
            and isinstance(previous.get("crop_share_median"), (int, float, type(None))))


def describe(record: dict[str, Any]) -> str:
    """One line for the preprocess summary."""
    where = "the non-zero voxels" if record["nonzero"] else "the whole image"
    if record.get("rule") != "auto":
        return f"z-score over {where} (config)"
    if record.get("crop_share_median") is None:
        return f"z-score over {where} (no case could be measured)"
    return (f"z-score over {where} (cropping to the non-zero voxels keeps {record['crop_share_median']:.0%} "
            f"of a case, median of {record['cases']}; the mask is used below {CROP_SHARE_LIMIT:.0%})")

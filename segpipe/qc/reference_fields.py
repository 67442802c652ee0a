"""The fields of a plan's qc_reference that the out-of-distribution checks read, checked when
the plan is loaded: a tampered or damaged reference is named in one line instead of failing
inside `segpipe.qc.ood.check_case` at the first case."""

from __future__ import annotations

import math
from typing import Any

from segpipe.errors import SegpipeError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _are_numbers(value: Any, count: int | None = None) -> bool:
    return (isinstance(value, list) and all(_is_number(v) for v in value)
            and (count is None or len(value) == count))


def check_reference(reference: Any, source: object) -> None:
    """A plan's qc_reference holds what `segpipe.qc.ood.check_case` reads, of the types it reads
    them as; else one line naming the first field that does not."""
    def refuse(field: str, what: str) -> None:
        raise SegpipeError(f"{source}: qc_reference '{field}' {what} (rebuild it: python -m segpipe.qc.reference)")

    if not isinstance(reference, dict):
        raise SegpipeError(f"{source}: qc_reference is not a mapping (rebuild it: python -m segpipe.qc.reference)")
    spacing = reference.get("spacing_min")
    dims = len(spacing) if isinstance(spacing, list) else 0
    if dims not in (2, 3):
        refuse("spacing_min", "must hold 2 or 3 numbers")
    for field in ("spacing_min", "spacing_max", "box_mm_low", "box_mm_high"):
        if not _are_numbers(reference.get(field), dims):
            refuse(field, f"must hold {dims} finite numbers")
    if not isinstance(reference.get("channels"), int) or isinstance(reference.get("channels"), bool):
        refuse("channels", "must be a whole number")
    intensity = reference.get("intensity")
    if not isinstance(intensity, list) or not all(
            isinstance(c, dict) and _are_numbers(c.get("median")) and _are_numbers(c.get("scale"))
            and _is_number(c.get("limit")) for c in intensity):
        refuse("intensity", "must list per channel 'median' and 'scale' numbers and a 'limit'")
    contrast = reference.get("contrast", [])
    if not isinstance(contrast, list) or not all(
            isinstance(c, dict) and _is_number(c.get("median")) and _is_number(c.get("scale"))
            and _are_numbers(c.get("limits")) and c["limits"] for c in contrast):
        refuse("contrast", "must list per channel a 'median', a 'scale' and 'limits'")
    template = reference.get("template")
    side = round(len(template) ** (1 / dims)) if _are_numbers(template) else -1
    if side < 1 or side**dims != len(template):
        refuse("template", f"must hold n^{dims} numbers")
    candidates = reference.get("orientation_candidates")
    if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
        refuse("orientation_candidates", "must be a list of names")
    if not _are_numbers(reference.get("orientation_limits")) or not reference["orientation_limits"]:
        refuse("orientation_limits", "must hold one number or more")
    if "unstripped_share" in reference and not _is_number(reference["unstripped_share"]):
        refuse("unstripped_share", "must be a number")

"""The checks of a case's values and geometry that `--verify-only` and `preprocess` share.

`segpipe.data.verify` reports what they find as ERROR lines; the preprocessing chain
(`segpipe.transforms.checks.CheckCased`) refuses the case with the same words, so a case
verify calls an error is never cached.
"""

from __future__ import annotations

import numpy as np

from segpipe.limits import MAX_LABEL_VALUE


def label_values(label: np.ndarray) -> tuple[set[float], bool]:
    """Distinct values of a label map (fast for small non-negative integers), and whether
    all are integral. NaN and infinities are left out (see `label_problem`)."""
    flat = np.asarray(label).ravel()
    if flat.size == 0:
        return set(), True
    if flat.dtype.kind == "f":
        finite = flat[np.isfinite(flat)] if not np.isfinite(flat).all() else flat
        if finite.size and np.array_equal(finite, np.round(finite)) and finite.min() >= 0 and finite.max() < 65536:
            flat = finite.astype(np.int64)
        else:
            values = np.unique(finite)
            return {float(v) for v in values}, all(float(v).is_integer() for v in values)
    if flat.dtype.kind in "biu" and flat.min() >= 0 and flat.max() < 65536:
        return {float(v) for v in np.nonzero(np.bincount(flat.astype(np.int64)))[0]}, True
    values = np.unique(flat)
    return {float(v) for v in values}, all(float(v).is_integer() for v in values)


def shown_values(values: list[float]) -> str:
    """Up to five values for a message, whole numbers in full."""
    # 4294967297 in full, 1.00000001 not as 1
    shown = [str(int(v)) if float(v).is_integer() else f"{float(v):.10g}" for v in values[:5]]
    return ", ".join(shown) + (", ..." if len(values) > 5 else "")


def label_problem(label: np.ndarray, declared: dict[int, str] | None,
                  mapping: dict[int, int] | None = None, noun: str = "label") -> str | None:
    """What makes a label map (as stored, before `mapping`) unusable, or None; `noun` begins
    the answer ("label", "mask").

    Checked in order: NaN/Inf, non-integer values, negative or too large values, stored
    values the mapping does not list, values (after mapping) that are not declared.
    """
    arr = np.asarray(label)
    if arr.dtype.kind == "c":
        return f"{noun} is complex-valued"
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        return f"{noun} has NaN or Inf voxels"
    values, integral = label_values(arr)
    if not integral:
        odd = sorted(v for v in values if not float(v).is_integer())
        return f"{noun} has non-integer values {shown_values(odd)}"
    out_of_range = sorted(v for v in values if not 0 <= v <= MAX_LABEL_VALUE)
    if out_of_range and mapping is None:
        return f"{noun} values {shown_values(out_of_range)} are outside 0..{MAX_LABEL_VALUE}"
    if mapping:
        unmapped = sorted(int(v) for v in values if v != 0 and int(v) not in mapping)
        if unmapped:
            return (f"{noun} values {', '.join(map(str, unmapped[:5]))} not in the label mapping {mapping} "
                    f"(stored values must be 0 or one of {sorted(mapping)})")
        values = {float(mapping.get(int(v), int(v))) for v in values}
    if declared is not None:
        undeclared = sorted(int(v) for v in values if int(v) not in declared)
        if undeclared:
            return (f"{noun} values {', '.join(map(str, undeclared[:5]))} not declared "
                    f"(declared: {', '.join(str(k) for k in sorted(declared))})")
    return None


def image_problem(image: np.ndarray) -> str | None:
    """What makes an image (channel-first) unusable before cropping, or None: a point- or
    line-sized grid, or no non-zero voxel at all (nothing to crop to or segment)."""
    arr = np.asarray(image)
    spatial = arr.shape[1:]
    if arr.size == 0 or sum(side >= 2 for side in spatial) < 2:  # a point or a line, in 2D and 3D
        return f"image of {' x '.join(map(str, spatial))} voxels is too small to segment"
    if not arr.any():
        return "image is all zeros (nothing to segment)"
    return None


def dims_problem(spatial: tuple[int, ...] | list[int], spatial_dims: int) -> str | None:
    """A grid of another number of spatial axes than the layout reads, or None."""
    if len(spatial) == spatial_dims:
        return None
    shown = " x ".join(map(str, spatial))
    hint = f" (store a slice as {shown} x 1)" if len(spatial) == 2 and spatial_dims == 3 else ""
    return f"image has {len(spatial)} spatial axes ({shown}); this layout reads {spatial_dims}D images{hint}"


def affine_problem(affine: np.ndarray) -> str | None:
    """A voxel-to-world matrix that cannot be used: not finite, or singular (no orientation)."""
    a = np.asarray(affine, dtype=float)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[0] != a.shape[1]:
        return f"affine has the shape {a.shape}, expected a square matrix"
    if not np.isfinite(a).all():
        return "affine holds NaN or infinite values"
    spatial = a[:-1, :-1]
    scale = np.linalg.norm(spatial, axis=0)
    if (scale <= 0).any() or abs(np.linalg.det(spatial / scale)) < 1e-6:
        return "affine is singular (a zero spacing or parallel axes); the image has no usable orientation"
    return None


GRID_RTOL = 1e-3  # spacing and direction this close (relative to the largest voxel side) are one grid
ORIGIN_VOXELS = 0.05  # origins this close (in voxels of the smallest side) are one grid


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """One grid: the axes agree relative to the voxel size, the origins within a twentieth of a
    voxel (a tolerance relative to the origin itself would let a 1.5 mm shift pass at 1500 mm)."""
    if a.shape != b.shape or a.ndim != 2:
        return False
    la, lb = a[:-1, :-1], b[:-1, :-1]
    scale = max(float(np.abs(la).max()), float(np.abs(lb).max()))
    if not np.allclose(la, lb, rtol=0, atol=GRID_RTOL * scale):
        return False
    voxel = float(min(np.linalg.norm(la, axis=0).min(), np.linalg.norm(lb, axis=0).min()))
    return bool(np.allclose(a[:-1, -1], b[:-1, -1], rtol=0, atol=ORIGIN_VOXELS * voxel))


def grid_problem(a: np.ndarray, b: np.ndarray) -> str | None:
    """How voxel-to-world matrix `a` differs from `b` (spacing, else origin or direction), or None."""
    if _close(a, b):
        return None
    sa = np.linalg.norm(a[:-1, :-1], axis=0)
    sb = np.linalg.norm(b[:-1, :-1], axis=0)
    if sa.shape != sb.shape or not np.allclose(sa, sb, rtol=GRID_RTOL, atol=0):
        return f"spacing {_fmt(sa)} differs from {_fmt(sb)}"
    return f"affine differs (origin {_fmt(a[:-1, -1])} vs {_fmt(b[:-1, -1])}, or direction)"


def _fmt(v: np.ndarray) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in np.ravel(v)) + ")"


__all__ = ["label_values", "label_problem", "image_problem", "dims_problem", "affine_problem", "grid_problem"]

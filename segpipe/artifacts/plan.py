"""plan.json: the dataset fingerprint becomes a plan (`build_plan`), read back as a typed `Plan`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from segpipe.errors import SegpipeError
from segpipe.limits import check_label_value

PATCH_MULTIPLE = 16


def header_geometry(path: Path) -> tuple[list[int], list[float]]:
    """Spatial shape and spacing of a NIfTI file, in RAS axis order (as after Orientationd)."""
    from segpipe.data.guard import check_read
    from segpipe.data.validate import affine_problem, dims_problem

    check_read(path)
    try:
        img = nib.load(str(path))
        problem = dims_problem(img.shape[:3], 3) or affine_problem(img.affine)
        if problem:
            raise SegpipeError(f"{path}: {problem}")
        shape = img.shape[:3]
        zooms = img.header.get_zooms()[:3]
        ornt = nib.io_orientation(img.affine)
    except SegpipeError:
        raise
    except Exception as exc:  # nibabel raises many types for broken headers
        raise SegpipeError(f"{path}: cannot read image header ({exc})") from None
    ras_shape = [0, 0, 0]
    ras_spacing = [0.0, 0.0, 0.0]
    for axis in range(3):
        out = int(ornt[axis, 0])
        ras_shape[out] = int(shape[axis])
        ras_spacing[out] = float(zooms[axis])
    return ras_shape, ras_spacing


def case_geometry(dataset: Any, case: Any) -> tuple[list[int], list[float]]:
    """Spatial shape and spacing of a case's image in RAS axis order (3D), or as stored (2D).

    NIfTI headers are read without the voxels; other formats are loaded through the
    layout's MONAI reader.
    """
    first = case.images[0]
    if dataset.spatial_dims == 3 and len(case.images) >= 1 and str(first).lower().endswith((".nii", ".nii.gz")):
        return header_geometry(first)
    from segpipe.data.loading import load_case

    from segpipe.data.validate import affine_problem, dims_problem

    image = load_case(dataset, case, with_label=False)["image"]
    shape = [int(v) for v in image.shape[1:]]
    affine = np.asarray(image.affine, dtype=float)
    problem = dims_problem(shape, dataset.spatial_dims) or affine_problem(affine)
    if problem:
        raise SegpipeError(f"{first}: {problem}")
    spacing = np.sqrt((affine[:-1, :-1] ** 2).sum(0)).tolist()
    if dataset.spatial_dims == 2:
        return shape, [float(v) for v in spacing[: len(shape)]]
    ornt = nib.io_orientation(affine)
    ras_shape, ras_spacing = [0] * 3, [0.0] * 3
    for axis in range(3):
        ras_shape[int(ornt[axis, 0])] = shape[axis]
        ras_spacing[int(ornt[axis, 0])] = float(spacing[axis])
    return ras_shape, ras_spacing


def median_spacing(spacings: Sequence[Sequence[float]]) -> list[float]:
    """Per-axis median spacing, the default target spacing."""
    return [round(float(v), 4) for v in np.median(np.asarray(spacings, dtype=float), axis=0)]


def choose_patch_size(median_shape: Sequence[int], budget_voxels: int, multiple: int = PATCH_MULTIPLE) -> list[int]:
    """Largest patch not bigger than the median case, within the voxel budget.

    The longest axis is shrunk first; every side is a multiple of `multiple` (so the
    network's downsamplings divide it) and at least `multiple`.
    """
    patch = [max(multiple, int(math.ceil(s / multiple)) * multiple) for s in median_shape]
    while math.prod(patch) > budget_voxels and max(patch) > multiple:
        longest = int(np.argmax(patch))
        patch[longest] -= multiple
    return patch


def aggregate_intensity(stats: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Combine per-case, per-channel statistics into dataset-level ones (voxel-weighted)."""
    if not stats:
        return []
    out = []
    for channel in range(len(stats[0])):
        rows = [case[channel] for case in stats]
        weights = np.array([max(r["voxels"], 1) for r in rows], dtype=float)
        means = np.array([r["mean"] for r in rows])
        stds = np.array([r["std"] for r in rows])
        mean = float(np.average(means, weights=weights))
        var = float(np.average(stds**2 + (means - mean) ** 2, weights=weights))
        out.append(
            {
                "mean": mean,
                "std": math.sqrt(var),
                "p00_5": float(np.median([r["p00_5"] for r in rows])),
                "p99_5": float(np.median([r["p99_5"] for r in rows])),
            }
        )
    return out


def class_frequencies(counts: list[dict[str, int]], labels: dict[int, str]) -> dict[str, float]:
    """Fraction of voxels of each declared label over all cached cases."""
    totals = {int(k): 0 for k in labels}
    for case in counts:
        for k, v in case.items():
            totals[int(k)] = totals.get(int(k), 0) + int(v)
    grand = sum(totals.values()) or 1
    return {str(k): v / grand for k, v in sorted(totals.items())}


def build_plan(
    *,
    dataset_name: str,
    layout: str,
    spatial_dims: int,
    modalities: list[str],
    labels: dict[int, str],
    spacings: list[list[float]],
    shapes: list[list[int]],
    target_spacing: list[float] | None,
    prepared_shapes: list[list[int]],
    intensity: list[list[dict[str, float]]],
    label_counts: list[dict[str, int]],
    patch_size: list[int] | None,
    patch_budget_voxels: int,
    preprocess_settings: dict[str, Any],
    normalization: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble plan.json's content.

    `normalization` is how the z-score's mask was chosen (`segpipe.artifacts.normalization`).
    """
    median_prepared = [int(v) for v in np.median(np.asarray(prepared_shapes), axis=0)] if prepared_shapes else []
    return {
        "dataset": dataset_name,
        "layout": layout,
        "spatial_dims": spatial_dims,
        "modalities": modalities,
        "in_channels": len(modalities),
        "labels": {str(k): v for k, v in labels.items()},
        "out_channels": max(labels) + 1,
        "fingerprint": {
            "cases": len(shapes),
            "spacing_median": median_spacing(spacings) if spacings else None,
            "spacing_min": np.min(spacings, axis=0).tolist() if spacings else None,
            "spacing_max": np.max(spacings, axis=0).tolist() if spacings else None,
            "shape_median": [int(v) for v in np.median(shapes, axis=0)] if shapes else None,
            "intensity": aggregate_intensity(intensity),
            "class_frequency": class_frequencies(label_counts, labels),
        },
        "target_spacing": target_spacing,
        "prepared_shape_median": median_prepared,
        "patch_size": patch_size or choose_patch_size(median_prepared, patch_budget_voxels),
        "normalization": "zscore_nonzero_channelwise" if preprocess_settings.get("normalize_nonzero") else "zscore_channelwise",
        "normalization_choice": {k: v for k, v in (normalization or {}).items() if k != "sample"},
        "preprocess": preprocess_settings,
    }


MSD_REGIONS = {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}
BRATS_REGIONS = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4], "enhancing_tumour": [4]}


def default_regions(label_ids: list[int]) -> dict[str, list[int]]:
    """BraTS evaluation regions for the MSD (1/2/3) or BraTS (1/2/4) label sets, else none."""
    if set(label_ids) == {1, 2, 3}:
        return MSD_REGIONS
    if set(label_ids) == {1, 2, 4}:
        return BRATS_REGIONS
    return {}


def check_regions(regions: dict[str, list[int]] | None, labels: set[int]) -> None:
    """Given regions (evaluate.regions) are scored on labels the masks can hold: an empty region,
    or one of a label outside the label set, would be a column of empty or wrong Dice."""
    for name, members in (regions or {}).items():
        if not members:
            raise SegpipeError(f"config key 'evaluate.regions': region '{name}' lists no label")
        foreign = sorted(set(members) - labels)
        if foreign:
            raise SegpipeError(f"config key 'evaluate.regions': region '{name}' holds label(s) {foreign} that are not "
                               f"in the label set ({', '.join(map(str, sorted(labels)))})")


def _check_preprocess(data: dict[str, Any], source: str | Path) -> None:
    """plan.json's recorded preprocessing, checked by the config's own rules (an orientation
    of three axis codes, finite positive spacings of the plan's rank, ...)."""
    import dataclasses

    from segpipe.config import PreprocessConfig, config_from_dict

    recorded = data["preprocess"]
    if not isinstance(recorded, dict):
        raise SegpipeError(f"{source}: 'preprocess' must be a mapping")
    keys = {f.name for f in dataclasses.fields(PreprocessConfig)}
    section = {k: v for k, v in recorded.items() if k in keys and v is not None}  # None: not used (2D orientation)
    dims = recorded.get("spatial_dims", data.get("spatial_dims", 3))
    config_from_dict({"model": {"spatial_dims": dims}, "preprocess": section}, f"{source} (preprocess)")


class Plan(dict):
    """plan.json as read: the JSON object itself (written back unchanged), with typed accessors.

    Label keys are strings on disk and integers in code; the conversion happens here and
    nowhere else.
    """

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> Plan:
        """Check that `data` (plan.json's content, read from `source`) has a mapping of integer labels."""
        if not isinstance(data, dict) or not isinstance(data.get("labels"), dict):
            raise SegpipeError(f"{source}: not a segpipe plan (no 'labels' mapping)")
        for value in data["labels"]:
            try:
                check_label_value(int(value), source)
            except (TypeError, ValueError):
                raise SegpipeError(f"{source}: label value {value!r} is not an integer") from None
        if "preprocess" in data:
            _check_preprocess(data, source)
        if data.get("qc_reference"):
            from segpipe.qc.reference_fields import check_reference

            check_reference(data["qc_reference"], source)
        return cls(data)

    @property
    def label_names(self) -> dict[int, str]:
        """Label value -> name, background included."""
        return {int(k): str(v) for k, v in self["labels"].items()}

    @property
    def stored_labels(self) -> dict[str, str]:
        """The label mapping with string keys, as plan.json and checkpoints store it."""
        return {str(k): v for k, v in self["labels"].items()}

    @property
    def label_ids(self) -> list[int]:
        """Foreground label values, in plan.json's order."""
        return [k for k in self.label_names if k != 0]

    def regions(self, configured: dict[str, list[int]] | None) -> dict[str, list[int]]:
        """The evaluation regions: `configured` (evaluate.regions) or the defaults of this label set."""
        return configured if configured is not None else default_regions(self.label_ids)

    @property
    def spatial_dims(self) -> int:
        return int(self.get("spatial_dims", 3))

    @property
    def patch_size(self) -> list[int]:
        return [int(v) for v in self["patch_size"]]

    @property
    def in_channels(self) -> int:
        return int(self["in_channels"])

    @property
    def out_channels(self) -> int:
        return int(self["out_channels"])

    @property
    def preprocess(self) -> dict[str, Any]:
        return self["preprocess"]


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The first key (in order) whose value differs between two mappings, as `key: a against b`."""
    key = next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)
    return "none" if key is None else f"{key}: {a.get(key)!r} against {b.get(key)!r}"

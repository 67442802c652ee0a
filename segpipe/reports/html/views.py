"""Per-patient slice stacks for the report's viewer: image, reference and prediction as PNGs.

A patient of 2D slices shows its slices; a patient with a volume shows axial slices of
its volume with most reference tumour: those holding tumour (reference or prediction),
thinned evenly to `max_slices`, and two slices of context on either side.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CONTEXT = 2  # slices shown beyond the tumour on either side


@dataclass
class SliceView:
    """One displayed slice: its name and three PNGs as data: URIs (label maps hold the label values)."""

    name: str
    image: str
    ref: str
    pred: str


@dataclass
class PatientView:
    """A patient's slices, in display orientation (row 0 at the top)."""

    patient: str
    case: str
    slices: list[SliceView] = field(default_factory=list)


def png_data_uri(array: np.ndarray) -> str:
    """An 8-bit greyscale PNG as a data: URI (data URIs keep canvases readable from file://)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)), mode="L").save(buffer, format="PNG", compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def pick_slices(ref: np.ndarray, pred: np.ndarray, max_slices: int) -> list[int]:
    """Axial indices (last axis) to show: tumour slices thinned to fit, plus context."""
    depth = ref.shape[-1]
    tumour = np.nonzero((ref > 0).any(axis=(0, 1)) | (pred > 0).any(axis=(0, 1)))[0]
    budget = max(max_slices - 2 * CONTEXT, 1)
    if tumour.size == 0:
        return sorted({int(round(v)) for v in np.linspace(depth * 0.25, depth * 0.75 - 1, min(max_slices, depth))})
    chosen = tumour[np.unique(np.round(np.linspace(0, tumour.size - 1, min(budget, tumour.size))).astype(int))]
    step = max(1, int(np.median(np.diff(chosen))) if chosen.size > 1 else 1)
    before = [int(chosen[0]) - step * i for i in range(CONTEXT, 0, -1)]
    after = [int(chosen[-1]) + step * i for i in range(1, CONTEXT + 1)]
    return [z for z in before + chosen.tolist() + after if 0 <= z < depth]


def _window(image: np.ndarray | None, shape: Sequence[int]) -> np.ndarray:
    """Image scaled to 0-255 between its 1st and 99th percentiles (black when absent)."""
    if image is None:
        return np.zeros(shape, np.uint8)
    values = image[np.isfinite(image)]
    lo, hi = np.percentile(values, [1, 99]) if values.size and values.any() else (0.0, 1.0)
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _labels8(mask: np.ndarray) -> np.ndarray:
    return np.clip(mask, 0, 255).astype(np.uint8)


def display_volume(path: Path | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The first channel of the image a volume mask was drawn on, or None where it cannot be read."""
    if path is None:
        return None
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            img = nib.load(str(path))
            if tuple(img.shape[:3]) != tuple(shape):
                return None
            return np.asarray(img.dataobj[..., 0] if img.ndim == 4 else img.dataobj, dtype=np.float32)
    except Exception:  # a viewer without its image still shows the masks
        return None
    return None


def orient(array: np.ndarray) -> np.ndarray:
    """A volume slice in display orientation: x to the right, y (anterior) up."""
    return np.ascontiguousarray(array.T[::-1])


def volume_view(patient: str, case: str, image_path: Path | None, ref: np.ndarray, pred: np.ndarray, max_slices: int) -> PatientView:
    """Slices of one volume, x to the right and y (anterior) up, as the overlays draw them."""
    view = PatientView(patient, case)
    volume = display_volume(image_path, ref.shape)
    picks = pick_slices(ref, pred, max_slices)
    window = _window(volume[:, :, picks] if volume is not None else None, (*ref.shape[:2], len(picks)))
    for i, z in enumerate(picks):
        view.slices.append(SliceView(f"z={z}", png_data_uri(orient(window[:, :, i])),
                                     png_data_uri(orient(_labels8(ref[:, :, z]))), png_data_uri(orient(_labels8(pred[:, :, z])))))
    return view


def slices_view(patient: str, cases: list[tuple[str, np.ndarray | None, np.ndarray, np.ndarray]], max_slices: int) -> PatientView:
    """A patient of 2D slices: (case id, image, reference, prediction) per slice, drawn as stored."""
    view = PatientView(patient, f"{len(cases)} slices")
    if len(cases) > max_slices:  # keep the slices with most tumour, in their order
        keep = sorted(sorted(range(len(cases)), key=lambda i: -int(np.count_nonzero(cases[i][2] | cases[i][3])))[:max_slices])
        cases = [cases[i] for i in keep]
    for cid, image, ref, pred in cases:
        shown = image if image is not None and image.shape == ref.shape else None
        view.slices.append(SliceView(cid, png_data_uri(_window(shown, ref.shape)), png_data_uri(_labels8(ref)), png_data_uri(_labels8(pred))))
    return view


def _natural(name: str) -> list:
    """Sort key that orders BRATS_003_z62 before BRATS_003_z108."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def patient_views(per_case, loaded: Mapping, images: dict[str, Path | None], max_slices: int) -> list[PatientView]:
    """One view per patient from evaluate's loaded masks.

    Args:
        per_case: evaluate's per-case table (`case`, `patient`).
        loaded: case id -> (prediction, reference, spacing).
        images: case id -> the image the reference was drawn on, if known.
        max_slices: the most slices shown per patient.
    """
    from segpipe.reports.masks import load_display_slice

    views = []
    for patient, group in per_case.groupby("patient", sort=False):
        cases = list(group["case"])
        if loaded[cases[0]][1].ndim == 3:
            cid = max(cases, key=lambda c: int(np.count_nonzero(loaded[c][1])))
            pred, ref, _ = loaded[cid]
            views.append(volume_view(str(patient), cid, images.get(cid), ref, pred, max_slices))
        else:
            stack = []
            for cid in sorted(cases, key=_natural):
                pred, ref, _ = loaded[cid]
                image = load_display_slice(images[cid], ref.shape, None) if images.get(cid) else None
                stack.append((cid, image, ref, pred))
            views.append(slices_view(str(patient), stack, max_slices))
    return views


__all__ = ["PatientView", "SliceView", "patient_views", "pick_slices", "png_data_uri"]

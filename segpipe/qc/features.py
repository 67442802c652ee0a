"""Per-case image features that out-of-distribution checks compare with the training set.

They are computed on the raw image after reorientation and cropping to the non-zero box
(before normalisation), the same way at preprocess time (for the training reference)
and at inference (for the case being segmented).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy import ndimage

from segpipe.qc.feature_version import VERSION

QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
MAP_GRID = 16  # side of the coarse brain map used for the orientation check
MAP_BACKGROUND = -3.0  # value of the map outside the brain (z units): the silhouette weighs as much as the content
TEXTURE_WINDOW = 5  # voxels: the neighbourhood whose standard deviation is the local texture
TEXTURE_EDGE = 3  # voxels next to the edge of the brain left out (their neighbourhood reaches the background)
SPREAD_LIMIT = 1.4  # a component spread wider than this (relative to a ball) is a shell, not a brain
WORK_MM = 2.0  # the brain-like foreground is found on a grid of about this voxel size


def _spacing(affine: Any, ndim: int) -> list[float]:
    a = np.asarray(affine, dtype=float)[:ndim, :ndim]
    return [float(v) for v in np.sqrt((a**2).sum(0))]


def intensity_profile(channel: np.ndarray, mask: np.ndarray) -> list[float]:
    """Quantiles of the channel inside `mask`, z-scored as the model's normalisation does.

    Linear rescaling and offsets do not change the profile (the network never sees them);
    a different contrast or a non-linear intensity change does.
    """
    values = channel[mask].astype(np.float64)
    if values.size < 10:
        return [0.0] * len(QUANTILES)
    if values.size > 200_000:
        values = values[:: values.size // 200_000]
    std = values.std() or 1.0
    z = (values - values.mean()) / std
    return [float(v) for v in np.percentile(z, QUANTILES)]


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(values.size, np.float64)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks


def bright_texture(channel: np.ndarray, mask: np.ndarray, core: np.ndarray | None = None) -> float | None:
    """Rank correlation, inside the brain, between intensity and its local standard deviation.

    In T1-weighted images (with or without contrast agent) the brightest tissue is white
    matter, which is smooth: the correlation is negative. In T2 and FLAIR, white matter is
    dark and the bright voxels are cerebrospinal fluid, cortex and lesions, at tissue
    borders: it is positive. Unlike intensity quantiles it barely depends on how much of
    the head a 2D slice cuts. Linear intensity changes do not change it. None when the
    brain is too small to measure it. `core`, the mask eroded by TEXTURE_EDGE voxels, may
    be given (it is the same for every channel).
    """
    if core is None:
        core = ndimage.binary_erosion(mask, iterations=TEXTURE_EDGE)
    if core.sum() < 50:
        return None
    values = channel[mask].astype(np.float64)
    z = np.zeros(channel.shape, np.float64)
    z[mask] = (values - values.mean()) / (values.std() or 1.0)
    mean = ndimage.uniform_filter(z, TEXTURE_WINDOW)
    local = np.sqrt(np.maximum(ndimage.uniform_filter(z * z, TEXTURE_WINDOW) - mean * mean, 0.0))
    a, b = z[core], local[core]
    if a.size > 50_000:  # a rank correlation over 50,000 voxels is precise to about 0.005
        a, b = a[:: a.size // 50_000], b[:: b.size // 50_000]
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom else None


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def _ball(ndim: int, radius: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(0) <= radius**2


def _spread(part: np.ndarray, spacing: list[float]) -> float:
    """Radius of gyration of a voxel set over that of a ball of the same volume (1 for a ball)."""
    points = np.argwhere(part) * np.asarray(spacing)
    gyration = float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))
    volume = len(points) * float(np.prod(spacing))
    if part.ndim == 3:
        ball = np.sqrt(3 / 5) * (3 * volume / (4 * np.pi)) ** (1 / 3)
    else:
        ball = np.sqrt(1 / 2) * np.sqrt(volume / np.pi)
    return gyration / max(ball, 1e-6)


def brain_like_foreground(nonzero: np.ndarray, combined: np.ndarray, spacing: list[float]) -> np.ndarray:
    """The brain-shaped part of the non-zero voxels: compact bright blobs, holes filled.

    Voxels above the 10th percentile of the non-zero intensities, opened by a ~4 mm ball
    (which cuts the scalp from the brain across the dark skull), then every connected
    component at least a quarter the size of the largest that is compact (its radius of
    gyration under SPREAD_LIMIT times that of a ball of its volume: a scalp or skull shell
    around the brain is not), holes filled, dilated back by ~6 mm (sulcal CSF, dark rims).
    In a skull-stripped image this covers nearly every non-zero voxel; in a head it leaves
    out scalp, skull, neck and background noise.
    """
    if not nonzero.any():
        return nonzero
    ndim = nonzero.ndim
    bright = nonzero & (combined > np.percentile(combined[nonzero], 10))
    mm = float(np.mean(spacing)) or 1.0
    opened = ndimage.binary_opening(bright, structure=_ball(ndim, max(1, round(4.0 / mm))))
    labels, count = ndimage.label(opened)
    if count == 0:
        labels, count = ndimage.label(bright)
        if count == 0:
            return np.zeros_like(nonzero)
    sizes = np.bincount(labels.ravel())[1:]
    blob = np.zeros_like(nonzero)
    for index in np.flatnonzero(sizes >= 0.25 * sizes.max()):
        part = labels == index + 1
        if _spread(part, spacing) < SPREAD_LIMIT:
            blob |= part
    blob = ndimage.binary_fill_holes(blob)
    if ndim == 3:
        for z in range(blob.shape[2]):  # axial holes too (ventricles opening to the surface)
            blob[:, :, z] = ndimage.binary_fill_holes(blob[:, :, z])
    return ndimage.binary_dilation(blob, structure=_ball(ndim, max(1, round(6.0 / mm))))


def angular_coverage(outside: np.ndarray, brain: np.ndarray, spacing: list[float], bins: int = 16) -> float:
    """Share of directions around the brain's centre in which non-zero voxels lie outside it.

    A scalp and skull surround the brain (coverage near 1); stray fragments of a
    skull-stripped brain lie in a few directions only.
    """
    if not outside.any() or not brain.any():
        return 0.0
    centre = np.array(ndimage.center_of_mass(brain))
    points = (np.argwhere(outside) - centre) * np.asarray(spacing)
    if points.shape[1] == 2:
        angle = np.arctan2(points[:, 1], points[:, 0])
        cells = np.floor((angle + np.pi) / (2 * np.pi) * bins).astype(int) % bins
        return float(np.unique(cells).size / bins)
    r = np.linalg.norm(points, axis=1) + 1e-9
    polar = np.floor(np.arccos(np.clip(points[:, 2] / r, -1, 1)) / np.pi * (bins // 2)).astype(int).clip(0, bins // 2 - 1)
    azimuth = np.floor((np.arctan2(points[:, 1], points[:, 0]) + np.pi) / (2 * np.pi) * bins).astype(int) % bins
    return float(np.unique(polar * bins + azimuth).size / (bins * bins // 2))


def coarse_map(image: np.ndarray, spacing: list[float], grid: int = MAP_GRID) -> np.ndarray:
    """The brain's non-zero box padded to a square (cube) in mm, resized to grid^d.

    Inside the brain: the channel mean of the per-channel z-scored intensities; outside:
    MAP_BACKGROUND. Padding keeps the box's proportions (a brain is longer front to back
    than wide), so a transposed image does not match the stored shape.
    """
    nonzero = (image != 0).any(0)
    combined = np.full(nonzero.shape, MAP_BACKGROUND, np.float32)
    if nonzero.any():
        z = np.zeros(nonzero.shape, np.float32)
        for channel in image:
            values = channel[nonzero]
            z[nonzero] += (values - values.mean()) / (values.std() or 1.0)
        combined[nonzero] = z[nonzero] / len(image)
    extent = [n * s for n, s in zip(nonzero.shape, spacing)]
    side = max(extent)
    pads = []
    for n, s, e in zip(nonzero.shape, spacing, extent):
        total = max(0, int(round((side - e) / s)))
        pads.append((total // 2, total - total // 2))
    padded = np.pad(combined, pads, constant_values=MAP_BACKGROUND)
    t = torch.from_numpy(np.ascontiguousarray(padded))[None, None]
    small = torch.nn.functional.adaptive_avg_pool2d(t, grid) if padded.ndim == 2 else \
        torch.nn.functional.adaptive_avg_pool3d(t, grid)
    small = small[0, 0].numpy()
    small = small - small.mean()
    return small / (small.std() or 1.0)


def case_features(image: np.ndarray, spacing: list[float], original_shape: list[int]) -> dict[str, Any]:
    """The features of one raw image (channel-first, reoriented, cropped to non-zero).

    Returns:
        channels, spacing (mm, axis order of the image), original_shape, box_mm (the
        non-zero box in mm), intensity (per channel: z-scored quantiles inside the
        brain-like foreground), outside_share (share of non-zero voxels outside the
        brain-like foreground), map (coarse silhouette, flattened).
    """
    image = np.asarray(image, dtype=np.float32)
    spatial = image.shape[1:]
    step = [max(1, int(round(WORK_MM / s))) if s > 0 else 1 for s in spacing[: len(spatial)]]
    small = image[(slice(None), *(slice(None, None, k) for k in step))]
    small_spacing = [s * k for s, k in zip(spacing, step)]
    nonzero = (small != 0).any(0)
    scaled = np.zeros(small.shape[1:], np.float32)
    for channel in small:
        values = channel[channel != 0]
        if values.size:
            hi = float(np.percentile(values, 99)) or 1.0
            scaled += channel / hi
    combined = scaled / max(len(small), 1)
    brain = brain_like_foreground(nonzero, combined, small_spacing)
    total = int(nonzero.sum())
    outside_mask = nonzero & ~brain
    outside = int(outside_mask.sum())
    inside = brain & nonzero
    if image.ndim == 3:
        rows, cols = (np.minimum(np.arange(n) // k, m - 1) for n, k, m in zip(spatial, step, inside.shape))
        full = inside[np.ix_(rows, cols)] & (image != 0).any(0)
        core = ndimage.binary_erosion(full, iterations=TEXTURE_EDGE)
        contrast = [bright_texture(ch, full, core) for ch in image]
        brain_map = coarse_map(image, [float(v) for v in spacing[: len(spatial)]])
    else:
        core = ndimage.binary_erosion(inside, iterations=TEXTURE_EDGE)
        contrast = [bright_texture(ch, inside, core) for ch in small]
        brain_map = coarse_map(small, small_spacing)
    return {
        "version": VERSION,
        "channels": int(image.shape[0]),
        "spacing": [float(s) for s in spacing[: len(spatial)]],
        "original_shape": [int(v) for v in original_shape],
        "box_mm": [float(n * s) for n, s in zip(spatial, spacing)],
        "intensity": [intensity_profile(ch, inside if inside.any() else ch != 0) for ch in small],
        "outside_share": outside / total if total else 0.0,
        "nonzero_fill": round(float((image != 0).any(0).mean()), 4),
        "outside_coverage": angular_coverage(outside_mask, brain, small_spacing),
        "contrast": [None if v is None else round(v, 4) for v in contrast],
        "map": [round(float(v), 3) for v in brain_map.ravel()],
    }


class QCFeaturesd(MapTransform):
    """Store `case_features` of the image under `out_key`; the image passes unchanged.

    Args:
        keys: the image key (one), a MetaTensor whose affine gives the spacing.
        out_key: the data key the features are written to.
    """

    def __init__(self, keys: str, out_key: str = "qc_features") -> None:
        super().__init__(keys)
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = (value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)).numpy()
            ndim = array.ndim - 1
            meta = getattr(value, "meta", {})
            affine = getattr(value, "affine", None)
            spacing = _spacing(affine, ndim) if affine is not None else [1.0] * ndim
            original = meta.get("spatial_shape", array.shape[1:])
            d[self.out_key] = case_features(array, spacing, [int(v) for v in np.asarray(original).ravel()])
        return d

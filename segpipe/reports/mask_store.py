"""Evaluate's masks kept between scoring and drawing, compressed in memory.

A BraTS volume's prediction and reference take 71 MB as int32; a set of 484 of them would
not fit in this machine's memory. Label masks compress a hundredfold, so every case stays
at hand for the lesion columns, the overlays and the report's views at a few hundred kB.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from segpipe.limits import MAX_LABEL_VALUE

Masks = tuple[np.ndarray, np.ndarray, tuple[float, ...]]


def _pack(mask: np.ndarray) -> tuple[tuple[int, ...], bytes]:
    if mask.size and (mask.min() < 0 or mask.max() > MAX_LABEL_VALUE):
        raise ValueError(f"mask values must lie in 0..{MAX_LABEL_VALUE} to be packed")
    return mask.shape, zlib.compress(np.ascontiguousarray(mask, dtype=np.uint8).tobytes(), 1)


def _unpack(packed: tuple[tuple[int, ...], bytes]) -> np.ndarray:
    shape, data = packed
    return np.frombuffer(zlib.decompress(data), dtype=np.uint8).reshape(shape).astype(np.int32)


class MaskStore(Mapping[str, Masks]):
    """Case id -> (prediction, reference, spacing), each mask held as zlib-compressed uint8
    and given back as int32, as `load_mask_grid` reads it."""

    def __init__(self) -> None:
        self._cases: dict[str, tuple[tuple[tuple[int, ...], bytes], tuple[tuple[int, ...], bytes], tuple[float, ...]]] = {}

    def add(self, case: str, pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> None:
        """Keep one case's masks (label values 0..255)."""
        self._cases[case] = (_pack(pred), _pack(ref), tuple(spacing))

    def __getitem__(self, case: str) -> Masks:
        pred, ref, spacing = self._cases[case]
        return _unpack(pred), _unpack(ref), spacing

    def __iter__(self) -> Iterator[str]:
        return iter(self._cases)

    def __len__(self) -> int:
        return len(self._cases)

    def nbytes(self) -> int:
        """Compressed bytes held."""
        return sum(len(p[1]) + len(r[1]) for p, r, _ in self._cases.values())


__all__ = ["MaskStore", "Masks"]

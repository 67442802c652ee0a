"""Validation cases scored on their input's own grid, as `infer` writes and `evaluate` reads them.

On the prepared grid a case's counts are evaluate's when preprocessing only reoriented and
cropped, and the crop kept every label voxel. A case resampled to `preprocess.target_spacing`
(a 512 x 512 figshare slice trained at 256 x 256), or whose label reaches past the image's
non-zero box (where `infer` writes background), is scored the way `infer` segments it: the
labels mapped back through the chain's inverse, the clean-up applied there, against the
label file as stored.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta, set_track_meta
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, MapLabelValued

from segpipe.transforms.inversion import invert_to_input


@dataclass(frozen=True)
class NativeGrid:
    """What maps one validation case's labels back onto its input's grid, and its reference there."""

    chain: Compose
    image: MetaTensor  # the chain's output without its voxels: metadata and applied operations
    shape: tuple[int, ...]
    packed: bytes  # the reference as stored (label mapping applied), zlib-compressed uint8

    def reference(self) -> np.ndarray:
        """The reference on the input's grid (spatial axes)."""
        return np.frombuffer(zlib.decompress(self.packed), dtype=np.uint8).reshape(self.shape)

    def labels(self, labels: torch.Tensor) -> np.ndarray:
        """Masks (N, ...) on the prepared grid mapped onto the input's, each as `infer` maps its own."""
        with tracking_meta():
            return invert_to_input(self.chain, {"image": self.image}, labels.cpu()).numpy()


@contextlib.contextmanager
def tracking_meta() -> Iterator[None]:
    """MONAI's metadata tracking on within the block (training turns it off; inversion needs it)."""
    before = get_track_meta()
    set_track_meta(True)
    try:
        yield
    finally:
        set_track_meta(before)


def needs_native_grid(entry: Mapping[str, Any]) -> bool:
    """Whether a manifest entry's prepared grid counts differently from its input's."""
    grid = entry.get("native_grid")
    return isinstance(grid, dict) and (grid.get("resampled") is True or bool(grid.get("label_outside_crop")))


def native_grids(cases: list[dict[str, Any]], manifest: Mapping[str, Any], preprocess: Mapping[str, Any],
                 layout: str, source: str | None) -> tuple[dict[str, NativeGrid], list[str]]:
    """NativeGrid of each validation case that needs one, read from the dataset folder `source`
    (plan.json's); and a note naming the cases whose files are gone or changed since
    preprocess (they are scored on the prepared grid)."""
    from segpipe.data.digest import file_digest
    from segpipe.data.guard import reading_inside
    from segpipe.transforms.preprocessing import chain_for

    grids: dict[str, NativeGrid] = {}
    chains: dict[str, Compose] = {}  # one per file kind, as infer builds them
    unreadable: list[str] = []
    mapping = {int(k): int(v) for k, v in (preprocess.get("label_mapping") or {}).items()}
    for case in cases:
        entry = manifest["cases"].get(case["id"], {})
        if not needs_native_grid(entry):
            continue
        try:
            sources, label = [Path(p) for p in entry["sources"]], Path(entry["label_source"])
            with tracking_meta(), reading_inside(source) if source else contextlib.nullcontext():
                if file_digest([*sources, label]) != entry.get("hash"):
                    raise ValueError("changed since preprocess")
                kind = "".join(sources[0].suffixes[-2:]).lower()
                if kind not in chains:
                    chains[kind] = chain_for(preprocess, layout, with_label=False, path=sources[0])
                chain = chains[kind]
                data = chain({"image": str(sources[0]) if len(sources) == 1 else [str(p) for p in sources]})
                reference = _reference(label, layout, mapping)
        except Exception:  # gone, moved outside the dataset folder, changed or unreadable
            unreadable.append(case["id"])
            continue
        image = MetaTensor(torch.zeros(1), meta=dict(data["image"].meta))
        image.applied_operations = list(data["image"].applied_operations)
        grids[case["id"]] = NativeGrid(chain, image, reference.shape, zlib.compress(reference.tobytes(), 1))
    notes = []
    if unreadable:
        notes.append(f"validation scores {len(unreadable)} case(s) on the prepared grid (e.g. {unreadable[0]}): their "
                     "input files are gone or changed since preprocess, so their validation Dice may differ from evaluate's")
    return grids, notes


def _reference(path: Path, layout: str, mapping: dict[int, int]) -> np.ndarray:
    """A label file as the preprocessing chain reads it, spatial axes, uint8."""
    from segpipe.data.loading import monai_reader

    steps: list = [LoadImaged("label", reader=monai_reader(layout, "label", path), image_only=True, dtype=None),
                   EnsureChannelFirstd("label")]
    if mapping:
        src = sorted(mapping)
        steps.append(MapLabelValued("label", orig_labels=src, target_labels=[mapping[k] for k in src], dtype=np.float32))
    label = np.asarray(Compose(steps)({"label": str(path)})["label"])[0]
    return np.ascontiguousarray(np.rint(label).astype(np.uint8))


__all__ = ["NativeGrid", "native_grids", "needs_native_grid"]

"""Region-based targets: nested label sets (whole tumour > tumour core > enhancing) as overlapping channels.

The network predicts one sigmoid channel per region (as nnU-Net's region-based BraTS
training and MONAI's ConvertToMultiChannelBasedOnBratsClassesd do). Regions must nest:
ordered from largest to smallest, each holds the next plus exactly one label, so a voxel's
label is the one its smallest predicted region adds (MSD: ET -> 3, TC without ET -> 2,
WT without TC -> 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segpipe.errors import SegpipeError

KEY = "config key 'model.targets'"


@dataclass(frozen=True)
class RegionChain:
    """Nested regions, largest first, and the label each one adds to the next smaller."""

    names: tuple[str, ...]
    members: tuple[tuple[int, ...], ...]
    adds: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        """name -> label values, largest region first."""
        return {n: list(m) for n, m in zip(self.names, self.members)}


def region_chain(regions: dict[str, list[int]], label_ids: list[int]) -> RegionChain:
    """Order `regions` into a nested chain covering every foreground label, or refuse.

    Args:
        regions: name -> label values (the config's evaluate.regions, or the BraTS defaults).
        label_ids: the dataset's foreground labels.
    """
    if not regions:
        raise SegpipeError(f"{KEY}: 'regions' needs nested regions (evaluate.regions), and labels {label_ids} have no default ones")
    ordered = sorted(regions.items(), key=lambda kv: -len(set(kv[1])))
    sets = [set(m) for _, m in ordered]
    if sets[0] != set(label_ids):
        raise SegpipeError(f"{KEY}: the largest region {ordered[0][0]} {sorted(sets[0])} must hold every label {sorted(label_ids)}")
    adds = []
    for i, current in enumerate(sets):
        smaller = sets[i + 1] if i + 1 < len(sets) else set()
        extra = current - smaller
        if not smaller <= current or len(extra) != 1:
            raise SegpipeError(f"{KEY}: regions {dict(ordered)} do not nest, each holding the next smaller one plus one label")
        adds.append(extra.pop())
    return RegionChain(tuple(n for n, _ in ordered), tuple(tuple(sorted(s)) for s in sets), tuple(adds))


def labels_to_regions(labels: torch.Tensor, chain: RegionChain) -> torch.Tensor:
    """(N, 1, ...) label map -> (N, R, ...) float region masks."""
    return torch.cat([torch.isin(labels, torch.tensor(m, device=labels.device)) for m in chain.members], dim=1).float()


def regions_to_labels(probabilities: torch.Tensor | np.ndarray, chain: RegionChain, threshold: float = 0.5) -> torch.Tensor:
    """(R, ...) region probabilities -> (1, ...) uint8 labels, smaller regions overriding larger ones."""
    probs = torch.as_tensor(probabilities)
    out = torch.zeros((1, *probs.shape[1:]), dtype=torch.uint8, device=probs.device)
    for channel, label in enumerate(chain.adds):
        out[0][probs[channel] > threshold] = label
    return out

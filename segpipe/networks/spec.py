"""Network spec (what the model folder records) and building a network from it."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from torch import nn

from segpipe.networks import build_network, network_options

if TYPE_CHECKING:  # networks/ imports nothing of segpipe outside itself at run time
    from segpipe.config import ModelConfig


def network_spec(model: ModelConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The architecture as plain data: enough to rebuild the network from a model folder."""
    fields = dataclasses.asdict(model)
    accepted = network_options(model.name)
    return {
        "name": model.name,
        "spatial_dims": model.spatial_dims,
        "in_channels": int(in_channels),
        "out_channels": int(out_channels),
        "options": {k: v for k, v in fields.items() if k in accepted},
    }


def size_multiple(model: ModelConfig, in_channels: int) -> int:
    """What the network pads each side to: its total downsampling (1 where it pads nothing)."""
    return int(getattr(build_from_spec(network_spec(model, in_channels, 2)), "multiple", 1))


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate the network a spec describes."""
    return build_network(
        spec["name"],
        spatial_dims=spec["spatial_dims"],
        in_channels=spec["in_channels"],
        out_channels=spec["out_channels"],
        **spec["options"],
    )

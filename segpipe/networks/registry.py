"""Look networks up by name and build them from configuration options."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from segpipe.errors import SegpipeError
from segpipe.networks.linknet import LinkNet
from segpipe.networks.unet import UNet

NETWORKS: dict[str, type] = {"unet": UNet, "linknet": LinkNet}

# Passed explicitly by build_network, so they are not "options".
_REQUIRED = ("self", "spatial_dims", "in_channels", "out_channels")


def _network_class(name: str) -> type:
    try:
        return NETWORKS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(NETWORKS))
        raise SegpipeError(f"unknown network {name!r}; known networks: {known}") from None


def network_options(name: str) -> tuple[str, ...]:
    """Names of the options a network accepts besides dims and channel counts.

    Args:
        name: Registered network name, e.g. "unet".

    Returns:
        Option names in constructor order.

    Raises:
        SegpipeError: If ``name`` is not registered.
    """
    params = inspect.signature(_network_class(name).__init__).parameters
    return tuple(p for p in params if p not in _REQUIRED)


def build_network(name: str, spatial_dims: int, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    """Instantiate a registered network.

    Args:
        name: Registered network name ("unet" or "linknet").
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        out_channels: Output channels (classes).
        **options: Further constructor options; see :func:`network_options`.

    Returns:
        The network, in training mode.

    Raises:
        SegpipeError: For an unknown name, an option the network does not accept,
            or an invalid value.
    """
    cls = _network_class(name)
    accepted = network_options(name)
    for option in options:
        if option not in accepted:
            raise SegpipeError(
                f"network {name!r} does not accept option {option!r}; accepted options: {', '.join(accepted)}"
            )
    try:
        return cls(spatial_dims, in_channels, out_channels, **options)
    except (ValueError, TypeError) as exc:
        raise SegpipeError(f"network {name!r}: {exc}") from None

"""Segmentation networks (2D/3D U-Net and LinkNet) and a name-based registry."""

from segpipe.networks.linknet import LinkNet
from segpipe.networks.registry import NETWORKS, build_network, network_options
from segpipe.networks.unet import UNet

__all__ = ["NETWORKS", "LinkNet", "UNet", "build_network", "network_options"]

"""The one prediction path: windows, mirrored copies, probabilities and labels.

`segpipe infer` and validation during `segpipe fit` both call these functions, so the
validation Dice that picks the best checkpoint is computed on the same predictions that
`infer` writes for that checkpoint (mirroring, skipped empty windows and all).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
from monai.inferers import sliding_window_inference

from segpipe.config import InferConfig
from segpipe.errors import SegpipeError
from segpipe.networks.layers import channels_last_format
from segpipe.transforms.regions import RegionChain, regions_to_labels

BACKGROUND_LOGIT = 20.0  # softmax(20, 0, ...) is background with certainty to float32 precision


class SkipEmptyWindows(torch.nn.Module):
    """Runs the network only on windows holding some non-zero input.

    After z-scoring over the brain, everything outside it is exactly zero; such windows
    get a confident background prediction without a forward pass.
    """

    def __init__(self, net: torch.nn.Module, out_channels: int, regions: bool = False) -> None:
        super().__init__()
        self.net = net
        self.out_channels = out_channels
        self.regions = regions  # sigmoid region outputs: every channel confidently off

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = x.flatten(1).abs().amax(1) > 0
        if bool(keep.all()):
            return self.net(x)
        out = x.new_zeros((x.shape[0], self.out_channels, *x.shape[2:]))
        if self.regions:
            out[:] = -BACKGROUND_LOGIT
        else:
            out[:, 0] = BACKGROUND_LOGIT
        if bool(keep.any()):
            out[keep] = self.net(x[keep]).to(out.dtype)
        return out


def window_logits(net: torch.nn.Module, x: torch.Tensor, roi: Sequence[int], icfg: InferConfig, model_dims: int,
                  out_channels: int, regions: bool, sliding_window: bool = True,
                  device: torch.device | None = None) -> torch.Tensor:
    """Logits (N, C, ...) of a batch of images, on the device the windows run on (blending a GPU's
    windows there is what keeps the GPU busy); a 2D model on a volume runs slice by slice.

    Args:
        roi: window size of the model's spatial dimensions.
        model_dims: the network's spatial dimensions (2 or 3).
        regions: the network predicts sigmoid regions (empty windows get every channel off).
        sliding_window: sweep windows of `roi` (MONAI), else the whole image at once.
        device: where the windows run (that of `x` when None).
    """
    image_dims = x.ndim - 2
    predictor: torch.nn.Module = SkipEmptyWindows(net, out_channels, regions) if icfg.skip_empty else net
    roi = list(roi)
    if model_dims == 2 and image_dims == 3:
        inner = predictor

        def predictor(batch: torch.Tensor) -> torch.Tensor:  # noqa: F811 - slice-wise wrapper
            return inner(batch[..., 0])[..., None]

        roi = [*roi[:2], 1]
    elif model_dims != image_dims:
        raise SegpipeError(f"a {model_dims}D model cannot segment {image_dims}D images")
    if not sliding_window:
        whole = list(x.shape[2:]) if model_dims == image_dims else [*x.shape[2:-1], 1]
        check_activations(net, x.shape[0] * math.prod(whole), x.shape[1] + out_channels, device or x.device,
                          f"the whole image {list(x.shape[2:])} at once", "segment it with --sliding-window")
        if model_dims == image_dims:
            return predictor(x).float()
        return torch.cat([predictor(x[..., z : z + 1]) for z in range(x.shape[-1])], dim=-1).float()
    check_window_count(x, roi, icfg.overlap)
    check_window_memory(x, roi, out_channels, icfg.sw_batch_size)
    check_activations(net, icfg.sw_batch_size * math.prod(roi), x.shape[1] + out_channels, device or x.device,
                      f"infer.roi_size {list(roi)} with infer.sw_batch_size {icfg.sw_batch_size}",
                      "lower infer.sw_batch_size or infer.roi_size")
    device = device or x.device
    return sliding_window_inference(
        x, roi_size=roi, sw_batch_size=icfg.sw_batch_size, predictor=predictor, overlap=icfg.overlap,
        mode=icfg.mode, sw_device=device, device=device,
    ).float()


def check_window_count(x: torch.Tensor, roi: Sequence[int], overlap: float) -> None:
    """Refuse a sweep of more than `MAX_WINDOWS` windows over one image, counted as MONAI places
    them (a step of roi x (1 - overlap) per axis): an overlap of 0.99 or a window of a few voxels
    turns a second's work into hours, without a word."""
    from segpipe.limits import MAX_WINDOWS

    windows = 1
    for side, size in zip(roi, x.shape[2:]):
        step = max(int(int(side) * (1 - overlap)), 1)
        windows *= 1 if int(size) <= int(side) else math.ceil((int(size) - int(side)) / step) + 1
    if windows > MAX_WINDOWS:
        raise SegpipeError(f"infer.roi_size {list(roi)} with infer.overlap {overlap:g}: {windows} windows over an image "
                           f"of {list(x.shape[2:])}, more than {MAX_WINDOWS}; lower infer.overlap or raise infer.roi_size")


def check_window_memory(x: torch.Tensor, roi: Sequence[int], out_channels: int, sw_batch_size: int) -> None:
    """Refuse windows that would not fit the image memory limit: an image smaller than a window
    is padded to it, and a batch of windows holds `sw_batch_size` of them, inputs and outputs."""
    from segpipe.limits import ENV_MEMORY, human, max_image_bytes

    channels = x.shape[1] + out_channels
    padded = x.shape[0] * math.prod(max(int(r), int(s)) for r, s in zip(roi, x.shape[2:]))
    need, limit = 4 * channels * (padded + sw_batch_size * math.prod(roi)), max_image_bytes()
    if need > limit:
        raise SegpipeError(f"infer.roi_size {list(roi)} with infer.sw_batch_size {sw_batch_size}: the windows and the "
                           f"image padded to them need {human(need)} as float32, over the image memory limit of "
                           f"{human(limit)} ({ENV_MEMORY})")


def check_activations(net: torch.nn.Module, voxels: int, channels: int, device: torch.device, what: str,
                      remedy: str) -> None:
    """Refuse a forward pass over `voxels` input voxels (a batch of windows, or whole images) whose
    activations would need more memory than the device has: the process would be killed
    without a word. Uses the network's measured `peak_per_voxel` (segpipe's networks carry one);
    `channels` are the input's and the output's; `what` and `remedy` frame the refusal."""
    from segpipe.limits import device_memory, human

    per_voxel = getattr(net, "peak_per_voxel", None)
    total = device_memory(device) if per_voxel else None
    if not total:
        return
    need = 4 * voxels * (channels + per_voxel)
    if need > total:
        raise SegpipeError(f"{what}: the network's activations need about {human(need)}, more than the "
                           f"{human(total)} of memory on {device} ({remedy})")


def mirror_axes(spatial_dims: int, tta: bool) -> list[tuple[int, ...]]:
    """The flips of a test-time-augmented pass: none, then every non-empty set of spatial axes."""
    spatial = range(2, 2 + spatial_dims)
    return [()] + ([c for r in range(1, spatial_dims + 1) for c in itertools.combinations(spatial, r)] if tta else [])


def mean_probabilities(nets: Sequence[torch.nn.Module], x: torch.Tensor, roi: Sequence[int], icfg: InferConfig,
                       model_dims: int, out_channels: int, regions: bool, sliding_window: bool = True,
                       device: torch.device | None = None) -> torch.Tensor:
    """Softmax probabilities (N, C, ...), or sigmoid region probabilities, averaged over `nets`
    and, with `icfg.tta`, over mirrored copies along every spatial axis (`x` in channels-last
    memory format with `icfg.channels_last`)."""
    if icfg.channels_last and x.ndim in (4, 5):
        x = x.contiguous(memory_format=channels_last_format(x.ndim - 2))
    flips = mirror_axes(x.ndim - 2, icfg.tta)
    total = None
    for net in nets:
        logits_of = functools.partial(window_logits, net, roi=roi, icfg=icfg, model_dims=model_dims,
                                      out_channels=out_channels, regions=regions, sliding_window=sliding_window,
                                      device=device)
        if x.ndim == 4 and len(flips) > 1:  # 2D images are small: all mirrored copies in one batch of windows
            outputs = logits_of(torch.cat([torch.flip(x, axes) if axes else x for axes in flips])).split(x.shape[0])
        else:  # one copy at a time: a volume's copies together would multiply its memory
            outputs = (logits_of(torch.flip(x, axes) if axes else x) for axes in flips)
        for axes, logits in zip(flips, outputs):
            p = torch.sigmoid(logits) if regions else torch.softmax(logits, dim=1)
            p = torch.flip(p, axes) if axes else p
            total = p if total is None else total + p
    return total / (len(nets) * len(flips))


def labels_of(probs: torch.Tensor, chain: RegionChain | None, threshold: float | None = None) -> torch.Tensor:
    """Labels (1, ...) from one image's probabilities (C, ...), on their device: argmax, or nested
    regions decoded into the dataset's label values.

    With a `threshold`, a voxel is foreground where its summed foreground probability exceeds it
    (then the likeliest foreground label), or, for regions, where the region's sigmoid does.
    """
    if chain is not None:
        return regions_to_labels(probs, chain, 0.5 if threshold is None else threshold)
    # max's indices are argmax's (the first of tied maxima) at a tenth of its CPU time over the
    # channel axis: 0.024 against 0.227 s for a (4, 134, 177, 136) volume, torch 2.13, two threads
    if threshold is None:
        return probs.max(0, keepdim=True).indices.to(torch.uint8)
    foreground = (1 - probs[:1]) > threshold
    likeliest = probs[1:].max(0, keepdim=True).indices.to(torch.uint8) + 1
    return torch.where(foreground, likeliest, torch.zeros_like(likeliest))

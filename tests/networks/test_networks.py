"""Tests for segpipe.networks: shapes, gradients, export, precision and the registry."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from segpipe.errors import SegpipeError
from segpipe.networks import NETWORKS, LinkNet, UNet, build_network, network_options
from segpipe.networks.padding import crop_to, pad_to_multiple

# Tracing and the legacy ONNX exporter warn about deprecation and shape handling.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning"
)

ODD_SIZES = {2: (67, 45), 3: (33, 20, 17)}
SMALL_SIZES = {2: (21, 18), 3: (13, 10, 9)}


def small(name: str, spatial_dims: int, in_channels: int = 2, out_channels: int = 3, **options) -> nn.Module:
    """A narrow network, so the tests run fast on CPU."""
    width = {"unet": dict(filters=4, depth=3), "linknet": dict(filters=8)}[name]
    return build_network(name, spatial_dims, in_channels, out_channels, **{**width, **options})


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_output_shape_odd_sizes(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = small(name, spatial_dims).eval()
    x = torch.randn(2, 2, *ODD_SIZES[spatial_dims])
    with torch.no_grad():
        y = model(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (2, 3, *ODD_SIZES[spatial_dims])
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize(
    "options",
    [dict(residual=True), dict(norm="batch", dropout=0.2), dict(depth=4), dict(depth=1)],
    ids=["residual", "batch-dropout", "depth4", "depth1"],
)
def test_unet_variants_shape(spatial_dims: int, options: dict) -> None:
    model = small("unet", spatial_dims, **options).train()
    x = torch.randn(2, 2, *ODD_SIZES[spatial_dims])
    assert model(x).shape == (2, 3, *ODD_SIZES[spatial_dims])


def test_pipeline_default_call() -> None:
    """The call the training code makes, with a non-multiple-of-16 patch."""
    model = build_network("unet", spatial_dims=3, in_channels=4, out_channels=4, filters=16, depth=4, norm="instance")
    assert isinstance(model, UNet)
    with torch.no_grad():
        y = model.eval()(torch.randn(1, 4, 33, 20, 17))
    assert y.shape == (1, 4, 33, 20, 17)


def test_widths_double_and_cap() -> None:
    assert UNet(3, 1, 1, filters=16, depth=4).widths == [16, 32, 64, 128, 256]
    assert UNet(3, 1, 1, filters=32, depth=5).widths == [32, 64, 128, 256, 320, 320]
    assert UNet(2, 1, 1, filters=32, depth=5).widths == [32, 64, 128, 256, 512, 512]


def test_pad_and_crop_round_trip() -> None:
    x = torch.randn(1, 2, 5, 17, 32)
    padded = pad_to_multiple(x, 16)
    assert padded.shape == (1, 2, 16, 32, 32)
    assert torch.equal(crop_to(padded, [5, 17, 32]), x)
    assert padded[:, :, 5:].abs().sum() == 0 and padded[:, :, :, 17:].abs().sum() == 0


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_gradients_reach_every_layer(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = small(name, spatial_dims).train()
    x = torch.randn(2, 2, *SMALL_SIZES[spatial_dims])
    model(x).square().mean().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


# Default configuration; the same numbers are written in the class docstrings.
PARAM_COUNTS = [
    (UNet, 2, 4, 4, 1_942_772),
    (UNet, 3, 4, 4, 5_647_732),
    (LinkNet, 2, 1, 2, 11_527_170),
    (LinkNet, 3, 1, 2, 33_964_162),
]


@pytest.mark.parametrize("cls, spatial_dims, in_channels, out_channels, expected", PARAM_COUNTS)
def test_parameter_counts_match_docstring(
    cls: type, spatial_dims: int, in_channels: int, out_channels: int, expected: int
) -> None:
    assert count(cls(spatial_dims, in_channels, out_channels)) == expected
    assert f"{expected:,}" in cls.__doc__


def test_deep_supervision_list_in_train_tensor_in_eval() -> None:
    size = ODD_SIZES[3]
    model = small("unet", 3, deep_supervision=True, depth=3)
    x = torch.randn(2, 2, *size)
    outputs = model.train()(x)
    assert isinstance(outputs, list) and len(outputs) == 3
    assert outputs[0].shape == (2, 3, *size)
    for level, aux in enumerate(outputs[1:], start=1):
        assert aux.shape == (2, 3, *(math.ceil(s / 2**level) for s in size))
    sum(o.mean() for o in outputs).backward()
    assert all(h.weight.grad is not None for h in model.aux_heads)
    with torch.no_grad():
        assert isinstance(model.eval()(x), torch.Tensor)
    assert isinstance(small("unet", 3).train()(x), torch.Tensor)


@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_torchscript_script_and_trace_match_eager(name: str) -> None:
    torch.manual_seed(0)
    model = small(name, 2, deep_supervision=True) if name == "unet" else small(name, 2)
    model.eval()
    x = torch.randn(1, 2, *SMALL_SIZES[2])
    other = torch.randn(1, 2, 40, 29)
    with torch.no_grad():
        scripted = torch.jit.script(model)
        traced = torch.jit.trace(model, x)
        for inp in (x, other):
            expected = model(inp)
            torch.testing.assert_close(scripted(inp), expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(traced(inp), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_onnx_export_matches_eager(name: str, spatial_dims: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(0)
    model = small(name, spatial_dims).eval()
    x = torch.randn(1, 2, *SMALL_SIZES[spatial_dims])
    with torch.no_grad():
        expected = model(x).numpy()
    buffer = io.BytesIO()
    torch.onnx.export(model, (x,), buffer, dynamo=False, input_names=["image"], output_names=["logits"])
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"image": x.numpy()})
    assert actual.shape == expected.shape
    torch.testing.assert_close(torch.from_numpy(actual), torch.from_numpy(expected), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_same_seed_same_output(name: str) -> None:
    x = torch.randn(1, 2, *SMALL_SIZES[3])

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        with torch.no_grad():
            return small(name, 3).eval()(x)

    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "linknet"])
def test_channels_last_matches_contiguous(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    model = small(name, spatial_dims).eval()
    x = torch.randn(2, 2, *ODD_SIZES[spatial_dims])
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    with torch.no_grad():
        expected = model(x)
        actual = model.to(memory_format=fmt)(x.to(memory_format=fmt))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", ["unet", "linknet"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_autocast_close_to_fp32(name: str, spatial_dims: int, dtype: torch.dtype) -> None:
    # fp16 autocast is for CUDA; CPU autocast exercises the same casting of the modules here.
    torch.manual_seed(0)
    model = small(name, spatial_dims).eval()
    x = torch.randn(2, 2, *ODD_SIZES[spatial_dims])
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=dtype):
            actual = model(x)
    assert actual.dtype == dtype
    assert actual.shape == expected.shape
    relative = (actual.float() - expected).norm() / expected.norm()
    assert relative < 0.05
    # Training step under autocast: gradients stay finite (and fp32, like the weights).
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = model(x).float().square().mean()
    loss.backward()
    grad = first_conv(model).weight.grad
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_dropout_active_only_in_training() -> None:
    model = small("linknet", 2, dropout=0.5)
    x = torch.randn(2, 2, *SMALL_SIZES[2])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.allclose(model(x), model(x))


def test_registry_contents_and_options() -> None:
    assert NETWORKS == {"unet": UNet, "linknet": LinkNet}
    assert network_options("unet") == ("filters", "depth", "norm", "dropout", "residual", "deep_supervision", "stem")
    assert network_options("linknet") == ("filters", "norm", "dropout")
    assert isinstance(build_network("linknet", 2, 1, 2, filters=8), LinkNet)


def test_unknown_network_name() -> None:
    with pytest.raises(SegpipeError, match="'resnet'") as info:
        build_network("resnet", 3, 4, 4)
    assert "linknet" in str(info.value) and "unet" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(SegpipeError, match="'vnet'"):
        network_options("vnet")


def test_unknown_option_is_named() -> None:
    with pytest.raises(SegpipeError, match="'depth'") as info:
        build_network("linknet", 2, 1, 2, depth=4)
    assert "filters" in str(info.value)
    with pytest.raises(SegpipeError, match="'channels'"):
        build_network("unet", 3, 4, 4, channels=(16, 32))


@pytest.mark.parametrize(
    "name, options, word",
    [
        ("unet", dict(norm="group"), "norm"),
        ("unet", dict(depth=0), "depth"),
        ("linknet", dict(dropout=1.5), "dropout"),
        ("unet", dict(), "spatial_dims"),
    ],
)
def test_invalid_values_raise_segpipe_error(name: str, options: dict, word: str) -> None:
    spatial_dims = 4 if word == "spatial_dims" else 3
    with pytest.raises(SegpipeError, match=word):
        build_network(name, spatial_dims, 1, 2, **options)

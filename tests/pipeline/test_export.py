"""`segpipe export`: TorchScript, ONNX and MONAI bundle outputs equal the model folder's own results."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from segpipe.artifacts.model_folder import ModelFolder, TrainedModel, load_model_folder
from segpipe.artifacts.plan import Plan
from segpipe.cli import cli
from segpipe.cli_export import export as export_command
from segpipe.networks.spec import build_from_spec
from segpipe.pipeline.export import ATOL, save_onnx, save_torchscript

from tests.builders import model_with_config
from tests.conftest import tiny_config

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.* is deprecated")

if "export" not in cli.commands:
    cli.add_command(export_command)


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _inputs(channels: int, sizes: list[list[int]]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return [torch.randn(batch, channels, *size, generator=gen) for batch, size in zip((1, 3, 2), sizes)]


def test_help_explains_every_option():
    result = run("export", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--format", "--output", "--checkpoint", "--overwrite", "--quiet", "--debug"):
        assert option in result.output
    for fmt in ("torchscript", "onnx", "bundle"):
        assert fmt in result.output


def test_torchscript_equals_eager(tiny_model, tmp_path):
    out = tmp_path / "model.pt"
    result = run("export", "--model", tiny_model, "--format", "torchscript", "--output", out, "-q")
    assert result.exit_code == 0, result.output
    assert result.output == ""
    eager = load_model_folder(tiny_model).net
    loaded = torch.jit.load(str(out)).eval()
    with torch.inference_mode():
        for x in _inputs(4, [[16, 16, 16], [21, 13, 9], [40, 32, 24]]):
            torch.testing.assert_close(loaded(x), eager(x), atol=ATOL, rtol=0)
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_onnx_equals_eager_with_dynamic_shapes(tiny_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    result = run("export", "-m", tiny_model, "-f", "onnx", "-o", out, "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    assert "exported onnx" in result.output
    eager = load_model_folder(tiny_model, "last").net
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        for x in _inputs(4, [[16, 16, 16], [21, 13, 9], [40, 32, 24]]):
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            torch.testing.assert_close(got, eager(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "linknet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "options": {"filters": 8, "norm": "batch", "dropout": 0.1}},
        {"name": "unet", "spatial_dims": 3, "in_channels": 2, "out_channels": 3,
         "options": {"filters": 4, "depth": 3, "norm": "batch", "residual": True, "deep_supervision": True}},
    ],
    ids=["linknet2d", "unet3d-deep-supervision"],
)
def test_other_networks_export_with_dynamic_shapes(spec, tmp_path):
    torch.manual_seed(0)
    net = build_from_spec(spec)
    net.train()
    with torch.no_grad():  # give batch norm non-trivial running statistics
        net(torch.randn(2, spec["in_channels"], *([24] * spec["spatial_dims"])))
    net.eval()
    patch = [32, 32] if spec["spatial_dims"] == 2 else [16, 16, 16]
    folder = ModelFolder(root=tmp_path, config=tiny_config(**{"train.patch_size": patch, "model.spatial_dims": spec["spatial_dims"]}), plan=Plan(patch_size=patch, labels={}))
    model = TrainedModel(folder, network=spec, net=net, checkpoint=tmp_path / "none.pt")
    assert save_torchscript(model, tmp_path / "m.pt") <= ATOL
    sizes = [[37, 50], [64, 64], [33, 31]] if spec["spatial_dims"] == 2 else [[17, 9, 12], [16, 16, 16], [24, 8, 8]]
    inputs = _inputs(spec["in_channels"], sizes)
    loaded = torch.jit.load(str(tmp_path / "m.pt")).eval()
    with torch.inference_mode():
        for x in inputs:
            torch.testing.assert_close(loaded(x), net(x), atol=ATOL, rtol=0)
    ort = pytest.importorskip("onnxruntime")
    assert save_onnx(model, tmp_path / "m.onnx") <= ATOL
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        for x in inputs:
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
            torch.testing.assert_close(got, net(x), atol=ATOL, rtol=0)


def _oblique_copy(source: Path, target: Path) -> Path:
    """The image flipped to LPS-like axes with anisotropic voxels: exercises orientation and resampling."""
    img = nib.load(str(source))
    data = np.asarray(img.dataobj)[::-1, :, ::-1].copy()
    affine = np.diag([-1.3, 0.9, -1.6, 1.0])
    affine[:3, 3] = [40.0, -12.0, 30.0]
    nib.save(nib.Nifti1Image(data, affine), str(target))
    return target


def _run_bundle(bundle: Path, image: Path, out: Path) -> subprocess.CompletedProcess:
    args = ["--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
            "--input_image", str(image), "--output_dir", str(out)]
    if importlib.util.find_spec("fire") is not None:  # `python -m monai.bundle` parses its arguments with fire
        cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    else:
        pairs = dict(zip(args[::2], args[1::2]))
        kwargs = ", ".join(f"{k.lstrip('-')}={v!r}" for k, v in pairs.items())
        cmd = [sys.executable, "-c", f"from monai.bundle import run; run({kwargs})"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("settings", [{}, {"tta": True, "keep_largest": [1, 2, 3]}], ids=["plain", "mirrored-largest"])
def test_bundle_mask_equals_segpipe_infer(settings, tiny_model, synthetic_dataset, tmp_path):
    """The bundle writes `infer`'s masks, also with mirrored copies and keep-largest clean-up."""
    model = model_with_config(tiny_model, tmp_path / "model", infer=settings) if settings else tiny_model
    bundle = tmp_path / "bundle"
    result = run("export", "-m", model, "-f", "bundle", "-o", bundle, "-q")
    assert result.exit_code == 0, result.output
    for name in ("configs/inference.json", "configs/metadata.json", "configs/logging.conf", "models/model.pt",
                 "docs/README.md"):
        assert (bundle / name).is_file(), name
    images = tmp_path / "images"
    images.mkdir()
    cases = [_oblique_copy(synthetic_dataset / "imagesTs" / "SYN_006.nii.gz", images / "oblique.nii.gz"),
             synthetic_dataset / "imagesTs" / "SYN_007.nii.gz"]
    for image in cases:
        done = _run_bundle(bundle, image, tmp_path / "bundle_masks")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    infer = run("infer", "-m", model, "-i", images, "-i", cases[1], "-o", tmp_path / "segpipe_masks", "-q",
                "--precision", "fp32")  # the bundle runs fp32; "auto" may pick bf16 on this CPU
    assert infer.exit_code == 0, infer.output
    for image in cases:
        stem = image.name.removesuffix(".nii.gz")
        ours = nib.load(str(tmp_path / "segpipe_masks" / f"{stem}.nii.gz"))
        theirs = nib.load(str(tmp_path / "bundle_masks" / f"{stem}_seg.nii.gz"))
        source = nib.load(str(image))
        assert theirs.shape == source.shape[:3]
        np.testing.assert_allclose(theirs.affine, source.affine, atol=1e-5)
        a, b = np.asarray(ours.dataobj), np.asarray(theirs.dataobj)
        assert (a > 0).any(), "the tiny model should find some tumour"
        # The same MONAI transforms, weights and sliding window: voxel-equal labels.
        assert np.array_equal(a, b), f"{stem}: {(a != b).sum()} voxels differ"


def test_existing_output_and_bad_model_are_one_line_errors(tiny_model, tmp_path):
    existing = tmp_path / "m.onnx"
    existing.write_text("keep me")
    result = run("export", "-m", tiny_model, "-f", "onnx", "-o", existing)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: {existing}: already exists (use --overwrite to replace it)"]
    assert existing.read_text() == "keep me"
    result = run("export", "-m", tmp_path / "nope", "-f", "torchscript", "-o", tmp_path / "x.pt")
    assert result.exit_code == 1 and result.output.startswith("error: ") and "nope" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.pt").exists()
    existing = tmp_path / "m.pt"
    existing.write_text("replace me")
    result = run("export", "-m", tiny_model, "-f", "torchscript", "-o", existing, "--overwrite", "-q")
    assert result.exit_code == 0, result.output
    assert torch.jit.load(str(existing)) is not None


def test_a_folder_or_another_suffix_as_the_output_file_is_refused_in_one_line(tiny_model, tmp_path):
    """`-o DIR/` wrote a file named DIR, and `-f onnx -o m.pt` an ONNX file named .pt."""
    folder = tmp_path / "exports"
    folder.mkdir()
    for given, extra in ((f"{folder}/", []), (str(folder), ["--overwrite"]), (f"{tmp_path / 'new'}/", [])):
        result = run("export", "-m", tiny_model, "-f", "onnx", "-o", given, *extra)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            f"error: {given}: is a folder; --format onnx writes one file: name it, e.g. -o {Path(given) / 'model.onnx'}"]
    for fmt, name, suffix in (("onnx", "m.pt", ".onnx"), ("torchscript", "m.onnx", ".pt")):
        result = run("export", "-m", tiny_model, "-f", fmt, "-o", tmp_path / name)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [
            f"error: {tmp_path / name}: --format {fmt} writes a {suffix} file; name the output with that suffix"]
    assert [p.name for p in tmp_path.iterdir()] == ["exports"] and not any(folder.iterdir())


@pytest.mark.parametrize("targets", ["labels", "regions"])
@pytest.mark.parametrize("threshold", [None, 0.3])
def test_the_bundle_decides_labels_as_infer_does(threshold, targets, tmp_path):
    """The bundle's step from probabilities to labels is the argmax, or the checkpoint's threshold; a
    region model's regions are decoded into the dataset's labels."""
    from dataclasses import replace

    from monai.bundle import ConfigParser

    from segpipe.pipeline.export import _decision
    from segpipe.prediction import labels_of
    from segpipe.transforms.regions import region_chain

    regions = {"whole_tumour": [1, 2, 3], "tumour_core": [2, 3], "enhancing_tumour": [3]}
    config = tiny_config(**{"model.targets": targets, "evaluate.regions": str(regions).replace("'", "")})
    labels = {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}
    model = TrainedModel(ModelFolder(tmp_path, config, Plan(labels=labels)), network={}, net=torch.nn.Identity(),
                         checkpoint=tmp_path / "none.pt")
    model = replace(model, threshold=threshold)
    step = ConfigParser({"imports": ["$import torch"], "step": _decision(model)}).get_parsed_content("step")
    logits = torch.randn(3 if targets == "regions" else 4, 20, 16, generator=torch.Generator().manual_seed(2)) * 3
    chain = region_chain(regions, [1, 2, 3]) if targets == "regions" else None
    probs = torch.sigmoid(logits) if chain is not None else torch.softmax(logits, 0)
    got = step({"pred": probs})["pred"]
    want = labels_of(probs, chain, threshold)
    assert set(torch.unique(want).tolist()) == {0, 1, 2, 3}
    assert torch.equal(torch.as_tensor(got).long(), want.long())
    if threshold is not None:  # the threshold changes some labels here
        assert not torch.equal(want, labels_of(probs, chain))


def test_a_bundle_without_infers_small_component_removal_says_so(tiny_model, tmp_path):
    model = model_with_config(tiny_model, tmp_path / "model", infer={"min_component_size": 20})
    result = CliRunner().invoke(cli, ["export", "-m", str(model), "-f", "bundle", "-o", str(tmp_path / "b"), "-q"])
    assert result.exit_code == 0, result.output
    assert "note: infer.min_component_size (20) is not in the bundle" in result.output
    plain = CliRunner().invoke(cli, ["export", "-m", str(tiny_model), "-f", "bundle", "-o", str(tmp_path / "c"), "-q"])
    assert plain.exit_code == 0 and plain.output == ""

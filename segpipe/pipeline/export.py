"""`segpipe export`: a model folder as TorchScript, ONNX or a MONAI bundle.

Every export is checked before it is kept: the exported model is loaded back and run on
random inputs of the training patch size and of one odd size, and its logits must equal
the model folder's eager network within `ATOL`. The networks pad their input to a
multiple of 2**depth (U-Net) or 32 (LinkNet) from the input's shape and crop the output
back, so TorchScript and ONNX models accept any batch size and any spatial size.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segpipe.artifacts.model_folder import TrainedModel, load_model_folder, region_chain_of, tuned_threshold
from segpipe.atomic import atomic_path, write_json, write_text
from segpipe.errors import SegpipeError
from segpipe.outputs import LOCK_NAME
from segpipe.prediction import mirror_axes

FORMATS = ("torchscript", "onnx", "bundle")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}  # of the single-file formats
ATOL = 1e-4
ONNX_OPSET = 17


@dataclass
class ExportResult:
    """What an export wrote and how closely the exported model matched the eager one."""

    format: str
    output: Path
    files: list[Path] = field(default_factory=list)
    max_abs_diff: float = 0.0
    input_shape: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # where the export does not do all that `infer` does


def patch_size(model: TrainedModel) -> list[int]:
    """The training patch (the sliding-window ROI `infer` uses by default)."""
    return [int(v) for v in (model.config.train.patch_size or model.plan.patch_size)]


def _example_inputs(model: TrainedModel, seed: int = 0) -> list[torch.Tensor]:
    """A patch-sized input and a smaller odd-sized batch of two (tests dynamic shapes)."""
    gen = torch.Generator().manual_seed(seed)
    channels = int(model.network["in_channels"])
    roi = patch_size(model)
    odd = [max(3, s // 2 + 3) for s in roi]
    return [
        torch.randn(1, channels, *roi, generator=gen),
        torch.randn(2, channels, *odd, generator=gen),
    ]


def _compare(name: str, eager: torch.Tensor, exported: Any) -> float:
    exported = torch.as_tensor(exported)
    if tuple(exported.shape) != tuple(eager.shape):
        raise SegpipeError(
            f"{name}: exported model returns shape {tuple(exported.shape)}, the eager network {tuple(eager.shape)}"
        )
    diff = float((exported.float() - eager).abs().max()) if eager.numel() else 0.0
    if not diff <= ATOL:
        raise SegpipeError(f"{name}: exported model differs from the eager network by {diff:.3g} (> {ATOL})")
    return diff


def _eager_outputs(model: TrainedModel, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model.net(x) for x in inputs]


def _to_torchscript(net: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Script the network (keeps every branch); fall back to tracing it in eval mode."""
    net = net.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated")  # torch 2.13 deprecates TorchScript (still supported)
        try:
            return torch.jit.script(net)
        except Exception:  # noqa: BLE001 - tracing is the documented fallback
            with torch.no_grad():
                return torch.jit.trace(net, example, check_trace=False)


def save_torchscript(model: TrainedModel, path: Path) -> float:
    """Write the eval network as TorchScript to `path` (atomically); return the max deviation."""
    inputs = _example_inputs(model)
    scripted = _to_torchscript(model.net, inputs[0])
    with atomic_path(path) as tmp:
        scripted.save(str(tmp))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*deprecated")
            loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        with torch.inference_mode():
            diffs = [_compare(str(path), e, loaded(x)) for x, e in zip(inputs, _eager_outputs(model, inputs))]
    return max(diffs)


def save_onnx(model: TrainedModel, path: Path) -> float:
    """Write the eval network as ONNX (dynamic batch and spatial axes) to `path` atomically."""
    inputs = _example_inputs(model)
    dims = int(model.network["spatial_dims"])
    axes = {0: "batch", **{2 + i: f"spatial_{i}" for i in range(dims)}}
    net = model.net.eval()
    with atomic_path(path) as tmp:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # instance norm without running statistics is exported "train=True": the same maths as eval
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, (inputs[0],), str(tmp), input_names=["image"], output_names=["logits"],
                    dynamic_axes={"image": axes, "logits": axes}, opset_version=ONNX_OPSET, dynamo=False,
                )
        except Exception as exc:  # noqa: BLE001 - report the exporter's reason in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SegpipeError(f"{path}: ONNX export failed ({first})") from None
        diffs = _check_onnx(model, tmp, path, inputs)
    return max(diffs)


def _check_onnx(model: TrainedModel, tmp: Path, path: Path, inputs: list[torch.Tensor]) -> list[float]:
    try:
        import onnxruntime as ort
    except ImportError:  # the export itself needs only torch (and onnx); checking needs onnxruntime
        return [0.0]
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    eager = _eager_outputs(model, inputs)
    return [_compare(str(path), e, session.run(None, {"image": x.numpy()})[0]) for x, e in zip(inputs, eager)]


# --- MONAI bundle -------------------------------------------------------------------------

_ORIENTATION_LABELS = [["L", "R"], ["P", "A"], ["I", "S"]]
_READERS = {"slices": "PILReader"}  # other layouts: MONAI picks the reader from the file suffix


def _decision(model: TrainedModel) -> dict[str, Any]:
    """The bundle's step from probabilities to labels as `infer` takes it (`labels_of`): the argmax
    or the model's foreground threshold, or for a region model each region's probability, smaller
    regions overriding."""
    threshold = tuned_threshold([model], model.config.infer.threshold)
    chain = region_chain_of(model)
    if chain is not None:
        cut = 0.5 if threshold is None else float(threshold)
        labels = "0"
        for channel, label in enumerate(chain.adds):
            labels = f"torch.where(p[{channel}:{channel + 1}] > {cut!r}, {label}, {labels})"
        return {"_target_": "Lambdad", "keys": "pred", "func": f"$lambda p: {labels}"}
    if threshold is None:
        return {"_target_": "AsDiscreted", "keys": "pred", "argmax": True}
    return {"_target_": "Lambdad", "keys": "pred",
            "func": f"$lambda p: torch.where(1 - p[:1] > {float(threshold)!r}, p[1:].argmax(0, keepdim=True) + 1, 0)"}


def _clean_up(model: TrainedModel) -> list[dict[str, Any]]:
    """`infer.keep_largest` on the input's grid, as `infer` applies it (face-connected components)."""
    keep = [int(k) for k in model.config.infer.keep_largest]
    if not keep:
        return []
    return [{"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": keep,
             "independent": True, "connectivity": 1}]


def _probabilities(model: TrainedModel) -> str:
    """The bundle's prediction as `infer` makes it: softmax (sigmoid for regions) probabilities,
    averaged over the mirrored copies of `infer.tta` (`segpipe.prediction.mirror_axes`)."""
    activation = "torch.sigmoid(y)" if region_chain_of(model) is not None else "torch.softmax(y, 1)"
    flips = [list(axes) for axes in mirror_axes(int(model.network["spatial_dims"]), model.config.infer.tta)]
    return (f"$lambda x: sum(torch.flip((lambda y: {activation})(@inferer(torch.flip(x, f), @network)), f) "
            f"for f in {flips}) / {len(flips)}")


def bundle_inference_config(model: TrainedModel) -> dict[str, Any]:
    """`configs/inference.json`: segpipe's preprocessing, sliding window (probabilities averaged
    over `infer.tta`'s mirrored copies), argmax (or the model's foreground threshold), inverse,
    `infer.keep_largest`, save.

    The chain is `segpipe.transforms.preprocessing.preprocessing_chain` written out in MONAI
    bundle syntax (no segpipe import at run time), from the model folder's plan.json.
    """
    settings = model.plan["preprocess"]
    icfg = model.config.infer
    load: dict[str, Any] = {"_target_": "LoadImaged", "keys": "image", "image_only": True}
    reader = _READERS.get(str(model.plan.get("layout", "")))
    if reader:
        load["reader"] = reader
    transforms: list[dict[str, Any]] = [
        load,
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32", "track_meta": True},
    ]
    if settings.get("orientation"):
        transforms.append({"_target_": "Orientationd", "keys": "image", "axcodes": settings["orientation"],
                           "labels": _ORIENTATION_LABELS})
    if settings.get("crop_foreground", True):
        transforms.append({"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
                           "select_fn": "$lambda x: (x != 0).any(0, keepdim=True)", "allow_smaller": True})
    transforms.append({"_target_": "NormalizeIntensityd", "keys": "image",
                       "nonzero": bool(settings.get("normalize_nonzero", True)), "channel_wise": True})
    if settings.get("target_spacing"):
        transforms.append({"_target_": "Spacingd", "keys": "image",
                           "pixdim": [float(s) for s in settings["target_spacing"]], "mode": "bilinear"})
    roi = list(icfg.roi_size or patch_size(model))
    return {
        "imports": ["$import os", "$import torch", "$import monai"],
        "bundle_root": ".",
        "model_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "input_image": "",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "output_postfix": "seg",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "cases": "$[@input_image] if isinstance(@input_image, str) else list(@input_image)",
        "network": "$torch.jit.load(@model_path, map_location=@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": transforms},
        "probabilities": _probabilities(model),
        "inferer": {
            "_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": int(icfg.sw_batch_size),
            "overlap": float(icfg.overlap), "mode": icfg.mode,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                _decision(model),
                {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
                 "nearest_interp": True, "to_tensor": True},
                *_clean_up(model),
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
                 "output_postfix": "@output_postfix", "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8",
                 "resample": False, "separate_folder": False, "print_log": True},
            ],
        },
        "predict": "$lambda d: dict(d, pred=@probabilities(d['image'][None].to(@device))[0].cpu())",
        "initialize": ["$torch.set_grad_enabled(False)", "$monai.utils.set_determinism(seed=0)"],
        "run": ["$[@postprocessing(@predict(@preprocessing({'image': c}))) for c in @cases]"],
    }


def bundle_metadata(model: TrainedModel) -> dict[str, Any]:
    """`configs/metadata.json` in MONAI's bundle metadata format."""
    import monai
    import numpy

    from segpipe import __version__

    plan, network = model.plan, model.network
    labels = plan.stored_labels
    modalities = plan.get("modalities") or {}
    channel_def = ({str(i): str(m) for i, m in enumerate(modalities)} if isinstance(modalities, list)
                   else {str(k): str(v) for k, v in dict(modalities).items()})
    dims = int(network["spatial_dims"])
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by segpipe {__version__} from {model.root.name}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"segpipe {network['name']} {dims}D ({plan.get('dataset') or 'segmentation'})",
        "task": "Brain tumour segmentation",
        "description": (
            f"A {dims}D {network['name']} trained with segpipe ({model.checkpoint.name}). Runs without segpipe: "
            "MONAI preprocessing, sliding-window inference of the TorchScript model (averaged over mirrored copies where "
            "segpipe infer mirrors), argmax (or the foreground threshold segpipe validated the model with), inverse "
            "preprocessing onto the input's grid, the largest component of each label segpipe infer keeps it for, "
            "NIfTI output."
        ),
        "authors": "segpipe",
        "copyright": "see the training data's licence",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image", "format": "magnitude", "modality": "MR",
                    "num_channels": int(network["in_channels"]), "spatial_shape": patch_size(model),
                    "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": channel_def,
                }
            },
            "outputs": {
                "pred": {
                    "type": "image", "format": "segmentation", "num_channels": int(network["out_channels"]),
                    "spatial_shape": patch_size(model), "dtype": "float32", "value_range": [],
                    "is_patch_data": True, "channel_def": labels,
                }
            },
        },
        "segpipe": {"network": network, "preprocess": plan["preprocess"], "labels": labels},
    }


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


_LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""

_BUNDLE_README = """# {name}

Exported by `segpipe export --format bundle`. Runs with MONAI alone (no segpipe needed):

```bash
python -m monai.bundle run --config_file {{BUNDLE}}/configs/inference.json \\
    --bundle_root {{BUNDLE}} --input_image /path/to/image.nii.gz --output_dir /path/to/masks
```

Writes `<image name>_seg.nii.gz` (uint8 labels {labels}) on the input image's own voxel grid.
`--input_image` also takes a list of cases: `--input_image "['a.nii.gz', 'b.nii.gz']"`.
"""


def save_bundle(model: TrainedModel, root: Path) -> tuple[float, list[Path]]:
    """Write a MONAI bundle folder (configs/, models/model.pt, docs/README.md)."""
    diff = save_torchscript(model, root / "models" / "model.pt")
    meta = bundle_metadata(model)
    files = [
        root / "models" / "model.pt",
        write_json(root / "configs" / "inference.json", bundle_inference_config(model)),
        write_json(root / "configs" / "metadata.json", meta),
        write_text(root / "configs" / "logging.conf", _LOGGING_CONF),
        write_text(root / "docs" / "README.md", _BUNDLE_README.format(
            name=meta["name"], labels=json.dumps(meta["segpipe"]["labels"]))),
    ]
    return diff, files


def check_file_output(output: str | Path, fmt: str) -> None:
    """Refuse a single-file export's output that names a folder (or ends in a slash) or lacks the format's suffix."""
    suffix = SUFFIXES[fmt]
    path = Path(output)
    if str(output).endswith(("/", os.sep)) or path.is_dir():
        raise SegpipeError(f"{output}: is a folder; --format {fmt} writes one file: name it, e.g. "
                           f"-o {path / ('model' + suffix)}")
    if path.suffix.lower() != suffix:
        raise SegpipeError(f"{output}: --format {fmt} writes a {suffix} file; name the output with that suffix")


def export(model_dir: str | Path, fmt: str, output: str | Path, *, checkpoint: str | None = None,
           overwrite: bool = False) -> ExportResult:
    """Export a model folder's network.

    Args:
        model_dir: the folder `segpipe fit` wrote.
        fmt: "torchscript" (one .pt file), "onnx" (one .onnx file) or "bundle" (a MONAI bundle folder).
        output: the file (or, for a bundle, the folder) to write.
        checkpoint: "best" or "last"; None takes the model folder's infer.checkpoint.
        overwrite: replace an existing output instead of refusing.
    """
    if fmt not in FORMATS:
        raise SegpipeError(f"option --format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in SUFFIXES:
        check_file_output(output, fmt)
    output = Path(output)
    if output.exists() and not overwrite:
        if not (fmt == "bundle" and output.is_dir() and not any(p.name != LOCK_NAME for p in output.iterdir())):
            raise SegpipeError(f"{output}: already exists (use --overwrite to replace it)")
    model = load_model_folder(model_dir, checkpoint)
    model.net.cpu().eval()
    result = ExportResult(format=fmt, output=output, input_shape=[1, int(model.network["in_channels"]), *patch_size(model)])
    if fmt == "torchscript":
        result.max_abs_diff = save_torchscript(model, output)
        result.files = [output]
    elif fmt == "onnx":
        result.max_abs_diff = save_onnx(model, output)
        result.files = [output]
    else:
        result.max_abs_diff, result.files = save_bundle(model, output)
        if model.config.infer.min_component_size > 1:
            result.notes.append(f"infer.min_component_size ({model.config.infer.min_component_size}) is not in the bundle "
                                "(MONAI removes small components only through scikit-image): its masks keep components "
                                "that segpipe infer removes")
    return result

"""Typed configuration: YAML files in configs/, any key overridable as `section.key=value`.

The YAML is read with `yaml.safe_load`, so a config can never run code. An unknown key
or a value of the wrong type is refused with a `SegpipeError` naming the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from segpipe.config_schema import validate
from segpipe.errors import SegpipeError, shown
from segpipe.limits import MAX_YAML_BYTES
from segpipe.parsing import parse_yaml, read_text


@dataclass
class PreprocessConfig:
    """How a raw dataset becomes a prepared one."""

    target_spacing: list[float] | None = None  # None: the median spacing of the dataset
    orientation: str = "RAS"
    crop_foreground: bool = True
    # z-score each channel over its non-zero voxels (True) or the whole image (False); auto: the
    # non-zero voxels where cropping to them removes a quarter or more of the median case (nnU-Net's rule)
    normalize_nonzero: bool | str = "auto"
    folds: int = 5
    seed: int = 0
    patch_size: list[int] | None = None  # None: chosen from the fingerprint
    patch_budget_voxels: int = 128**3  # upper bound on the voxels of an automatic patch
    layout: str | None = None  # None: detected (decathlon, brats, slices, figshare, generic, pairs, dicom)
    label_set: str = "msd"  # BraTS layout: map labels 1/2/4 to "msd" (1 edema, 2 non-enh., 3 enh.) or keep "brats"
    patient_pattern: str | None = None  # slices: regex with (?P<patient>...) on the file name


@dataclass
class ModelConfig:
    """Which network, and its shape."""

    name: str = "unet"
    spatial_dims: int = 3
    filters: int = 16
    depth: int = 4
    norm: str = "instance"
    dropout: float = 0.0
    residual: bool = False
    deep_supervision: bool = False
    stem: str = "plain"  # unet: "plain" (Ronneberger: full-resolution first level) | "strided" (first level at half resolution, cheaper)
    targets: str = "labels"  # labels (softmax over exclusive labels) | regions (sigmoid per nested region of evaluate.regions)


@dataclass
class TrainConfig:
    """The optimisation loop."""

    epochs: int = 50
    iterations_per_epoch: int = 100
    batch_size: int = 2
    samples_per_volume: int = 2
    patch_size: list[int] | None = None  # None: the plan's patch size
    cache_rate: float | str = "auto"  # share of training cases held in memory; auto: those that fit in half the RAM
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.99  # sgd only (Nesterov)
    weight_decay: float = 0.0
    schedule: str = "poly"  # poly | cosine | constant
    grad_clip: float = 12.0  # max gradient norm; 0 disables
    # auto (bf16 where measured faster, else fp32; fp32 in deterministic mode) | fp32 | bf16 (autocast) | fp16 (CUDA)
    precision: str = "auto"
    compile: bool = False  # torch.compile the network
    channels_last: bool = True  # channels-last memory format for network and batches (faster CPU convolutions)
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    include_background: bool = False
    pos_neg_ratio: float = 1.0
    augment: list[str] = field(default_factory=lambda: ["flip", "rotate90", "scale_intensity", "shift_intensity"])
    fold: int = 0
    val_every: int = 1
    early_stopping: int = 0  # validations without improvement before stopping; 0 disables
    max_seconds: float = 0.0  # training-time budget; >0: epochs sized from measured step and validation costs, schedule over elapsed time
    budget_validations: int = 5  # with max_seconds: validations (and checkpoints) to fit within the budget
    warmup: float = 0.05  # with max_seconds: share of the budget over which the learning rate rises linearly
    all_cases: bool = False  # train on every case, no validation fold (best.pt = last.pt)
    # candidate foreground thresholds (infer.threshold), the preferred first: each validation scores
    # them all on the validation patients and its checkpoint keeps the best, which infer applies; []: none
    threshold_grid: list[float] = field(default_factory=list)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms; exact resume
    device: str = "cpu"
    num_workers: int | str = "auto"  # loader processes; auto: none on a CPU, up to 8 on a GPU (runtime/workers.py)
    thread_loader: bool = False  # MONAI ThreadDataLoader instead of worker processes
    threads: int = 0  # 0: leave torch's default
    reuse_memory: bool = True  # CPU: keep freed memory for reuse instead of returning it to the system
    init_from: str | None = None  # model folder whose weights start this run (fit --init-from; pipeline/finetune.py)
    init_lr_scale: float = 1.0  # learning rate of the layers kept from init_from, as a factor of train.lr
    freeze: list[str] = field(default_factory=list)  # kept parts not trained at first: stem, encoder, decoder
    freeze_epochs: int = 0  # epochs that train.freeze holds; 0: the whole run


@dataclass
class InferConfig:
    """Sliding-window inference."""

    roi_size: list[int] | None = None  # None: the training patch size
    overlap: float = 0.5
    mode: str = "gaussian"
    sw_batch_size: int = 2
    device: str = "cpu"
    checkpoint: str = "best"
    # auto (the faster of fp32/bf16 here, fp32 for an fp32-trained model on CPU; fp16/bf16 on CUDA) | fp32 | bf16 | fp16 (CUDA)
    precision: str = "auto"
    threads: int = 0  # torch CPU threads; 0: torch's default
    tta: bool = False  # average over mirrored copies along every spatial axis
    skip_empty: bool = True  # windows holding only background (zeros) are not run through the network
    channels_last: bool = True  # channels-last memory format for the network and windows
    fuse: bool = True  # fold batch norms into convolutions, instance norm + ReLU in one in-place step
    reuse_memory: bool = True  # CPU: keep freed memory for reuse instead of returning it to the system
    keep_largest: list[int] = field(default_factory=list)  # labels reduced to their largest component
    min_component_size: int = 0  # components of any label smaller than this (voxels) are removed
    # foreground where the summed foreground probability (regions: each region's sigmoid) exceeds this;
    # None: the argmax (0.5 for one label). A checkpoint tuned by train.threshold_grid brings its own
    threshold: float | None = None


@dataclass
class EvaluateConfig:
    """Reports: regions (unions of labels) scored besides each label, and patient pooling."""

    # None: the BraTS regions matching the label set (MSD 1/2/3 or BraTS 1/2/4), else none
    regions: dict[str, list[int]] | None = None
    # regex with a (?P<patient>...) group, to pool mask files by patient without a dataset
    patient_pattern: str | None = None
    # evaluate --lesion-wise (BraTS 2023): dilation iterations that group reference components,
    # and the largest reference lesion (mm3; mm2 for slices) left out of the lesion-wise scores
    lesion_dilation: int = 3
    lesion_min_volume: float = 50.0
    # report.html's slice viewer: the most slices shown per patient (0: no viewer)
    viewer_slices: int = 16


@dataclass
class Config:
    """The whole configuration, one section per pipeline stage."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-serialisable)."""
        return dataclasses.asdict(self)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where lossless."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except SegpipeError as exc:
                errors.append(exc)
        raise SegpipeError(f"config key '{key}': expected {_type_name(tp)}, got {shown(value)}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise SegpipeError(f"config key '{key}': expected a list, got {shown(value)}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SegpipeError(f"config key '{key}': expected a mapping, got {shown(value)}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise SegpipeError(f"config key '{key}': {len(str(value))}-digit number, too large for a float") from None
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    raise SegpipeError(f"config key '{key}': expected {_type_name(tp)}, got {shown(value)}")


def _section_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _apply(cfg: Config, section: str, key: str, value: Any, source: str) -> None:
    sections = _section_types(Config)
    if section not in sections:
        raise SegpipeError(
            f"{source}: unknown config section '{section}' (known: {', '.join(sections)})"
        )
    obj = getattr(cfg, section)
    hints = _section_types(type(obj))
    if key not in hints:
        raise SegpipeError(
            f"{source}: unknown config key '{section}.{key}' (known: {', '.join(hints)})"
        )
    try:
        coerced = _coerce(value, hints[key], f"{section}.{key}")
    except SegpipeError as exc:  # name the file (or the --set override) the value came from
        raise SegpipeError(f"{source}: {exc}") from None
    setattr(obj, key, coerced)


def merge_dict(cfg: Config, data: Any, source: str) -> Config:
    """Apply a nested mapping `{section: {key: value}}` onto `cfg`."""
    if data is None:
        return cfg
    if not isinstance(data, dict):
        raise SegpipeError(f"{source}: a config must be a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise SegpipeError(f"{source}: config section '{section}' must be a mapping")
        for key, value in values.items():
            _apply(cfg, str(section), str(key), value, source)
    return validate(cfg, source)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split `section.key=value` and parse the value as YAML (safely)."""
    if "=" not in text:
        raise SegpipeError(f"override '{text}': expected section.key=value")
    lhs, raw = text.split("=", 1)
    if lhs.count(".") != 1:
        raise SegpipeError(f"override '{text}': the key must be section.key, e.g. train.epochs=10")
    section, key = lhs.split(".")
    value = parse_yaml(raw, f"override '{text}'") if raw.strip() else None
    return section.strip(), key.strip(), value


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file (if any), then `section.key=value` overrides."""
    cfg = Config()
    if path is not None:
        path = Path(path)
        merge_dict(cfg, parse_yaml(read_text(path, "config", MAX_YAML_BYTES), path), str(path))
    given = {}
    for text in overrides:
        section, key, value = parse_override(text)
        _apply(cfg, section, key, value, f"override '{text}'")
        given[f"{section}.{key}"] = f"option --set {text}"
    return validate(cfg, f"config {path}" if path is not None else "config", given)


def config_from_dict(data: dict[str, Any], source: str) -> Config:
    """Rebuild a Config from its `to_dict()` form (e.g. a model folder's config.yaml)."""
    return merge_dict(Config(), data, source)

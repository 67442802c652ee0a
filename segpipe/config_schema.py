"""The value rules of every config key, checked whenever a config is loaded or merged.

`segpipe.config` checks types; this module checks meaning: ranges, finite numbers, ranks
that match `model.spatial_dims`, choices, regular expressions that compile, device names.
Each violation is one `SegpipeError` line naming the key (and the file or override).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from segpipe.errors import SegpipeError, shown
from segpipe.limits import MAX_EPOCH_ITERATIONS, MAX_EPOCHS, MAX_LABEL_VALUE, MAX_ROI_SIDE, MAX_THREADS

Rule = Callable[[Any, Any], str | None]  # (value, whole config) -> problem or None

DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NETWORK_NAMES = ("unet", "linknet")  # segpipe.networks.registry.NETWORKS, named without importing torch


def _bound(value: float) -> str:
    """A range's end as written: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _num(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False) -> Rule:
    def rule(value: Any, _cfg: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        if low is not None and (value <= low if low_open else value < low):
            return f"must be {'>' if low_open else '>='} {_bound(low)}, got {value}"
        if high is not None and (value >= high if high_open else value > high):
            return f"must be {'<' if high_open else '<='} {_bound(high)}, got {value}"
        return None

    return rule


def _choice(*options: object) -> Rule:
    return lambda v, _c: None if v is None or v in options else f"must be one of {', '.join(map(str, options))}, got {shown(v)}"


def _auto_or(rule: Rule) -> Rule:
    """"auto", or a value that `rule` accepts."""
    return lambda v, c: None if v == "auto" else (f"must be auto or a number, got {shown(v)}" if isinstance(v, str) else rule(v, c))


def _sides(rank_of: Callable[[Any], int | tuple[int, ...]]) -> Rule:
    """A list of positive voxel counts, one per spatial axis, each at most MAX_ROI_SIDE."""

    def rule(value: Any, cfg: Any) -> str | None:
        if value is None:
            return None
        ranks = rank_of(cfg)
        ranks = ranks if isinstance(ranks, tuple) else (ranks,)
        if len(value) not in ranks:
            return f"has {len(value)} values {value}, expected {' or '.join(map(str, ranks))} (model.spatial_dims)"
        bad = [v for v in value if not 1 <= v <= MAX_ROI_SIDE]
        return f"sides must be between 1 and {MAX_ROI_SIDE} voxels, got {value}" if bad else None

    return rule


def _spacing(value: Any, _cfg: Any) -> str | None:
    if value is None:
        return None
    if len(value) not in (2, 3):
        return f"has {len(value)} values, expected 2 or 3"
    if not all(math.isfinite(v) and v > 0 for v in value):
        return f"spacings must be finite and > 0 mm, got {value}"
    return None


def _regex(need_patient: bool) -> Rule:
    def rule(value: Any, _cfg: Any) -> str | None:
        if value is None:
            return None
        try:
            pattern = re.compile(value)
        except re.error as exc:
            return f"{shown(value)} is not a valid regular expression ({exc})"
        if need_patient and "patient" not in pattern.groupindex:
            return f"{shown(value)} needs a group named patient, e.g. (?P<patient>BRATS_\\d+)"
        return None

    return rule


def _orientation(value: Any, _cfg: Any) -> str | None:
    codes = str(value)  # upper case, as MONAI's Orientationd takes them
    if len(codes) == 3 and all(sum(c in pair for c in codes) == 1 for pair in ("LR", "AP", "SI")):
        return None
    return f"must be three axis codes, one of L/R, A/P and S/I each (e.g. RAS), got {shown(value)}"


def _device(value: Any, _cfg: Any) -> str | None:
    return None if DEVICE_RE.match(str(value)) else f"must be cpu, cuda, cuda:N or mps, got {shown(value)}"


def _labels(value: Any, _cfg: Any) -> str | None:
    values = value if isinstance(value, list) else [v for members in (value or {}).values() for v in members]
    bad = [v for v in values if not 0 <= v <= MAX_LABEL_VALUE]
    return f"label values must be between 0 and {MAX_LABEL_VALUE}, got {bad[0]}" if bad else None


def _region_names(value: Any, cfg: Any) -> str | None:
    """Region names become report columns (`dice_<name>`): letters, digits, `_` and `-`."""
    bad = [name for name in value or {} if not re.fullmatch(r"[\w-]{1,64}", str(name))]
    if bad:
        return (f"region name {str(bad[0])[:80]!r} must be 1 to 64 letters, digits, '_' or '-' "
                "(it names report columns)")
    return _labels(value, cfg)


def _fractions(value: Any, _cfg: Any) -> str | None:
    bad = [v for v in value or [] if not 0 < v < 1]
    return f"values must lie between 0 and 1 (exclusive), got {bad}" if bad else None


def _unique(value: Any, _cfg: Any) -> str | None:
    twice = sorted(v for v, n in Counter(repr(v) for v in value or []).items() if n > 1)
    return f"lists {', '.join(twice)} more than once" if twice else None


def _dims(cfg: Any) -> int:
    return cfg.model.spatial_dims


RULES: dict[str, Rule] = {
    "preprocess.target_spacing": _spacing,
    "preprocess.orientation": _orientation,
    "preprocess.folds": _num(2, 1000),
    "preprocess.seed": _num(0, 2**32 - 1),
    "preprocess.patch_size": _sides(lambda _c: (2, 3)),
    "preprocess.patch_budget_voxels": _num(1, float(MAX_ROI_SIDE) ** 3),
    "preprocess.layout": _choice("decathlon", "brats", "slices", "figshare", "generic", "pairs", "dicom"),
    "preprocess.label_set": _choice("msd", "brats"),
    "preprocess.normalize_nonzero": _choice(True, False, "auto"),
    "preprocess.patient_pattern": _regex(need_patient=False),
    "model.name": _choice(*NETWORK_NAMES),
    "model.norm": _choice("batch", "instance"),
    "model.stem": _choice("plain", "strided"),
    "model.spatial_dims": _choice(2, 3),
    "model.filters": _num(1, 4096),
    "model.depth": _num(1, 10),
    "model.dropout": _num(0, 1, high_open=True),
    "train.epochs": _num(1, MAX_EPOCHS),
    "train.iterations_per_epoch": _num(1, MAX_EPOCH_ITERATIONS),
    "train.batch_size": _num(1, MAX_THREADS),
    "train.samples_per_volume": _num(1, MAX_THREADS),
    "train.patch_size": _sides(_dims),
    "train.cache_rate": _auto_or(_num(0, 1)),
    "train.optimizer": _choice("adam", "adamw", "sgd"),
    "train.lr": _num(0, 10, low_open=True),
    "train.momentum": _num(0, 1),
    "train.weight_decay": _num(0),
    "train.schedule": _choice("poly", "cosine", "constant"),
    "train.grad_clip": _num(0),
    "train.precision": _choice(*PRECISIONS),
    "train.lambda_dice": _num(0),
    "train.lambda_ce": _num(0),
    "train.pos_neg_ratio": _num(0),
    "train.fold": _num(0),
    "train.val_every": _num(1),
    "train.early_stopping": _num(0),
    "train.max_seconds": _num(0, 366 * 86400),
    "train.seed": _num(0, 2**32 - 1),
    "train.device": _device,
    "train.num_workers": _auto_or(_num(0, MAX_THREADS)),
    "train.threads": _num(0, MAX_THREADS),
    "train.budget_validations": _num(1),
    "train.warmup": _num(0, 1, high_open=True),
    "train.init_lr_scale": _num(0),
    "train.freeze_epochs": _num(0),
    "model.targets": _choice("labels", "regions"),
    "evaluate.lesion_dilation": _num(0, 100),
    "evaluate.lesion_min_volume": _num(0),
    "evaluate.viewer_slices": _num(0, 10000),
    "infer.roi_size": _sides(_dims),
    "infer.overlap": _num(0, 1, high_open=True),
    "infer.mode": _choice("gaussian", "constant"),
    "infer.sw_batch_size": _num(1, MAX_THREADS),
    "infer.device": _device,
    "infer.checkpoint": _choice("best", "last"),
    "infer.precision": _choice(*PRECISIONS),
    "infer.threads": _num(0, MAX_THREADS),
    "infer.keep_largest": _labels,
    "infer.min_component_size": _num(0),
    "infer.threshold": _num(0, 1, low_open=True, high_open=True),
    "train.threshold_grid": _fractions,
    "train.augment": _unique,
    "evaluate.regions": _region_names,
    "evaluate.patient_pattern": _regex(need_patient=True),
}


def validate(cfg: Any, source: str, given: dict[str, str] | None = None) -> Any:
    """Check every key with a rule; return `cfg`. `given` names where a key's value came from
    when not from `source` (an override on the command line).

    Raises:
        SegpipeError: `<source>: config key 'section.key': <what is wrong>` for the first violation.
    """
    given = given or {}
    for key, rule in RULES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        problem = rule(value, cfg)
        if problem:
            raise SegpipeError(f"{given.get(key, source)}: config key '{key}' {problem}")
    if cfg.train.lambda_dice == 0 and cfg.train.lambda_ce == 0:
        where = given.get("train.lambda_dice") or given.get("train.lambda_ce") or source
        raise SegpipeError(f"{where}: config keys 'train.lambda_dice' and 'train.lambda_ce' are both 0 (nothing to learn)")
    return cfg


def check_device(name: str, key: str) -> None:
    """Refuse a device this machine does not have (`cuda` without CUDA, a missing GPU index).

    Raises:
        SegpipeError: naming the key or option and the devices available.
    """
    if not DEVICE_RE.match(str(name)):
        raise SegpipeError(f"{key}: must be cpu, cuda, cuda:N or mps, got {shown(name)}")
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SegpipeError(f"{key}: {name!r} asked for, but CUDA is not available on this machine; use cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SegpipeError(f"{key}: {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SegpipeError(f"{key}: 'mps' asked for, but MPS is not available on this machine; use cpu")
    elif name.startswith("xpu") and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise SegpipeError(f"{key}: {name!r} asked for, but no XPU is available on this machine; use cpu")

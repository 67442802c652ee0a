"""Checkpoints: saved atomically, loaded with `weights_only=True`, checked against the model."""

from __future__ import annotations

import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.atomic import write_with
from segpipe.errors import SegpipeError

FORMAT = "segpipe-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """Random states of Python, NumPy and torch, as tensors and plain data only."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint to a temporary file, then rename it onto `path`."""
    payload = {"format": FORMAT, **payload}
    write_with(path, lambda tmp: torch.save(payload, tmp))


KEYS: dict[str, type | tuple[type, ...]] = {"model": dict}
TYPED: dict[str, type | tuple[type, ...]] = {"network": dict, "labels": dict, "threshold": (int, float),
                                             "split": dict}  # checked where present
RESUME_KEYS: dict[str, type | tuple[type, ...]] = {
    "optimizer": dict, "scheduler": dict, "epoch": int, "best_metric": (int, float), "best_epoch": int, "rng": dict,
}


def check_keys(path: Path, data: dict[str, Any], keys: dict[str, type | tuple[type, ...]]) -> None:
    """Refuse a checkpoint lacking a key or holding one of the wrong type, naming it."""
    for key, kind in keys.items():
        if key not in data:
            raise SegpipeError(f"{path}: checkpoint lacks the key '{key}' (damaged, or not written by segpipe fit)")
        value = data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise SegpipeError(f"{path}: checkpoint key '{key}' holds {type(value).__name__}, expected {names}")


def load_checkpoint(path: str | Path, *, resume: bool = False) -> dict[str, Any]:
    """Load a segpipe checkpoint safely (no code is executed) and check its keys (with
    `resume`, also the training state's).

    Raises:
        SegpipeError: missing, truncated or foreign files, pickles carrying code, missing or
            mistyped keys.
    """
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"{path}: checkpoint not found")
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # no link out of the model folder
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a foreign pickle protocol: the error says it all
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise SegpipeError(
            f"{path}: refused to load: the checkpoint holds more than weights ({_unsafe_reason(exc)}); "
            "segpipe loads only tensors and plain data, so a checkpoint can never run code"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise SegpipeError(f"{path}: not a readable checkpoint ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SegpipeError(f"{path}: not a segpipe checkpoint")
    check_keys(path, data, {**KEYS, **{k: v for k, v in TYPED.items() if k in data}, **(RESUME_KEYS if resume else {})})
    broken = non_finite(data["model"])
    if broken:
        raise SegpipeError(f"{path}: checkpoint holds non-finite weights ({broken}); the training that wrote it "
                           "diverged, so its masks would be empty or noise")
    return data


def non_finite(state: dict[str, Any]) -> str:
    """'' when every floating tensor of a state dict is finite, else the first bad one's name and count."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                return f"{bad} of {value.numel()} values of '{name}'"
    return ""


def _unsafe_reason(exc: Exception) -> str:
    """The part of torch's weights-only refusal that says what was found (not its advice to
    load with `weights_only=False`, which would run the code)."""
    text = str(exc)
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text, re.IGNORECASE)
    if found:
        return f"a reference to {found.group(1)}"
    found = re.search(r"Unsupported (?:global|operand)[^\n.]*", text, re.IGNORECASE)
    if found:
        return found.group(0).strip()
    return "objects other than tensors and plain data"


def check_compatible(path: Path, checkpoint: dict[str, Any], network: dict[str, Any], labels: dict[str, str]) -> None:
    """Refuse a checkpoint made for another architecture or label set, saying which."""
    theirs = checkpoint.get("network", {})
    for key in ("name", "spatial_dims", "in_channels", "out_channels", "options"):
        if theirs.get(key) != network.get(key):
            raise SegpipeError(
                f"{path}: checkpoint was made for another architecture "
                f"({key}: checkpoint {theirs.get(key)!r}, model folder {network.get(key)!r})"
            )
    if checkpoint.get("labels") != labels:
        raise SegpipeError(
            f"{path}: checkpoint was made for another label set "
            f"(checkpoint {checkpoint.get('labels')!r}, model folder {labels!r})"
        )

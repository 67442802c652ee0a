"""Reading a model folder: everything `infer` needs to rebuild and run the network."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from segpipe.artifacts.checkpoints import check_compatible, load_checkpoint
from segpipe.config import Config, config_from_dict
from segpipe.errors import SegpipeError
from segpipe.limits import check_label_value
from segpipe.networks.spec import build_from_spec


@dataclass
class ModelFolder:
    """A trained model and the facts it was trained with."""

    root: Path
    config: Config
    plan: dict[str, Any]
    network: dict[str, Any]
    net: nn.Module
    checkpoint: Path


def _int(value: Any, source: Path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SegpipeError(f"{source}: label value {value!r} is not an integer") from None


def _read(path: Path, loader: Any) -> Any:
    if not path.is_file():
        raise SegpipeError(f"{path}: missing; {path.parent} is not a segpipe model folder (made by `segpipe fit`)")
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # no link out of the model folder
    try:
        return loader(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError):
        raise SegpipeError(f"{path}: not valid {path.suffix.lstrip('.').upper()}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping read safely (tags that would build Python objects are refused)."""
    data = _read(path, yaml.safe_load)
    if not isinstance(data, dict):
        raise SegpipeError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def read_model_config(root: str | Path) -> tuple[Config, dict[str, Any]]:
    """The resolved config and the plan of a model folder, without loading weights."""
    root = Path(root)
    config = config_from_dict(read_yaml(root / "config.yaml"), str(root / "config.yaml"))
    plan = _read(root / "plan.json", json.loads)
    if not isinstance(plan, dict) or not isinstance(plan.get("labels"), dict):
        raise SegpipeError(f"{root / 'plan.json'}: not a segpipe plan (no 'labels' mapping)")
    for value in plan["labels"]:
        check_label_value(_int(value, root / "plan.json"), root / "plan.json")
    return config, plan


def load_model_folder(root: str | Path, checkpoint: str | None = None) -> ModelFolder:
    """Rebuild the network of a model folder and load its `best` (or `last`) weights.

    Args:
        root: the folder `segpipe fit` wrote.
        checkpoint: "best" or "last"; None takes the folder's config (infer.checkpoint).
    """
    root = Path(root)
    if not root.is_dir():
        raise SegpipeError(f"{root}: no such model folder")
    config, plan = read_model_config(root)
    network = _read(root / "network.json", json.loads)
    if not isinstance(network, dict):
        raise SegpipeError(f"{root / 'network.json'}: not a network description (expected a JSON object)")
    checkpoint = checkpoint or config.infer.checkpoint
    if checkpoint not in ("best", "last"):
        raise SegpipeError(f"option infer.checkpoint: expected 'best' or 'last', got {checkpoint!r}")
    path = root / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.is_file():
        path = root / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    check_compatible(path, state, network, {str(k): v for k, v in plan["labels"].items()})
    net = build_from_spec(network)
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise SegpipeError(f"{path}: weights do not fit the network ({str(exc).splitlines()[0]})") from None
    net.eval()
    return ModelFolder(root=root, config=config, plan=plan, network=network, net=net, checkpoint=path)

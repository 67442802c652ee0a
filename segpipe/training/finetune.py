"""Fine-tuning: start a run from another model folder's weights (`segpipe fit --init-from`).

Every tensor whose name and shape match is copied from the source's best checkpoint.
The layers that read the input (the stem) are re-initialised when the channel counts
differ, the layers that write the classes (the head) when the label sets differ, and a
tensor whose shape differs for any other reason keeps its fresh initialisation. The model
folder records the source in `init.json`; `--resume` reads it back and never reloads the
source. Kept layers can train at a lower learning rate (`train.init_lr_scale`) and parts
of them can stay frozen for the first epochs (`train.freeze`, `train.freeze_epochs`).
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segpipe.artifacts.checkpoints import load_checkpoint
from segpipe.artifacts.files import read_json
from segpipe.atomic import write_json
from segpipe.config import TrainConfig
from segpipe.errors import SegpipeError
from segpipe.networks.registry import NETWORKS

INIT_FILE = "init.json"

# Module-name prefixes of each network's parts. "stem": the layers that read the input
# channels; "head": the layers that write the classes; "encoder"/"decoder": what
# train.freeze can hold.
PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "unet": {
        "stem": ("stem.conv1.", "stem.shortcut.", "stem.0."),  # plain stem; strided stem (model.stem)
        "head": ("head.", "aux_heads."),
        "encoder": ("stem.", "encoder."),
        "decoder": ("decoder.", "full_resolution."),
    },
    "linknet": {
        "stem": ("initial.0.",),
        "head": ("final.4.",),
        "encoder": ("initial.", "encoder."),
        "decoder": ("decoder.", "final."),
    },
}
FREEZABLE = ("stem", "encoder", "decoder")
# Options that change no tensor's meaning: a source trained with them still fits.
_FREE_OPTIONS = ("dropout", "deep_supervision")


def check_options(t: TrainConfig, network: str) -> None:
    """Refuse fine-tuning keys that cannot work, in one line naming the key."""
    unknown = [p for p in t.freeze if p not in FREEZABLE]
    if unknown:
        raise SegpipeError(f"config key 'train.freeze': unknown part {unknown[0]!r} (known: {', '.join(FREEZABLE)})")
    if t.freeze and not t.init_from:
        raise SegpipeError("config key 'train.freeze': freezes kept layers, so it needs a source (--init-from / train.init_from)")
    if t.freeze_epochs < 0:
        raise SegpipeError(f"config key 'train.freeze_epochs': expected 0 (the whole run) or more, got {t.freeze_epochs}")
    if not t.init_lr_scale > 0:
        raise SegpipeError(f"config key 'train.init_lr_scale': expected a positive factor, got {t.init_lr_scale}")
    if t.init_from and network not in PARTS:
        raise SegpipeError(f"config key 'train.init_from': fine-tuning does not know the parts of network {network!r}")


def _options(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's shape options, with the network's defaults for those an older spec lacks."""
    defaults = {}
    if spec.get("name") in NETWORKS:
        params = inspect.signature(NETWORKS[spec["name"]].__init__).parameters
        defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **spec.get("options", {})}
    return {k: v for k, v in sorted(merged.items()) if k not in _FREE_OPTIONS}


def _describe_network(spec: dict[str, Any]) -> str:
    options = " ".join(f"{k}={v}" for k, v in _options(spec).items())
    return f"{spec.get('name')} {spec.get('spatial_dims')}D {options}".strip()


def _same_architecture(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("name"), a.get("spatial_dims"), _options(a)) == (b.get("name"), b.get("spatial_dims"), _options(b))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_checkpoint(source: Path) -> Path:
    if not (source / "network.json").is_file():
        raise SegpipeError(f"{source}: not a segpipe model folder (no network.json); --init-from needs a folder made by `segpipe fit`")
    for name in ("best.pt", "last.pt"):
        path = source / "checkpoints" / name
        if path.is_file():
            return path
    raise SegpipeError(f"{source / 'checkpoints' / 'best.pt'}: not found; the source model has no checkpoint to start from")


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return key.startswith(prefixes)


def summarize(keys: dict[str, str]) -> dict[str, list[str]]:
    """Group tensor names by status into the largest modules whose tensors share it.

    Args:
        keys: tensor name -> status ("kept" or a re-initialisation reason).

    Returns:
        status -> module names, e.g. {"kept": ["encoder", "decoder"], ...}.
    """
    out: dict[str, list[str]] = {}

    def walk(prefix: str, names: list[str]) -> None:
        statuses = {keys[n] for n in names}
        if len(statuses) == 1 and prefix:
            out.setdefault(statuses.pop(), []).append(prefix.rstrip("."))
            return
        children: dict[str, list[str]] = {}
        for n in names:
            part = n[len(prefix):].split(".", 1)[0]
            children.setdefault(part, []).append(n)
        for part, group in children.items():
            if group == [prefix + part]:  # a tensor, not a module
                out.setdefault(keys[group[0]], []).append(group[0])
            else:
                walk(prefix + part + ".", group)

    walk("", list(keys))
    return out


def note(record: dict[str, Any]) -> str:
    """The one-line summary of what a run took from its source."""
    groups = summarize({k: "kept" for k in record["kept"]} | record["reinitialised"])
    parts = [f"kept {', '.join(groups.pop('kept'))}"] if "kept" in groups else ["kept nothing"]
    parts += [f"re-initialised {', '.join(names)} ({reason})" for reason, names in groups.items()]
    return f"initialised from {record['source']}: " + "; ".join(parts)


def load_source(model: nn.Module, spec: dict[str, Any], labels: dict[str, str], source: str | Path) -> dict[str, Any]:
    """Copy the matching tensors of `source`'s best checkpoint into `model`.

    Args:
        model: the freshly initialised network of this run.
        spec: its network spec (network.json).
        labels: this run's label set (plan.json "labels").
        source: the model folder to start from.

    Returns:
        The provenance record written to init.json.

    Raises:
        SegpipeError: a missing or unsafe source, or another architecture.
    """
    source = Path(source).resolve()
    path = _source_checkpoint(source)
    state = load_checkpoint(path)
    theirs = state.get("network") or read_json(source / "network.json", "the source model has no network description")
    if not _same_architecture(theirs, spec):
        raise SegpipeError(
            f"{source}: --init-from needs the same architecture: the source is {_describe_network(theirs)}, "
            f"this run is {_describe_network(spec)} (set this run's model.* keys to the source's)"
        )
    parts = PARTS[spec["name"]]
    forced: dict[tuple[str, ...], str] = {}
    if theirs.get("in_channels") != spec["in_channels"]:
        forced[parts["stem"]] = f"{theirs.get('in_channels')} input channels in the source, {spec['in_channels']} here"
    source_labels = state.get("labels", {})
    if source_labels != labels:
        forced[parts["head"]] = f"label sets differ: source {_labels(source_labels)}, here {_labels(labels)}"
    weights: dict[str, torch.Tensor] = state["model"]
    own = model.state_dict()
    kept, reinit = [], {}
    for key, tensor in own.items():
        reason = next((why for prefixes, why in forced.items() if _under(key, prefixes)), None)
        if reason is None and key not in weights:
            reason = "not in the source"
        elif reason is None and weights[key].shape != tensor.shape:
            reason = "shape differs"
        if reason is None:
            kept.append(key)
        else:
            reinit[key] = reason
    model.load_state_dict({k: weights[k] for k in kept}, strict=False)
    return {
        "source": str(source),
        "checkpoint": str(path),
        "sha256": _sha256(path),
        "source_epoch": int(state.get("epoch", -1)) + 1,
        "source_network": theirs,
        "source_labels": source_labels,
        "kept": kept,
        "reinitialised": reinit,
    }


def _labels(labels: dict[str, str]) -> str:
    return "/".join(str(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[0])) if str(k) != "0") or "none"


@dataclass
class FineTune:
    """What a run took from its source, and how kept layers train.

    An instance without a record (no `train.init_from`) changes nothing.
    """

    record: dict[str, Any] | None = None
    lr_scale: float = 1.0
    freeze: tuple[str, ...] = ()
    freeze_epochs: int = 0
    frozen: list[str] = field(default_factory=list)

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: new layers at `lr`, kept layers at `lr * train.init_lr_scale`."""
        kept = set(self.record["kept"]) if self.record else set()
        new = [p for n, p in model.named_parameters() if n not in kept]
        old = [p for n, p in model.named_parameters() if n in kept]
        groups = [{"params": new, "lr": lr, "name": "new"}, {"params": old, "lr": lr * self.lr_scale, "name": "kept"}]
        return [g for g in groups if g["params"]]

    def apply_freeze(self, model: nn.Module, epoch: int) -> bool:
        """Freeze (or unfreeze) the kept layers of `train.freeze` for 0-based `epoch`.

        Returns True at the epoch where they are unfrozen.
        """
        if not self.frozen:
            return False
        hold = self.freeze_epochs == 0 or epoch < self.freeze_epochs
        names = set(self.frozen)
        for name, param in model.named_parameters():
            if name in names:
                param.requires_grad_(not hold)
        return not hold and epoch == self.freeze_epochs


def _read_record(path: Path) -> dict[str, Any]:
    """init.json as `prepare` wrote it: the source's path and the names of the layers it kept."""
    record = read_json(path, "")
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        raise SegpipeError(f"{path}: not a fine-tuning record (expected an object with 'source', a path)")
    kept = record.get("kept")
    if not isinstance(kept, list) or not all(isinstance(name, str) for name in kept):
        raise SegpipeError(f"{path}: 'kept' must be a list of layer names")
    return record


def prepare(model: nn.Module, t: TrainConfig, spec: dict[str, Any], labels: dict[str, str], model_dir: Path,
            *, resume: bool, write: bool, distributed: bool) -> FineTune:
    """Load the source of `train.init_from` into `model` (or, on resume, read init.json).

    Args:
        model: this run's network, freshly built.
        t: the train config (init_from, init_lr_scale, freeze, freeze_epochs).
        spec: the network spec of this run.
        labels: this run's label set.
        model_dir: this run's model folder (init.json is written there).
        resume: continue a run: the weights come from last.pt, the record from init.json.
        write: whether this process writes files (rank 0).
        distributed: running under torchrun.
    """
    if not t.init_from:
        return FineTune()
    if t.freeze and distributed:
        raise SegpipeError("config key 'train.freeze': not supported under torchrun yet; train without it or in one process")
    init_file = model_dir / INIT_FILE
    if resume:
        if not init_file.is_file():
            raise SegpipeError(f"{init_file}: missing; cannot tell which layers {model_dir} kept from train.init_from")
        record = _read_record(init_file)
        if Path(t.init_from).resolve() != Path(record["source"]):
            raise SegpipeError(
                f"option --init-from: {model_dir} was started from {record['source']}; --resume continues that run "
                f"(drop --init-from, or start a new --output)"
            )
    else:
        record = load_source(model, spec, labels, t.init_from)
        record["note"] = note(record)
        if write:
            write_json(init_file, record)
    kept = set(record["kept"])
    prefixes = tuple(p for part in t.freeze for p in PARTS[spec["name"]][part])
    frozen = [n for n, _ in model.named_parameters() if n in kept and n.startswith(prefixes)]
    return FineTune(record, t.init_lr_scale, tuple(t.freeze), t.freeze_epochs, frozen)

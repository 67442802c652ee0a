"""The model folder `segpipe fit` writes: config.yaml, plan.json, network.json, checkpoints/.

`ModelFolder` reads the facts without the weights; `ModelFolder.load` rebuilds the network
(`TrainedModel`), which is everything `infer` and `export` need. A folder of `fold_<k>/`
model folders (from `fit --fold all`) is resolved by `fold_folders`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from segpipe.artifacts.checkpoints import check_compatible, load_checkpoint
from segpipe.artifacts.files import read_json, read_table, read_yaml
from segpipe.artifacts.plan import Plan
from segpipe.config import Config, config_from_dict
from segpipe.data.paths import existing_folder
from segpipe.errors import SegpipeError
from segpipe.networks.spec import build_from_spec
from segpipe.transforms.regions import RegionChain, region_chain


def _not_a_model_folder(root: Path) -> str:
    return f"{root} is not a segpipe model folder (made by `segpipe fit`)"


def read_config(path: Path) -> dict[str, Any]:
    """A model folder's config.yaml as a mapping, read safely (tags that would build Python objects are refused)."""
    data = read_yaml(path, _not_a_model_folder(path.parent))
    if not isinstance(data, dict):
        raise SegpipeError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")
    return data


@dataclass(frozen=True)
class ModelFolder:
    """A model folder's resolved config and plan (no weights loaded)."""

    root: Path
    config: Config
    plan: Plan

    @classmethod
    def open(cls, root: str | Path) -> ModelFolder:
        """Read config.yaml and plan.json of a model folder."""
        root = Path(root)
        missing = _not_a_model_folder(root)
        config = config_from_dict(read_config(root / "config.yaml"), str(root / "config.yaml"))
        return cls(root, config, Plan.from_dict(read_json(root / "plan.json", missing), root / "plan.json"))

    def network_spec(self) -> dict[str, Any]:
        """network.json: the architecture as plain data."""
        path = self.root / "network.json"
        network = read_json(path, _not_a_model_folder(self.root))
        if not isinstance(network, dict):
            raise SegpipeError(f"{path}: not a network description (expected a JSON object)")
        return network

    def checkpoint_path(self, checkpoint: str | None = None) -> Path:
        """checkpoints/best.pt (or last.pt when no best was kept), or checkpoints/last.pt.

        Args:
            checkpoint: "best" or "last"; None takes the folder's config (infer.checkpoint).
        """
        checkpoint = checkpoint or self.config.infer.checkpoint
        if checkpoint not in ("best", "last"):
            raise SegpipeError(f"option infer.checkpoint: expected 'best' or 'last', got {checkpoint!r}")
        path = self.root / "checkpoints" / f"{checkpoint}.pt"
        if checkpoint == "best" and not path.is_file():
            path = self.root / "checkpoints" / "last.pt"
        return path

    def validated(self) -> bool:
        """Whether metrics.csv records a validation Dice (then fit kept a best.pt)."""
        path = self.root / "metrics.csv"
        if not path.is_file():
            return False
        try:
            table = read_table(path)
        except SegpipeError:  # infer does not need the table; a damaged one tells nothing of best.pt
            return False
        return "val_dice_mean" in table and bool(table["val_dice_mean"].notna().any())

    def _fallback(self, wanted: str | None, path: Path, state: dict[str, Any]) -> str | None:
        """A warning when best.pt was asked for but is missing although the model was validated."""
        if (wanted or self.config.infer.checkpoint) != "best" or path.name != "last.pt" or not self.validated():
            return None
        epoch = state.get("epoch")
        at = f" (epoch {epoch + 1})" if isinstance(epoch, int) else ""  # checkpoints count from 0, metrics.csv from 1
        return f"{path.parent / 'best.pt'}: missing although metrics.csv shows validation; using last.pt{at} instead"

    def load(self, checkpoint: str | None = None) -> TrainedModel:
        """Rebuild the network and load its `best` (or `last`) weights, in eval mode."""
        network = self.network_spec()
        path = self.checkpoint_path(checkpoint)
        state = load_checkpoint(path)
        check_compatible(path, state, network, self.plan.stored_labels)
        net = build_from_spec(network)
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise SegpipeError(f"{path}: weights do not fit the network ({str(exc).splitlines()[0]})") from None
        net.eval()
        threshold = state.get("threshold")
        if threshold is not None and not 0 < threshold < 1:
            raise SegpipeError(f"{path}: threshold {threshold} is not between 0 and 1")
        return TrainedModel(self, network, net, path, None if threshold is None else float(threshold),
                            self._fallback(checkpoint, path, state))


@dataclass
class TrainedModel:
    """A model folder with its network rebuilt and its weights loaded."""

    folder: ModelFolder
    network: dict[str, Any]
    net: nn.Module
    checkpoint: Path
    threshold: float | None = None  # chosen on the validation patients (train.threshold_grid), else None
    warning: str | None = None  # why these are not the weights asked for (a missing best.pt)

    @property
    def root(self) -> Path:
        return self.folder.root

    @property
    def config(self) -> Config:
        return self.folder.config

    @property
    def plan(self) -> Plan:
        return self.folder.plan


def tuned_threshold(models: list[TrainedModel], configured: float | None) -> float | None:
    """The foreground threshold the checkpoints were validated with (train.threshold_grid), their
    mean for an ensemble of folds; `configured` (infer.threshold) when none carries one."""
    tuned = [m.threshold for m in models if m.threshold is not None]
    return round(sum(tuned) / len(tuned), 4) if tuned else configured


def region_chain_of(model: TrainedModel) -> RegionChain | None:
    """The nested regions a model predicts (model.targets: regions, as fit recorded them), else None."""
    if model.config.model.targets != "regions":
        return None
    return region_chain(model.config.evaluate.regions or {}, model.plan.label_ids)


def is_model_folder(root: Path) -> bool:
    """Whether `root` is one model folder (it has config.yaml) rather than a folder of folds."""
    return (root / "config.yaml").is_file()


def fold_dirs(root: Path) -> list[Path]:
    """fold_<k>/ folders by k (a backup such as fold_0_old/ is none of them)."""
    found = [p for p in root.glob("fold_*") if p.is_dir() and re.fullmatch(r"fold_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("fold_")))


def fold_folders(model_dir: str | Path, folds: str | None = None) -> list[Path]:
    """The model folder itself, or the fold_<k> model folders inside it.

    Args:
        model_dir: a model folder, or a folder of fold_<k>/ model folders.
        folds: "all" (or None) or "0,2,4": which fold folders.
    """
    root = Path(model_dir)
    folders = fold_dirs(root)
    if not is_model_folder(root) and folders:
        wanted = None if folds in (None, "all") else {f"fold_{k.strip()}" for k in folds.split(",")}
        chosen = [d for d in folders if wanted is None or d.name in wanted]
        if wanted is not None and len(chosen) != len(wanted):
            missing = sorted(wanted - {d.name for d in chosen})
            raise SegpipeError(f"option --folds: {root} has no {', '.join(missing)}")
        return chosen
    if folds not in (None, "all"):
        raise SegpipeError(f"option --folds: {root} is a single model folder, not a folder of fold_<k> models")
    return [root]


def first_model_folder(model_dir: str | Path) -> Path:
    """The model folder itself, or its first fold_<k>/ (whose config and labels the folds share)."""
    root = Path(model_dir)
    return root if is_model_folder(root) else next(iter(fold_dirs(root)), root)



def load_model_folder(root: str | Path, checkpoint: str | None = None) -> TrainedModel:
    """Rebuild the network of a model folder and load its `best` (or `last`) weights.

    Args:
        root: the folder `segpipe fit` wrote.
        checkpoint: "best" or "last"; None takes the folder's config (infer.checkpoint).
    """
    root = existing_folder(root, "model folder")
    return ModelFolder.open(root).load(checkpoint)

"""`segpipe fit`: train a network on a prepared dataset into a model folder.

The loop (`_train`) is a short skeleton of named steps; its side jobs (model selection,
early stopping, checkpoints, the console line, the time budget) live in
`segpipe/training/`, each testable alone. The caller's config is never changed: `fit`
works on a copy whose resolved values (precision, patch size, budget-sized epochs,
regions) are written to the model folder's config.yaml and returned in `FitResult`.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, ThreadDataLoader
from tqdm import tqdm

from segpipe.artifacts.checkpoints import load_checkpoint, non_finite, rng_state, set_rng_state
from segpipe.artifacts.files import read_json, read_table
from segpipe.artifacts.model_folder import fold_dirs
from segpipe.artifacts.plan import Plan, check_regions, first_difference
from segpipe.artifacts.prepared import PREPARED_FILES, load_prepared
from segpipe.atomic import remove_stale_partials, write_json, write_yaml
from segpipe.config import Config, TrainConfig
from segpipe.config_schema import check_device
from segpipe.data.paths import inside
from segpipe.errors import SegpipeError
from segpipe.metrics.patients import label_structures, structures
from segpipe.networks.layers import channels_last_format
from segpipe.networks.spec import build_from_spec, network_spec, size_multiple
from segpipe.outputs import LOCK_NAME
from segpipe.own_files import check_own, csv_with, figure, figures_beside, text_with
from segpipe.progress import progress
from segpipe.qc.reference import with_reference
from segpipe.reports.figures import training_curves
from segpipe.runtime.allocator import keep_freed_memory
from segpipe.runtime.distributed import Dist, init_distributed, shutdown
from segpipe.runtime.precision import ARITHMETIC, resolve_precision
from segpipe.runtime.workers import loader_workers
from segpipe.training import finetune
from segpipe.training.budget import BudgetPlan, BudgetSchedule, TimeBudget, plan_budget
from segpipe.training.caching import cases_to_cache
from segpipe.training.handlers import Checkpointer, EarlyStopping, ModelSelection, console_line
from segpipe.training.losses import deep_supervised_loss, make_loss
from segpipe.training.native import NativeGrid, native_grids
from segpipe.training.steps import (
    ListSampler,
    Precision,
    epoch_indices,
    make_optimizer,
    make_scheduler,
    schedule_resumed,
    without_metadata,
)
from segpipe.training.validation import validate
from segpipe.transforms.augment import augmentations, training_chain, with_prepared_loading
from segpipe.transforms.regions import RegionChain, labels_to_regions, region_chain

PATCH_MULTIPLE = 16  # automatic patches are rounded up to this; a patch may exceed an image by less
PROBE_STEPS = 4  # training steps timed (after the first) to size epochs for a time budget
BUDGET_SLACK = 10  # a budgeted epoch ends at its time slot; it may take up to this many times the steps planned


@dataclass
class FitResult:
    """Where the model went and how good it got."""

    model_dir: Path
    epochs: int  # the last epoch trained
    best_metric: float
    best_epoch: int
    stopped_early: bool = False
    precision: str = "fp32"  # the arithmetic that trained (what "auto" chose)
    config: Config | None = None  # the resolved config, as recorded in the model folder
    val_patients: int = 0  # patients the best checkpoint was chosen on
    threshold: float | None = None  # the foreground threshold best.pt was validated with (train.threshold_grid)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally make torch's kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _cases(prepared: Path, manifest: dict[str, Any], ids: list[str]) -> list[dict[str, Any]]:
    cases = manifest["cases"]
    missing = [cid for cid in ids if cid not in cases]
    if missing:
        raise SegpipeError(f"{prepared / 'splits.json'}: cases {missing[:3]} are not in manifest.json (re-run preprocess)")
    source = str(prepared / "manifest.json")
    try:  # a manifest's paths stay inside the prepared folder, like a dataset.json's
        return [{"image": str(inside(prepared, str(cases[c]["image"]), source)),
                 "label": str(inside(prepared, str(cases[c]["label"]), source)), "id": c,
                 "patient": str(cases[c].get("patient") or c), "voxels": math.prod(cases[c].get("shape") or [1])} for c in ids]
    except (KeyError, TypeError, AttributeError):
        raise SegpipeError(f"{source}: case entries lack 'image' or 'label' (re-run preprocess)") from None


def _can_resume(model_dir: Path, resume: bool) -> bool:
    """Whether to continue from last.pt. A folder that `fit` started but that was stopped
    before its first checkpoint (it has checkpoints/, or holds nothing but the output lock:
    killed while reading the data) starts afresh; a folder that does not exist or holds
    other files is refused, so a mistyped --output is not silently trained from scratch
    (the CLI checks that the folder existed before its output guard made it)."""
    last = model_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        started = (model_dir / "checkpoints").is_dir() or (
            model_dir.is_dir() and {p.name for p in model_dir.iterdir()} <= {LOCK_NAME})
        if started:
            return False
        raise SegpipeError(f"{last}: nothing to resume from{_folds_hint(model_dir)}")
    return resume


def _folds_hint(model_dir: Path) -> str:
    """For a folder of fold_<k>/ models (fit --fold all): how to resume them."""
    folds = fold_dirs(model_dir) if model_dir.is_dir() else []
    if not folds:
        return ""
    return f"; {model_dir} holds {', '.join(d.name for d in folds)} (fit --fold all): resume them with --fold all"


_METRICS = csv_with("epoch", "train_loss")
MODEL_FILES = {"config.yaml": text_with("model:", "train:"), "metrics.csv": _METRICS, "plan.json": PREPARED_FILES["plan.json"],
               "network.json": text_with('"spatial_dims"', '"in_channels"'), "init.json": text_with('"source"'),
               "checkpoints/best.pt": text_with("data.pkl"), "checkpoints/last.pt": text_with("data.pkl"),
               "curves.png": figure()}


def check_model_output(model_dir: Path, resume: bool = False) -> None:
    """Refuse, before any work, an output folder holding files of a model folder that segpipe
    did not write (a user's config.yaml, metrics.csv, checkpoints, ...), or a prepared dataset.
    A resumed run reads init.json back (and checks it) rather than replacing it."""
    if (model_dir / "manifest.json").is_file() or (model_dir / "splits.json").is_file():
        raise SegpipeError(f"{model_dir}: is a prepared dataset (manifest.json, splits.json); fit writes a model folder "
                           "of its own: choose another --output")
    files = {name: recognise for name, recognise in MODEL_FILES.items() if not (resume and name == "init.json")}
    check_own(model_dir, figures_beside(files, model_dir / "metrics.csv", _METRICS), "fit")


def _prepare_model_dir(model_dir: Path, resume: bool) -> None:
    last = model_dir / "checkpoints" / "last.pt"
    if not resume and last.is_file():
        raise SegpipeError(f"{model_dir}: already holds a trained model; pass --resume to continue it or choose another --output")
    (model_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    for folder in (model_dir, model_dir / "checkpoints"):  # temporaries of a process killed mid-write
        remove_stale_partials(folder)


def _tensorboard(model_dir: Path) -> Any:
    """A SummaryWriter when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(model_dir / "tensorboard"))


def fit(
    prepared_dir: str | Path,
    model_dir: str | Path,
    cfg: Config,
    *,
    resume: bool = False,
    quiet: bool = False,
    epochs_this_run: int | None = None,
) -> FitResult:
    """Train `cfg.model` on fold `cfg.train.fold` (or every case, train.all_cases) of a prepared dataset.

    Writes the model folder: config.yaml (resolved), plan.json, network.json,
    checkpoints/last.pt and best.pt (every epoch, atomically), metrics.csv, curves.png and
    TensorBoard events (if tensorboard is installed). With `resume`, training continues
    from last.pt with its optimiser, scheduler, scaler and random states: in
    deterministic mode the result equals an uninterrupted run.

    `epochs_this_run` stops after that many epochs (the schedule still spans
    train.epochs), for jobs in time-limited slots that `--resume` later.

    With train.max_seconds, the first steps and one validation are timed and the epochs
    sized so that training validates and checkpoints train.budget_validations times
    within the budget; the learning rate warms up and follows the schedule over time.

    Under torchrun (WORLD_SIZE > 1) each process trains on its share of every epoch's
    batches with DistributedDataParallel, and only rank 0 writes. `cfg` is not changed.
    """
    prepared, model_dir = Path(prepared_dir), Path(model_dir)
    cfg = copy.deepcopy(cfg)
    check_device(cfg.train.device, "config key 'train.device'")
    if cfg.train.reuse_memory and not cfg.train.device.startswith("cuda"):
        keep_freed_memory()  # 3D steps ~15 % faster on CPU (docs/benchmarks.md)
    d, device = init_distributed(cfg.train.device)
    try:
        with without_metadata():  # patches and validation need no affine: MetaTensors cost ~40 % of a 2D step
            return _fit(prepared, model_dir, cfg, d, device, resume, quiet or not d.main, epochs_this_run)
    finally:
        shutdown(d)


def _training_precision(t: TrainConfig, device: torch.device, d: Dist) -> str:
    """train.precision, with "auto" decided once by the main process for all.

    In deterministic mode "auto" is fp32: the run must not depend on a timing.
    """
    if t.precision != "auto":
        return t.precision
    if t.deterministic:
        return "fp32"
    choice = resolve_precision("auto", device) if d.main else "fp32"
    return ARITHMETIC[int(d.broadcast(ARITHMETIC.index(choice)))]


def training_split(splits: list[dict[str, list[str]]], t: TrainConfig, prepared: Path) -> tuple[list[str], list[str]]:
    """Training and validation case ids: fold train.fold, or every case and none held out (train.all_cases)."""
    if t.all_cases:
        ids = sorted({cid for fold in splits[:1] for cid in fold["train"] + fold["val"]})
        return ids, []
    if not 0 <= t.fold < len(splits):
        raise SegpipeError(f"option train.fold={t.fold}: {prepared / 'splits.json'} has folds 0..{len(splits) - 1}")
    return list(splits[t.fold]["train"]), list(splits[t.fold]["val"])


def check_patch(patch: list[int], dims: int, plan: Plan, manifest: dict[str, Any], prepared: Path, multiple: int = 1) -> None:
    """Refuse a patch with the wrong number of sides, one that leaves the network's deepest level
    (each side divided by `multiple`) a single voxel, or one larger than every image along an axis."""
    if len(patch) != dims:
        raise SegpipeError(f"config key 'train.patch_size': {patch} has {len(patch)} sides for a {dims}D model")
    if math.prod(math.ceil(side / multiple) for side in patch) < 2:
        raise SegpipeError(f"config key 'train.patch_size': {patch} leaves the network's deepest level a single voxel "
                           f"(it divides each side by {multiple}); make a side larger than {multiple}")
    if plan.spatial_dims != dims:
        raise SegpipeError(f"config key 'model.spatial_dims': {dims}, but {prepared} holds {plan.spatial_dims}D cases")
    shapes = [c["shape"] for c in manifest["cases"].values() if len(c.get("shape") or []) == dims]
    if not shapes:
        return
    largest = [max(s[i] for s in shapes) for i in range(dims)]
    limit = [math.ceil(v / PATCH_MULTIPLE) * PATCH_MULTIPLE for v in largest]
    if any(p > lim for p, lim in zip(patch, limit)):
        raise SegpipeError(f"config key 'train.patch_size': {patch} is larger than the images of {prepared} "
                           f"(largest {' x '.join(map(str, largest))} after cropping)")


def resolve_targets(cfg: Config, plan: Plan) -> tuple[dict[str, list[int]], RegionChain | None]:
    """The evaluation regions, and the nested region chain when the network predicts regions."""
    regions, label_ids = plan.regions(cfg.evaluate.regions), plan.label_ids
    check_regions(cfg.evaluate.regions, set(label_ids))  # MSD regions on BraTS labels would validate the wrong voxels
    if cfg.model.targets == "labels":
        return regions, None
    if cfg.model.targets == "regions":
        return regions, region_chain(regions, label_ids)
    raise SegpipeError(f"config key 'model.targets': expected labels or regions, got {cfg.model.targets!r}")


@dataclass
class Run:
    """Everything one training run resolved and built."""

    cfg: Config
    model_dir: Path
    device: torch.device
    d: Dist
    quiet: bool
    spec: dict[str, Any]
    labels: dict[str, str]
    scored: dict[str, list[int]]
    label_structures: list[str]
    chain: RegionChain | None
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: Precision
    loss_fn: Any
    train_cases: list[dict[str, Any]]
    val_cases: list[dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    selection: ModelSelection = field(default_factory=ModelSelection)
    ckpt: dict[str, Any] | None = None
    plan: Plan = field(default_factory=lambda: Plan(labels={}))  # the prepared dataset's plan.json
    budget: dict[str, float] | None = None  # the BudgetPlan of a time-budgeted run
    tune: finetune.FineTune = field(default_factory=finetune.FineTune)  # what --init-from kept, what it freezes
    threshold: float | None = None  # the last validation's choice from train.threshold_grid, kept in checkpoints
    natives: dict[str, NativeGrid] = field(default_factory=dict)  # validation cases scored on their input's grid


def _setup(prepared: Path, model_dir: Path, cfg: Config, d: Dist, device: torch.device, resume: bool, quiet: bool) -> Run:
    """Resolve the config, prepare the folder, build the network, optimiser and loss, load a resumed state."""
    check_model_output(model_dir, resume)
    data = load_prepared(prepared)
    plan, splits, manifest = data.plan, data.splits, data.manifest
    t = cfg.train
    train_ids, val_ids = training_split(splits, t, prepared)
    finetune.check_options(t, cfg.model.name)
    t.patch_size = list(t.patch_size or plan.patch_size)  # checked before the model folder is made
    check_patch(t.patch_size, cfg.model.spatial_dims, plan, manifest, prepared, size_multiple(cfg.model, plan.in_channels))
    augmentations(t.augment, t.patch_size)  # an unknown name is refused before the model folder is made
    resume = _can_resume(model_dir, resume)
    d.barrier()  # every rank decides before rank 0 creates the folder
    if d.main:
        _prepare_model_dir(model_dir, resume)
    d.barrier()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    t.precision = _training_precision(t, device, d)  # recorded, so --resume keeps the arithmetic
    t.num_workers = loader_workers(t.num_workers, device, d.world)
    if cfg.infer.roi_size is None:
        cfg.infer.roi_size = t.patch_size
    labels, label_ids, names = plan.stored_labels, plan.label_ids, plan.label_names
    regions, chain = resolve_targets(cfg, plan)
    cfg.evaluate.regions = regions if chain is not None else cfg.evaluate.regions
    scored = structures(label_ids, names, regions)
    out_channels = len(chain.names) if chain is not None else plan.out_channels
    spec = network_spec(cfg.model, plan.in_channels, out_channels)

    seed_everything(t.seed, t.deterministic)
    model = build_from_spec(spec).to(device)
    if t.channels_last:
        model = model.to(memory_format=channels_last_format(spec["spatial_dims"]))
    tune = finetune.prepare(model, t, spec, labels, model_dir, resume=resume, write=d.main, distributed=d.enabled)
    if tune.record is not None and not resume and not quiet:
        tqdm.write(tune.record["note"])
    if t.threshold_grid and not val_ids and not quiet:
        tqdm.write("train.threshold_grid: no validation patients to choose a threshold on; infer will apply "
                   f"infer.threshold ({cfg.infer.threshold if cfg.infer.threshold is not None else 'the argmax'})")
    optimizer = make_optimizer(tune.param_groups(model, t.lr), t)
    run = Run(cfg, model_dir, device, d, quiet, spec, labels, scored, label_structures(label_ids, names), chain,
              model, model, optimizer, make_scheduler(optimizer, t), Precision(t.precision, device),
              make_loss(t, chain is not None), _cases(prepared, manifest, train_ids), _cases(prepared, manifest, val_ids))
    run.plan, run.tune = Plan(with_reference(plan, manifest, train_ids)), tune  # plan plus the QC reference of the training cases only
    if d.main and run.val_cases:
        run.natives, notes = native_grids(run.val_cases, manifest, plan.get("preprocess") or {}, str(plan.get("layout")),
                                          plan.get("source"))
        for line in notes if not quiet else []:
            tqdm.write(line)
    if resume:
        _load_state(run)
    if t.compile:
        run.net = torch.compile(run.net)
    if d.enabled:
        run.net = torch.nn.parallel.DistributedDataParallel(run.net, device_ids=[device.index] if device.type == "cuda" else None)
    return run


OPTIMISER_KEYS = ("optimizer", "lr", "weight_decay", "momentum")  # put back by the optimiser's own state


def _check_resumable(ckpt: dict[str, Any], t: TrainConfig, last: Path) -> None:
    """Refuse to resume on another split: the other fold's validation cases are ones the
    checkpoint trained on, so its validation Dice would be measured on training data. Refuse
    other optimiser settings too: loading the optimiser's state puts the old ones back."""
    saved = ckpt.get("config", {}).get("train", {}) if isinstance(ckpt.get("config"), dict) else {}
    if not isinstance(saved, dict):
        return
    keys = ("all_cases",) if t.all_cases and saved.get("all_cases") else ("all_cases", "fold")
    for key in keys:
        if key in saved and saved[key] != getattr(t, key):
            raise SegpipeError(f"option train.{key}={getattr(t, key)}: {last} was trained with train.{key}={saved[key]}; "
                               "resuming on another split would validate on cases it trained on (train into a new --output)")
    for key in OPTIMISER_KEYS:
        if key in saved and saved[key] != getattr(t, key):
            raise SegpipeError(f"option train.{key}={getattr(t, key)}: {last} was trained with train.{key}={saved[key]}; "
                               "the optimiser's settings come back from the checkpoint on --resume, so the new "
                               "value would not apply (fine-tune into a new --output with --init-from instead)")


def _split_of(run: Run) -> dict[str, list[str]]:
    return {"train": sorted(c["id"] for c in run.train_cases), "val": sorted(c["id"] for c in run.val_cases)}


def _check_same_data(run: Run, ckpt: dict[str, Any], last: Path) -> None:
    """Refuse to resume on a prepared folder other than the one the model was trained on: other
    preprocessing would train the same weights on other inputs (and record the new plan), other
    fold cases would validate on cases it trained on."""
    recorded = run.model_dir / "plan.json"
    if recorded.is_file():
        old = Plan.from_dict(read_json(recorded, "missing"), recorded)
        if old.preprocess != run.plan.preprocess:
            raise SegpipeError(f"{recorded}: the model was trained on data prepared otherwise "
                               f"({first_difference(run.plan.preprocess, old.preprocess)}); resume with the prepared "
                               "folder it was trained on, or train into a new --output")
    split = ckpt.get("split")
    if split is not None and split != _split_of(run):
        raise SegpipeError(f"{last}: was trained on other cases than this prepared folder's fold "
                           f"{run.cfg.train.fold} holds; resuming would validate on cases it trained on "
                           "(train into a new --output)")


def _check_progress(ckpt: dict[str, Any], last: Path, validated: bool) -> None:
    """The training state's numbers are ones fit writes: the epoch's index from 0, the best epoch
    one of those done (numbered from 1; -1, none yet), and a best metric that a validation can
    beat (NaN never is)."""
    epoch, best = ckpt["epoch"], ckpt["best_epoch"]
    if epoch < 0:
        raise SegpipeError(f"{last}: checkpoint key 'epoch' is {epoch}; epochs count from 0")
    if not (best == -1 or 1 <= best <= epoch + 1):
        raise SegpipeError(f"{last}: checkpoint key 'best_epoch' is {best}, not one of the {epoch + 1} epochs done")
    if validated and math.isnan(ckpt["best_metric"]) and best != -1:
        raise SegpipeError(f"{last}: checkpoint key 'best_metric' is NaN with validation cases; no validation could "
                           "improve on it, and best.pt would never change")


def _load_state(run: Run) -> None:
    last = run.model_dir / "checkpoints" / "last.pt"
    ckpt = run.ckpt = load_checkpoint(last, resume=True)  # keys and their types checked
    _check_resumable(ckpt, run.cfg.train, last)
    _check_same_data(run, ckpt, last)
    _check_progress(ckpt, last, validated=bool(run.val_cases))
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        schedule_resumed(run.optimizer, run.scheduler)
        run.precision.load_state_dict(ckpt.get("scaler", {}))
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())[:300]
        raise SegpipeError(f"{last}: cannot resume from this checkpoint ({type(exc).__name__}: {detail}; "
                           "was the model's config changed?)") from None
    run.start_epoch = ckpt["epoch"] + 1
    run.threshold = ckpt.get("threshold")
    run.selection = ModelSelection(ckpt["best_metric"], ckpt["best_epoch"], ckpt.get("stale_validations", 0))
    if (run.model_dir / "metrics.csv").is_file():
        table = read_table(run.model_dir / "metrics.csv")
        numeric = all(c in table and pd.api.types.is_numeric_dtype(table[c]) for c in ("epoch", "train_loss"))
        if not numeric or len(table) < run.start_epoch:  # the curves and the budget are drawn from it
            raise SegpipeError(f"{run.model_dir / 'metrics.csv'}: not the table fit wrote for the {run.start_epoch} "
                               "epoch(s) of the checkpoint (numeric epoch and train_loss columns, a row per epoch)")
        run.rows = table.to_dict("records")[: run.start_epoch]


def _record(run: Run) -> None:
    """config.yaml (resolved), plan.json and network.json."""
    if run.d.main:
        write_yaml(run.model_dir / "config.yaml", run.cfg.to_dict())
        write_json(run.model_dir / "plan.json", run.plan)
        write_json(run.model_dir / "network.json", run.spec)


def _fit(prepared: Path, model_dir: Path, cfg: Config, d: Dist, device: torch.device, resume: bool, quiet: bool,
         epochs_this_run: int | None) -> FitResult:
    run = _setup(prepared, model_dir, cfg, d, device, resume, quiet)
    _record(run)
    try:
        return _fit_run(run, epochs_this_run)
    except SegpipeError:
        if d.main and not (model_dir / "checkpoints" / "last.pt").exists():
            _unrecord(run)  # refused before the first checkpoint (a budget too short): no half a model folder
        raise


def _unrecord(run: Run) -> None:
    """Remove what this run wrote before its first checkpoint: `_record`'s files (and init.json of --init-from)."""
    for name in ("config.yaml", "plan.json", "network.json", *(["init.json"] if run.tune.record is not None else [])):
        (run.model_dir / name).unlink(missing_ok=True)


def _fit_run(run: Run, epochs_this_run: int | None) -> FitResult:
    """The run after its setup: loader, the budget's sizes, the loop, the curves."""
    d, model_dir, quiet = run.d, run.model_dir, run.quiet
    t = run.cfg.train
    chain = with_prepared_loading(training_chain(t.patch_size, t.samples_per_volume, t.pos_neg_ratio, t.augment))
    cached, note = cases_to_cache(run.train_cases, t.cache_rate, d.world)
    if note and not quiet and d.main:
        tqdm.write(note)
    dataset = CacheDataset(run.train_cases, transform=chain, cache_num=cached, progress=False, num_workers=None)
    volumes_per_batch = max(1, math.ceil(t.batch_size / t.samples_per_volume))
    sampler = ListSampler()
    loader_cls = ThreadDataLoader if t.thread_loader else DataLoader
    loader = loader_cls(dataset, batch_size=volumes_per_batch, sampler=sampler, num_workers=t.num_workers)
    checkpointer = Checkpointer(model_dir, (lambda: _tensorboard(model_dir)) if d.main else None)
    if run.ckpt is not None:  # after the loader: MONAI's DataLoader re-seeds torch's generator when built
        try:
            set_rng_state(run.ckpt["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise SegpipeError(f"{model_dir / 'checkpoints' / 'last.pt'}: damaged random state ({type(exc).__name__})") from None

    def draw(epoch: int, n_batches: int) -> None:
        sampler.indices = epoch_indices(len(dataset), n_batches * volumes_per_batch, t.seed, epoch, d.rank, d.world)
        chain.set_random_state(seed=(t.seed * 100_003 + epoch * 7_919 + d.rank) % (2**32))

    budget = TimeBudget(t.max_seconds, already=sum(r.get("seconds", 0.0) for r in run.rows), clock=d.clock)
    lr_schedule = BudgetSchedule(run.optimizer, budget, t.schedule, t.warmup) if budget.active else None
    run.net.train()
    if budget.active:
        _size_for_budget(run, budget, lr_schedule, loader, draw)
        _record(run)
    result = _train(run, loader, draw, budget, lr_schedule, checkpointer, epochs_this_run)
    if d.main and run.rows:
        training_curves(pd.DataFrame(run.rows), model_dir / "curves.png")
    checkpointer.close()
    return result


def _size_for_budget(run: Run, budget: TimeBudget, lr_schedule: BudgetSchedule, loader: Any, draw: Any) -> None:
    """Time a few steps and a validation, then size the epochs to the budget (or reuse a resumed run's sizes)."""
    t = run.cfg.train
    stored = (run.ckpt or {}).get("budget")
    if stored:
        sizes = BudgetPlan(**stored)
    else:
        draw(-1, PROBE_STEPS + 1)
        stamps = []
        for batch in loader:
            lr_schedule.update()
            _train_step(run, batch)
            stamps.append(time.perf_counter())
        step_seconds = run.d.broadcast((stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1))  # one size for every rank
        sizes = plan_budget(t.max_seconds, budget.elapsed(), step_seconds, _validation_seconds(run),
                            t.budget_validations)
    run.budget = sizes.to_dict()
    budget.reserve = min(sizes.validation_seconds, 0.5 * t.max_seconds)
    t.iterations_per_epoch, t.epochs, t.val_every = sizes.iterations_per_epoch, sizes.epochs, 1
    if not run.quiet:
        tqdm.write(f"time budget {t.max_seconds:g} s: {sizes.step_seconds:.3f} s per step, ~{sizes.validation_seconds:.1f} s "
                   f"per validation -> {sizes.iterations_per_epoch} iterations per epoch, {sizes.validations} validations")


def _validation_seconds(run: Run) -> float:
    """Seconds one validation will take, scaled from a few timed cases by their voxels."""
    seconds = 0.0
    if run.val_cases and run.d.main:
        probe = run.val_cases[:3]
        _validate(run, probe[:1])  # warm-up: first-call costs would be scaled up by the number of cases
        started = time.perf_counter()
        _validate(run, probe)
        seconds = (time.perf_counter() - started) * sum(c["voxels"] for c in run.val_cases) / sum(c["voxels"] for c in probe)
    return run.d.broadcast(seconds)


def _validate(run: Run, cases: list[dict[str, Any]]) -> dict[str, Any]:
    t = run.cfg.train
    return validate(run.model, cases, run.cfg.infer, t.patch_size, run.scored, run.label_structures, run.device,
                    run.precision, run.spec, run.chain, t.threshold_grid, run.natives)


def _train_step(run: Run, batch: dict[str, Any]) -> float:
    """One optimiser step on a batch; its loss."""
    x = batch["image"].to(run.device)  # a plain tensor: fit runs without MONAI's metadata
    if run.cfg.train.channels_last:
        x = x.contiguous(memory_format=channels_last_format(x.ndim - 2))
    y = batch["label"].to(run.device)
    if run.chain is not None:
        y = labels_to_regions(y, run.chain)
    run.optimizer.zero_grad(set_to_none=True)
    with run.precision.autocast():
        loss = deep_supervised_loss(run.loss_fn, run.net(x), y)
    run.precision.step(loss, run.net, run.optimizer, run.cfg.train.grad_clip)
    return loss.item()


def _train_epoch(run: Run, loader: Any, budget: TimeBudget, lr_schedule: BudgetSchedule | None, epoch: int) -> list[float]:
    t = run.cfg.train
    losses: list[float] = []
    planned = BudgetPlan(**run.budget).iterations_per_epoch if run.budget else None  # a budgeted loader has slack
    bar = progress(loader, quiet=run.quiet, total=planned, desc=f"epoch {epoch + 1}/{t.epochs}", unit="it", leave=False)
    stop_at = BudgetPlan(**run.budget).training_ends(epoch, t.max_seconds) if run.budget else math.inf
    for batch in bar:
        if budget.active and (budget.expired() or budget.elapsed() >= stop_at):
            break
        if lr_schedule is not None:
            lr_schedule.update()
        losses.append(_train_step(run, batch))
        if not math.isfinite(losses[-1]):
            raise SegpipeError(f"training diverged in epoch {epoch + 1}, step {len(losses)}: the loss is {losses[-1]} at "
                               f"learning rate {run.optimizer.param_groups[0]['lr']:.3g} (lower train.lr, or set "
                               "train.grad_clip); the checkpoints of earlier epochs are kept")
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    return losses


def _validation_step(run: Run, row: dict[str, Any], epoch: int) -> bool:
    """Validate (main process), add the scores to `row`; True when this epoch is the new best."""
    metric = float("nan")
    if run.d.main:
        per = _validate(run, run.val_cases)
        row["val_dice_mean"] = metric = per["mean"]
        for name in run.scored:
            row[f"val_dice_{name}"] = per[name]
        if run.cfg.train.threshold_grid:
            row["val_threshold"] = run.threshold = per["threshold"]
    return run.selection.observe(run.d.broadcast(metric), epoch + 1)


def _checkpoint_state(run: Run, epoch: int) -> dict[str, Any]:
    s = run.selection
    state = {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "scaler": run.precision.state_dict(), "epoch": epoch, "best_metric": s.best_metric, "best_epoch": s.best_epoch,
        "stale_validations": s.stale, "rng": rng_state(), "network": run.spec, "labels": run.labels,
        "config": run.cfg.to_dict(), "split": _split_of(run),
    }
    if run.budget:
        state["budget"] = run.budget
    if run.threshold is not None:
        state["threshold"] = run.threshold
    return state


def _train(run: Run, loader: Any, draw: Any, budget: TimeBudget, lr_schedule: BudgetSchedule | None,
           checkpointer: Checkpointer, epochs_this_run: int | None) -> FitResult:
    """The loop: draw, train an epoch, validate, record and checkpoint, stop when done."""
    t, d = run.cfg.train, run.d
    stopping, stopped_early = EarlyStopping(t.early_stopping), False
    end_epoch = t.epochs if epochs_this_run is None else min(t.epochs, run.start_epoch + epochs_this_run)
    for epoch in range(run.start_epoch, end_epoch):
        if run.tune.apply_freeze(run.model, epoch) and not run.quiet:
            tqdm.write(f"epoch {epoch + 1}: {', '.join(t.freeze)} unfrozen")
        started = time.perf_counter()
        draw(epoch, t.iterations_per_epoch * (BUDGET_SLACK if budget.active else 1))
        losses = _train_epoch(run, loader, budget, lr_schedule, epoch)
        broken = non_finite(run.model.state_dict())
        if broken:  # the epoch's last step made the weights NaN: no checkpoint may hold them
            raise SegpipeError(f"training diverged in epoch {epoch + 1}: the weights hold non-finite values ({broken}); "
                               "lower train.lr, or set train.grad_clip; the checkpoints of earlier epochs are kept")
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": d.mean(float(np.mean(losses)) if losses else float("nan")),
                               "iterations": len(losses), "lr": run.optimizer.param_groups[0]["lr"]}
        if not budget.active:
            run.scheduler.step()
        # an epoch left no time by a late validation before it made no step: its weights were validated already
        unchanged = budget.active and not losses and bool(run.rows)
        if run.val_cases and not unchanged and ((epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs or budget.expired()):
            _validation_step(run, row, epoch)
        elif not run.val_cases:
            run.selection.unvalidated(epoch + 1)
        row["seconds"] = round(time.perf_counter() - started, 2)
        run.rows.append(row)
        if d.main:
            checkpointer.save(run.rows, _checkpoint_state(run, epoch), is_best=run.selection.best_epoch == epoch + 1)
            if not run.quiet:
                tqdm.write(console_line(row, t.epochs))
        d.barrier()
        if budget.expired():
            if not run.quiet:
                tqdm.write(f"time budget of {t.max_seconds:.0f} s spent after epoch {epoch + 1}")
            break
        if stopping.should_stop(run.selection):
            stopped_early = True
            if not run.quiet:
                tqdm.write(f"early stop: no validation improvement in {run.selection.stale} validations")
            break
    s = run.selection
    last = int(run.rows[-1]["epoch"]) if run.rows else run.start_epoch
    threshold = next((r.get("val_threshold") for r in run.rows if r["epoch"] == s.best_epoch), None)
    return FitResult(run.model_dir, last, s.best_metric, s.best_epoch, stopped_early, t.precision, run.cfg,
                     len({c["patient"] for c in run.val_cases}), None if pd.isna(threshold) else float(threshold))


def fit_folds(prepared_dir: str | Path, model_dir: str | Path, cfg: Config, folds: list[int], *, resume: bool = False, quiet: bool = False) -> list[FitResult]:
    """Cross-validation: one model folder per fold, `model_dir/fold_<k>`."""
    results = []
    for k in folds:
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.train.fold = k
        fold_dir = Path(model_dir) / f"fold_{k}"
        fold_resume = resume and (fold_dir / "checkpoints" / "last.pt").is_file()
        if not quiet:
            tqdm.write(f"fold {k}")
        results.append(fit(prepared_dir, fold_dir, fold_cfg, resume=fold_resume, quiet=quiet))
    return results

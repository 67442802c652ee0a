"""`segpipe preprocess`: verify, fingerprint, normalise and cache a dataset."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe.artifacts.normalization import crop_share
from segpipe.artifacts.normalization import resolve as resolve_normalization
from segpipe.artifacts.plan import build_plan, case_geometry, median_spacing
from segpipe.artifacts.prepared import PREPARED_FILES
from segpipe.atomic import remove_stale_partials, write_json, write_with
from segpipe.config import Config
from segpipe.data import Case, read_dataset
from segpipe.data.dataset import Dataset
from segpipe.data.digest import file_digest
from segpipe.data.guard import input_roots
from segpipe.data.loading import layout_of
from segpipe.data.splits import dataset_folds, patient_folds
from segpipe.errors import SegpipeError, reader_error
from segpipe.own_files import check_own
from segpipe.progress import progress
from segpipe.qc.features import VERSION as QC_VERSION

CASES_DIR = "cases"


@dataclass
class PreprocessResult:
    """What a preprocess run produced."""

    output: Path
    cases: int
    reused: int
    plan: dict[str, Any]
    failed: list[tuple[str, str]] = field(default_factory=list)  # with keep_going: (case id, error)
    folds: int = 0  # folds in splits.json: fewer than preprocess.folds with fewer patients than that
    notes: list[str] = field(default_factory=list)  # doubtful choices, one line each, for the console


def _settings(cfg: Config, dataset: Dataset, target_spacing: list[float], nonzero: bool) -> dict[str, Any]:
    p = cfg.preprocess
    return {
        "spatial_dims": dataset.spatial_dims,
        "target_spacing": target_spacing,
        "orientation": p.orientation if dataset.spatial_dims == 3 else None,
        "crop_foreground": p.crop_foreground,
        "normalize_nonzero": nonzero,  # preprocess.normalize_nonzero, with "auto" resolved
        "label_mapping": {str(k): v for k, v in (dataset.label_mapping or {}).items()},
    }


def open_dataset(path: str | Path, cfg: Config) -> Dataset:
    """Read a raw dataset with the layout and reader options the config gives."""
    from segpipe.data import detect_layout

    p = cfg.preprocess
    root = Path(path)
    layout = p.layout or (detect_layout(root) if root.is_dir() else None)
    options: dict[str, Any] = {}
    if layout == "brats":
        options["label_set"] = p.label_set
    if layout == "slices" and p.patient_pattern:
        options["patient_pattern"] = p.patient_pattern
    return read_dataset(root, layout=p.layout, **options)


def _prepare_case(case: Case, settings: dict[str, Any], layout: str, out_dir: Path, digest: str,
                  labels: dict[int, str] | None = None, roots: tuple[Path, ...] | None = None) -> dict[str, Any]:
    """Run the chain on one case and cache image and label as .npy (atomically).

    `labels` (the declared values) make the chain refuse what `--verify-only` calls an
    error; `roots` are the input folders files may be read from (worker processes do not
    inherit the caller's `reading_inside`).
    """
    import contextlib

    import torch

    from segpipe.data.guard import reading_inside
    from segpipe.transforms.inversion import was_resampled
    from segpipe.transforms.preprocessing import chain_for

    torch.set_num_threads(1)
    mapping = {int(k): int(v) for k, v in settings["label_mapping"].items()}
    chain = chain_for(settings, layout, with_label=True, record_stats=True, record_qc=True, label_mapping=mapping,
                      path=case.images[0], labels=labels, label_path=case.label)
    source = str(case.images[0]) if len(case.images) == 1 else [str(p) for p in case.images]
    try:
        with reading_inside(*roots) if roots is not None else contextlib.nullcontext():
            data = chain({"image": source, "label": str(case.label)})
    except Exception as exc:  # any reader failure is a bad file
        raise reader_error(exc, case.images[0], f"cannot preprocess case {case.case_id}") from None
    image = np.ascontiguousarray(torch.as_tensor(data["image"]).numpy().astype(np.float32))
    label = np.ascontiguousarray(torch.as_tensor(data["label"]).numpy().astype(np.uint8))
    if image.shape[1:] != label.shape[1:]:
        raise SegpipeError(f"{case.label}: label grid {label.shape[1:]} differs from image grid {image.shape[1:]}")
    values, counts = np.unique(label, return_counts=True)
    outside = data.get("labelled_voxels", 0) - data.get("labelled_voxels_cropped", 0)
    image_file = f"{CASES_DIR}/{case.case_id}_image.npy"
    label_file = f"{CASES_DIR}/{case.case_id}_label.npy"
    write_with(out_dir / image_file, lambda tmp: np.save(tmp, image))
    write_with(out_dir / label_file, lambda tmp: np.save(tmp, label))
    return {
        "case_id": case.case_id,
        "patient": case.patient,
        "sources": [str(p) for p in case.images],
        "label_source": str(case.label),
        "hash": digest,
        "image": image_file,
        "label": label_file,
        "shape": list(image.shape[1:]),
        "channels": int(image.shape[0]),
        "label_counts": {str(int(v)): int(c) for v, c in zip(values, counts)},
        "intensity": data["intensity_stats"],
        "qc": data["qc_features"],  # out-of-distribution reference (segpipe.qc.reference)
        # where this grid's counts differ from the input's, validation scores on the input's (segpipe.training.native)
        "native_grid": {"resampled": was_resampled(data["image"]), "label_outside_crop": int(outside)},
        "attrs": case.attrs,
    }


def _reusable_cases(cases: list[Case], digests: dict[str, str], old_cases: dict[str, Any],
                    out: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[Case, str]]]:
    """(manifest entries of cases whose sources and cached arrays are unchanged, (case, digest) to prepare)."""
    entries: dict[str, dict[str, Any]] = {}
    todo: list[tuple[Case, str]] = []
    for case in cases:
        digest = digests[case.case_id]
        prev = old_cases.get(case.case_id)
        # older QC features are recomputed, and entries from before native_grid was recorded
        current_qc = prev and prev.get("qc", {}).get("version") == QC_VERSION and "native_grid" in prev
        if current_qc and prev.get("hash") == digest and (out / prev["image"]).is_file() and (out / prev["label"]).is_file():
            entries[case.case_id] = prev
        else:
            todo.append((case, digest))
    return entries, todo


def _crop_share(case: Case, layout: str, roots: tuple[Path, ...] | None = None) -> float | None:
    """The share of a case's image its non-zero crop keeps (`artifacts.normalization`), None if unreadable."""
    import contextlib

    from segpipe.data.guard import reading_inside
    from segpipe.data.loading import load_image

    try:
        with reading_inside(*roots) if roots is not None else contextlib.nullcontext():
            return crop_share(load_image(case, layout))
    except SegpipeError:
        return None  # the case pass reports it (or leaves the case out)


class _LazyPool:
    """A pool of `workers` processes, started on first use, shut down when the block ends."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None

    def __call__(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(max_workers=self.workers, initializer=_die_with_parent)
        return self.executor

    def __enter__(self) -> _LazyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown()


def _die_with_parent() -> None:
    """Worker initializer: end this worker when the process that started it dies.

    Without it, a preprocess run killed with SIGKILL leaves its pool workers behind, idle
    forever or still writing into the output folder while a re-run works there.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:  # portable fallback, and covers a parent that died before prctl
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="segpipe-parent-watch", daemon=True).start()


def _remove_partials(out: Path) -> None:
    """Delete temporary files a killed run left behind (see `segpipe.atomic.atomic_path`): only
    segpipe's, named with a writer that is no longer running."""
    for folder in (out, out / CASES_DIR):
        remove_stale_partials(folder)


def check_output(out: Path, case_ids: list[str]) -> None:
    """Refuse, before any work, an output folder holding files of the prepared layout that
    segpipe did not write: a user's plan, splits or manifest, a `cases/*.npy` that neither the
    folder's own manifest lists nor one of `case_ids` is named by (a run killed before its
    manifest named a case leaves one; any other would be deleted as an orphan), or a model folder."""
    if (out / "config.yaml").is_file() or (out / "network.json").is_file():
        raise SegpipeError(f"{out}: is a model folder (config.yaml, network.json); preprocess writes a prepared "
                           "dataset of its own: choose another output")
    check_own(out, PREPARED_FILES, "preprocess")
    cases = _load_manifest(out / "manifest.json").get("cases")
    listed = {str(e.get(k)) for e in (cases.values() if isinstance(cases, dict) else ()) if isinstance(e, dict)
              for k in ("image", "label")}
    listed |= {f"{CASES_DIR}/{cid}_{kind}.npy" for cid in case_ids for kind in ("image", "label")}
    check_own(out, {f"{CASES_DIR}/*.npy": lambda path: f"{CASES_DIR}/{path.name}" in listed}, "preprocess")


def _load_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return {}  # a damaged manifest only costs recomputation
    return data if isinstance(data, dict) else {}


def _check_channels(entry: dict[str, Any], modalities: int) -> None:
    if entry["channels"] != modalities:
        raise SegpipeError(
            f"{entry['sources'][0]}: has {entry['channels']} channel(s), the dataset declares {modalities} modalities"
        )


def _check_labels(entry: dict[str, Any], declared: dict[int, str]) -> None:
    undeclared = sorted(int(v) for v in entry["label_counts"] if int(v) not in declared)
    if undeclared:
        raise SegpipeError(
            f"{entry['label_source']}: label values {undeclared} are not declared in dataset.json "
            f"(declared: {sorted(declared)})"
        )


def preprocess(
    dataset_dir: str | Path,
    output_dir: str | Path,
    cfg: Config,
    *,
    workers: int = 1,
    quiet: bool = False,
    keep_going: bool = False,
) -> PreprocessResult:
    """Read, fingerprint, preprocess and cache a dataset into `output_dir`.

    Re-running is incremental: a case whose sources and settings are unchanged (same
    content hash) is reused from the cache. Every file is written atomically and the
    manifest is updated after each case, so an interrupted run resumes where it stopped.
    With `keep_going`, a case that fails with a user error is left out (and listed in the
    result's `failed`) instead of stopping the run.
    """
    from segpipe.limits import MAX_THREADS

    if not 1 <= workers <= MAX_THREADS:
        raise SegpipeError(f"option --workers: {workers} is outside 1..{MAX_THREADS}")
    dataset = open_dataset(dataset_dir, cfg)
    if not dataset.training:
        raise SegpipeError(f"{dataset_dir}: lists no training cases with labels to preprocess")
    out = Path(output_dir)
    check_output(out, [case.case_id for case in dataset.training])
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise SegpipeError(f"{out}: output folder is not writable")
    _remove_partials(out)

    failed: list[tuple[str, str]] = []

    def fail(case: Case, exc: SegpipeError) -> None:
        if not keep_going:
            raise exc
        failed.append((case.case_id, str(exc)))

    geometry = []
    for case in progress(list(dataset.training), desc="fingerprint", unit="case", quiet=quiet, leave=False):
        try:
            geometry.append(case_geometry(dataset, case))
        except SegpipeError as exc:
            fail(case, exc)
            dataset.training.remove(case)
    if not dataset.training:
        raise SegpipeError(f"{dataset_dir}: no case could be read ({len(failed)} failed)")
    shapes = [g[0] for g in geometry]
    spacings = [g[1] for g in geometry]
    target = list(cfg.preprocess.target_spacing or median_spacing(spacings))
    if len(target) != dataset.spatial_dims:
        raise SegpipeError(f"config key 'preprocess.target_spacing': {target} has {len(target)} values for {dataset.spatial_dims}D data")
    digests = {case.case_id: file_digest([*case.images, case.label])
               for case in progress(dataset.training, desc="hashing", unit="case", quiet=quiet, leave=False)}
    manifest_path = out / "manifest.json"
    old = _load_manifest(manifest_path)
    roots = input_roots() or (Path(dataset_dir),)
    pool = _LazyPool(workers)  # one pool for the sampled cases and the case pass: workers start once

    def measure(sample: list[Case]) -> list[float | None]:
        layouts = [layout_of(dataset, case) for case in sample]
        shares = (pool().map(_crop_share, sample, layouts, [roots] * len(sample)) if workers > 1 and len(sample) > 1
                  else map(_crop_share, sample, layouts))
        return list(progress(shares, total=len(sample), desc="normalisation", unit="case", quiet=quiet, leave=False))

    with pool:
        normalization = resolve_normalization(cfg.preprocess.normalize_nonzero, dataset.training, digests,
                                              old.get("normalization"), measure=measure)
        settings = _settings(cfg, dataset, target, normalization["nonzero"])
        settings_key = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()

        old_cases = old.get("cases", {}) if old.get("settings_key") == settings_key else {}
        entries, todo = _reusable_cases(dataset.training, digests, old_cases, out)
        reused = len(entries)

        last_save = [0.0]

        def save_manifest(force: bool = False) -> None:
            # the manifest indexes finished cases only, so saving it every few seconds (not after
            # every case, which is quadratic in the dataset size) costs at most a few cases on a crash
            if force or time.monotonic() - last_save[0] > 2.0:
                write_json(manifest_path, {"settings_key": settings_key, "settings": settings,
                                           "normalization": normalization, "cases": entries})
                last_save[0] = time.monotonic()

        bar = progress(total=len(todo), desc="preprocess", unit="case", quiet=quiet)
        def collect(case: Case, result: Any) -> None:
            try:
                entry = result()
            except SegpipeError as exc:
                fail(case, exc)
                return
            entries[entry["case_id"]] = entry
            save_manifest()
            bar.update()

        if workers > 1 and len(todo) > 1:
            futures = [pool().submit(_prepare_case, case, settings, layout_of(dataset, case), out, digest, dataset.labels, roots)
                       for case, digest in todo]
            for (case, _), future in zip(todo, futures):
                collect(case, future.result)
        else:
            for case, digest in todo:
                collect(case, lambda: _prepare_case(case, settings, layout_of(dataset, case), out, digest, dataset.labels))
        bar.close()

    for entry in list(entries.values()):
        try:
            _check_labels(entry, dataset.labels)
            _check_channels(entry, len(dataset.modalities))
        except SegpipeError as exc:
            fail(next(c for c in dataset.training if c.case_id == entry["case_id"]), exc)
            del entries[entry["case_id"]]
    survivors = [c for c in dataset.training if c.case_id in entries]
    if not survivors:
        raise SegpipeError(f"{dataset_dir}: no case could be preprocessed ({len(failed)} failed)")
    entries = {c.case_id: entries[c.case_id] for c in survivors}
    save_manifest(force=True)
    _remove_orphans(out, entries)

    plan = build_plan(
        dataset_name=dataset.name,
        layout=dataset.layout,
        spatial_dims=dataset.spatial_dims,
        modalities=dataset.modalities,
        labels=dataset.labels,
        spacings=spacings,
        shapes=shapes,
        target_spacing=target,
        prepared_shapes=[e["shape"] for e in entries.values()],
        intensity=[e["intensity"] for e in entries.values()],
        label_counts=[e["label_counts"] for e in entries.values()],
        patch_size=cfg.preprocess.patch_size,
        patch_budget_voxels=cfg.preprocess.patch_budget_voxels,
        preprocess_settings=settings,
        normalization=normalization,
    )
    plan["source"] = str(Path(dataset_dir).resolve())
    write_json(out / "plan.json", plan)
    if failed:
        dataset.training = survivors
    own, why = dataset_folds(dataset)
    splits = own or patient_folds(survivors, cfg.preprocess.folds, cfg.preprocess.seed)
    notes = []
    if why:
        notes.append(f"{dataset.root}: the dataset's own folds are not used ({why}); splits.json holds "
                     f"{len(splits)} patient-grouped folds instead")
    outside = {cid: e["native_grid"]["label_outside_crop"] for cid, e in entries.items() if e["native_grid"]["label_outside_crop"]}
    if outside:
        cid = max(outside, key=outside.get)
        notes.append(f"{len(outside)} case(s) have label voxels outside the image's non-zero box (e.g. "
                     f"{outside[cid]} voxel(s) of {entries[cid]['label_source']}); infer leaves them background, so validation "
                     "and evaluate count them as missed: check that image and label belong together")
    write_json(out / "splits.json", splits)
    return PreprocessResult(output=out, cases=len(entries), reused=reused, plan=plan, failed=failed, folds=len(splits),
                            notes=notes)


def _remove_orphans(out: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Delete cached arrays of cases no longer in the dataset."""
    keep = {e["image"] for e in entries.values()} | {e["label"] for e in entries.values()}
    cases_dir = out / CASES_DIR
    if not cases_dir.is_dir():
        return
    for path in cases_dir.glob("*.npy"):
        if f"{CASES_DIR}/{path.name}" not in keep:
            path.unlink()

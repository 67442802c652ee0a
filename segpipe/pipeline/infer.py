"""`segpipe infer`: segment new images and write masks in the input's own geometry."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.artifacts.model_folder import TrainedModel, fold_folders, load_model_folder, region_chain_of, tuned_threshold
from segpipe.artifacts.plan import first_difference
from segpipe.atomic import remove_stale_partials
from segpipe.config import InferConfig, merge_dict
from segpipe.config_schema import check_device
from segpipe.data.case import Case
from segpipe.data.inputs import discover_inputs
from segpipe.errors import SegpipeError, reader_error
from segpipe.networks.inference import optimize_for_inference
from segpipe.networks.layers import channels_last_format
from segpipe.own_files import check_own, csv_with
from segpipe.prediction import labels_of, mean_probabilities
from segpipe.progress import progress
from segpipe.qc.casetable import cases_file
from segpipe.qc.session import InferQC, Refused, uncertainty_name
from segpipe.reports.references import patient_of, patient_regex
from segpipe.runtime.allocator import keep_freed_memory
from segpipe.runtime.precision import autocast, check_precision, inference_precision
from segpipe.transforms.inversion import invert_to_input
from segpipe.transforms.postprocess import postprocess
from segpipe.transforms.preprocessing import chain_for
from segpipe.writers.masks import output_name, probability_name, write_mask, write_probabilities

@dataclass
class InferResult:
    """What an infer run wrote."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # with keep_going: (input, error)
    seconds_per_case: float = 0.0
    precision: str = ""  # the arithmetic that ran (what "auto" chose)
    threshold: float | None = None  # the foreground threshold applied (None: the argmax)
    refused: list[tuple[Path, str]] = field(default_factory=list)  # with strict: out-of-distribution cases not segmented
    warnings: list[str] = field(default_factory=list)  # one line per fallback checkpoint and out-of-distribution flag
    cases: list[dict[str, Any]] = field(default_factory=list)  # the rows of cases.csv written by this run
    cases_csv: Path | None = None


class Segmenter:
    """One model folder, or an ensemble of fold models, with the inference settings applied."""

    def __init__(self, models: list[TrainedModel], icfg: InferConfig) -> None:
        self.models = models
        self.icfg = icfg
        check_device(icfg.device, "option --device (infer.device)")
        self.device = torch.device(icfg.device)
        check_precision(icfg.precision, self.device, "option --precision")
        if icfg.threads > 0:
            torch.set_num_threads(icfg.threads)
        first = models[0]
        # after the thread count: auto times kernels
        self.precision = inference_precision(icfg.precision, self.device, first.config.train.precision)
        self.plan, self.network = first.plan, first.network
        for m in models[1:]:
            if m.network != first.network or m.plan.label_names != first.plan.label_names:
                raise SegpipeError(f"{m.root}: fold models differ in architecture or labels from {first.root}")
            if m.plan.preprocess != first.plan.preprocess:  # every fold's input is prepared by the first's plan
                raise SegpipeError(f"{m.root / 'plan.json'}: fold models differ in preprocessing from {first.root} "
                                   f"({first_difference(m.plan.preprocess, first.plan.preprocess)})")
        self.nets = []
        for m in models:
            net = m.net.to(self.device).eval()
            if icfg.fuse:
                net = optimize_for_inference(net, channels_last=icfg.channels_last)
            elif icfg.channels_last:
                net = net.to(memory_format=channels_last_format(first.network["spatial_dims"]))
            self.nets.append(net)

        self._chains: dict[tuple[str, str], Any] = {}
        self.qc: InferQC | None = None  # set by infer()
        self.regions = region_chain_of(first)

    def chain(self, layout: str, path: Path) -> Any:
        """The preprocessing chain for files of `layout` (built once per layout and file kind)."""
        kind = "".join(path.suffixes[-2:]).lower()
        key = (layout, kind)
        if key not in self._chains:
            self._chains[key] = chain_for(self.plan.preprocess, layout, with_label=False, record_qc=True, path=path)
        return self._chains[key]

    @torch.inference_mode()
    def probabilities(self, image: torch.Tensor, sliding_window: bool) -> torch.Tensor:
        """Softmax probabilities (C, ...), or sigmoid region probabilities (R, ...), averaged over fold models and mirrored copies."""
        x = image[None].to(self.device)
        roi = list(self.icfg.roi_size or self.models[0].config.train.patch_size or self.plan.patch_size)
        with autocast(self.precision, self.device):
            return mean_probabilities(self.nets, x, roi, self.icfg, self.network["spatial_dims"], self.network["out_channels"],
                                      self.regions is not None, sliding_window, self.device)[0]


def predict_labels(segmenter: Segmenter, image: torch.Tensor, sliding_window: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (1, ...) of a preprocessed channel-first image (argmax, or nested regions decoded
    into the dataset's label values), and the probabilities, both on the CPU."""
    probs = segmenter.probabilities(image, sliding_window)
    return labels_of(probs, segmenter.regions, segmenter.icfg.threshold).cpu(), probs.cpu()


def prepare(segmenter: Segmenter, case: Case) -> dict[str, Any]:
    """A case read and preprocessed (the chain's data: image, QC features)."""
    layout = str(case.attrs.get("layout", "generic"))
    source = str(case.images[0]) if len(case.images) == 1 else [str(p) for p in case.images]
    return segmenter.chain(layout, case.images[0])({"image": source})


def segment_case(segmenter: Segmenter, case: Case, sliding_window: bool, with_probabilities: bool = False) -> tuple[np.ndarray, Any, np.ndarray | None]:
    """Preprocess, predict, invert and post-process one case.

    Returns:
        Labels on the input's voxel grid, the input's original affine (RAS) as read, and
        (if asked) the class probabilities on the input's grid, channel last.
    """
    layout = str(case.attrs.get("layout", "generic"))
    qc: InferQC | None = segmenter.qc  # checks, confidence and uncertainty of this run (segpipe.qc)
    chain = segmenter.chain(layout, case.images[0])
    data = qc.prepared(case) if qc is not None else None  # read already for its patient's pooled checks
    if data is None:
        try:
            data = prepare(segmenter, case)
        except Exception as exc:  # any reader failure is a bad file
            raise reader_error(exc, case.images[0], "cannot read image") from None
    if qc is not None:
        qc.before(case.images[0], data, case)  # out-of-distribution flags; --strict refuses here
    channels = data["image"].shape[0]
    if channels != segmenter.network["in_channels"]:
        raise SegpipeError(
            f"{case.images[0]}: has {channels} channel(s), the model expects {segmenter.network['in_channels']}"
        )
    pred, probs = predict_labels(segmenter, data["image"].as_tensor(), sliding_window)
    if qc is not None:
        qc.predicted(chain, data, pred, probs)
    labels = invert_to_input(chain, data, pred)[0].numpy()
    icfg = segmenter.icfg
    labels = postprocess(labels, icfg.keep_largest, icfg.min_component_size)
    inverted_probs = None
    if with_probabilities and probs is not None:
        inverted_probs = invert_to_input(chain, data, probs, nearest=False).numpy()
        if segmenter.regions is None:  # softmax: voxels outside the foreground crop come back all 0, and are background
            inverted_probs[0] += np.clip(1.0 - inverted_probs.sum(axis=0), 0.0, 1.0)
        inverted_probs = np.moveaxis(inverted_probs, 0, -1)
    return labels, data["image"].meta.get("original_affine"), inverted_probs


def load_models(model_dir: str | Path, checkpoint: str | None, folds: str | None) -> list[TrainedModel]:
    """A model folder, or the fold_<k> model folders inside it (`folds`: "all" or "0,2,4")."""
    return [load_model_folder(d, checkpoint) for d in fold_folders(model_dir, folds)]


def parse_shard(text: str | None) -> tuple[int, int]:
    """`i/n` -> (i, n), checked; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise SegpipeError(f"option --shard: expected i/n such as 0/4, got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise SegpipeError(f"option --shard: {text!r} needs 0 <= i < n")
    return i, n


def infer(
    model_dir: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    sliding_window: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
    folds: str | None = None,
    shard: str | None = None,
    probabilities: bool = False,
    dicom_seg: bool = False,
    keep_going: bool = False,
    rtstruct: bool = False,
    strict: bool = False,
    uncertainty: bool = False,
) -> InferResult:
    """Segment every input case into `output_dir`, one mask per case in the input's form.

    `overrides` are `infer.*` config keys given on the command line; the rest comes
    from the model folder's config.yaml. Cases whose output exists are skipped unless
    `overwrite`. `shard` "i/n" takes every n-th case from the i-th, so n processes split
    a cohort without overlap. With `dicom_seg`, DICOM series also get a DICOM-SEG
    (`<case>_seg.dcm`, through highdicom) beside the NIfTI mask; with `rtstruct`, an RT
    Structure Set (`<case>_rtstruct.dcm`, through rt-utils, one ROI per label and region). With `keep_going`, a case
    that fails with a user error is recorded in `failed` and the run goes on. Every case
    is checked against the model's training fingerprint and given a confidence
    (segpipe.qc), and `cases.csv` lists volumes, confidence and flags; with `strict`, a
    flagged case is refused (recorded in `refused`) instead of segmented; `uncertainty`
    writes each case's voxel entropy map beside its mask. Each mask is written to a temporary name and renamed into
    place, so an interrupted run leaves no partial file.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if rtstruct:
        from segpipe.writers.rtstruct import require_rt_utils

        require_rt_utils()  # a missing extra is named before any work
    if overrides.get("reuse_memory", True):
        keep_freed_memory()  # before any large allocation: later it no longer takes effect
    models = load_models(model_dir, overrides.get("checkpoint"), folds)
    icfg = merge_dict(models[0].config, {"infer": overrides}, "command line").infer
    if "threshold" not in overrides:
        icfg.threshold = tuned_threshold(models, icfg.threshold)
    foreground = models[0].folder.plan.label_ids
    if stray := [v for v in icfg.keep_largest if v not in foreground]:  # background or a label the model lacks
        raise SegpipeError(f"option infer.keep_largest: {', '.join(map(str, stray))} is not a foreground label of "
                           f"{model_dir} (labels {', '.join(map(str, foreground))}); it would change nothing")
    segmenter = Segmenter(models, icfg)
    index, count = parse_shard(shard)
    found = discover_inputs(inputs)
    cases = found[index::count]
    out = Path(output_dir)
    check_own(out, {cases_file(index, count): csv_with("case", "status")}, "infer")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".segpipe-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
        remove_stale_partials(out)  # left by a run killed mid-write; live writers' files are kept
    except OSError as exc:
        raise SegpipeError(f"{out}: cannot write to the output folder ({exc.strerror})") from None
    result = InferResult(precision=segmenter.precision, threshold=icfg.threshold)
    qc = segmenter.qc = InferQC(segmenter.plan, segmenter.network, _regions(models[0]), segmenter.precision,
                                strict=strict, uncertainty=uncertainty, region_outputs=segmenter.regions)
    slice_patient = patient_regex(models[0].config.preprocess.patient_pattern)
    qc.pool_patients(found, lambda case: prepare(segmenter, case), lambda case_id: patient_of(case_id, slice_patient), cases)
    try:
        _segment_all(segmenter, cases, out, result, qc, sliding_window=sliding_window, overwrite=overwrite, quiet=quiet,
                     probabilities=probabilities, dicom_seg=dicom_seg, keep_going=keep_going, rtstruct=rtstruct)
    finally:  # the table of the cases done so far, also when a case stops the run
        result.cases = qc.rows
        result.warnings = [m.warning for m in models if m.warning] + qc.warnings
        result.cases_csv = qc.write(out, (index, count))
    return result


def _regions(model: TrainedModel) -> dict[str, list[int]]:
    return model.plan.regions(model.config.evaluate.regions)


def _segment_all(segmenter: Segmenter, cases: list[Case], out: Path, result: InferResult, qc: InferQC, *,
                 sliding_window: bool, overwrite: bool, quiet: bool, probabilities: bool, dicom_seg: bool,
                 keep_going: bool, rtstruct: bool = False) -> None:
    started = time.perf_counter()
    for case in progress(cases, desc="infer", unit="case", quiet=quiet):
        layout = str(case.attrs.get("layout", "generic"))
        target = out / output_name(case.case_id, layout, case.images[0])
        probability_file, uncertainty_file = out / probability_name(case.case_id, layout), out / uncertainty_name(case.case_id, layout)
        sides = [*([probability_file] if probabilities else []), *([uncertainty_file] if qc.uncertainty else [])]
        existing = next((p for p in (target, *sides) if p.exists()), None)
        if existing is not None and not overwrite:  # a file of the case's that this run would replace
            result.skipped.append(existing)
            continue
        qc.start()
        try:
            labels, original_affine, probs = segment_case(segmenter, case, sliding_window, probabilities)
        except Refused as exc:
            result.refused.append((case.images[0], str(exc)))
            qc.done(case.case_id, case.images[0], None, None, None, "refused")
            continue
        except SegpipeError as exc:
            qc.done(case.case_id, case.images[0], None, None, None, "failed")
            if not keep_going:
                if any(str(image) in str(exc) for image in case.images):
                    raise
                raise SegpipeError(f"{case.images[0]}: {exc}") from exc  # the one line names the case's file
            result.failed.append((case.images[0], str(exc)))
            continue
        entropy = qc.take_uncertainty()
        if entropy is not None:
            write_probabilities(layout, case.images[0], entropy, uncertainty_file, original_affine)
        if probs is not None:
            write_probabilities(layout, case.images[0], probs, probability_file, original_affine)
        if dicom_seg and layout == "dicom":
            from segpipe.writers.dicom_seg import write_dicom_seg

            write_dicom_seg(case.images[0], labels, segmenter.plan.label_names, out / f"{case.case_id}_seg.dcm")
        if rtstruct and layout == "dicom":
            from segpipe.writers.rtstruct import write_rtstruct

            write_rtstruct(case.images[0], labels, segmenter.plan.label_names, _regions(segmenter.models[0]), out / f"{case.case_id}_rtstruct.dcm")
        write_mask(layout, case.images[0], labels, target, original_affine)
        result.written.append(target)
        qc.done(case.case_id, case.images[0], target, labels, original_affine, "ok")
    if result.written:
        result.seconds_per_case = (time.perf_counter() - started) / len(result.written)

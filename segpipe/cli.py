"""Command-line front end. Heavy modules (torch, MONAI) are imported inside the commands,
so `segpipe --help` is instant."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from segpipe import __version__
from segpipe.cli_common import common_options, emit_json, guard_outputs, meta, quiet_libraries, set_meta, silent
from segpipe.data.layouts import describe_layouts, layout_names
from segpipe.errors import SegpipeError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `docker stop`, `kill`): unwound like Ctrl-C, so that the output
    guard removes what the run made."""


def _terminate(pid: int) -> Callable[[int, Any], None]:
    def handler(signum: int, _frame: Any) -> None:
        if os.getpid() != pid:  # a worker forked with this handler dies as it would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated

    return handler


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in this process (main thread only)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate(os.getpid()))
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SegpipeGroup(click.Group):
    """A group that turns user errors into one line and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_unwinds():
                return super().invoke(ctx)
        except Terminated:
            click.echo("terminated", err=True)
            ctx.exit(143)
        except SegpipeError as exc:
            if ctx.meta.get("segpipe.debug"):
                raise
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            ctx.exit(1)
        except OSError as exc:
            if ctx.meta.get("segpipe.debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug or an unforeseen input: still one line, traceback with --debug
            if ctx.meta.get("segpipe.debug"):
                raise
            text = " ".join(str(exc).split())[:500]
            click.echo(f"error: {type(exc).__name__}{': ' + text if text else ''} (internal error; rerun with --debug for the traceback)", err=True)
            ctx.exit(1)


def config_options(func):
    """--config and --set for commands driven by the typed configuration."""
    func = click.option(
        "--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. --set train.epochs=10 (repeatable).",
    )(func)
    func = click.option(
        "--config", "config_path", type=str, default=None, metavar="YAML|NAME",
        help="Config file, or the name of a ready config (demo, msd_3d). Defaults apply to keys it omits.",
    )(func)
    return func


def _config(config_path: str | None, overrides: tuple[str, ...], base: dict | None = None):
    from segpipe.config import config_from_dict, load_config, merge_dict, parse_override
    from segpipe.configs import resolve_config

    if base is not None and config_path is None:
        cfg = config_from_dict(base, "model folder config.yaml")
        for text in overrides:
            section, key, value = parse_override(text)
            merge_dict(cfg, {section: {key: value}}, f"override '{text}'")
        return cfg
    return load_config(resolve_config(config_path) if config_path is not None else None, overrides)


def _parse_ints(value: str | None, option: str, example: str = "96,96,96") -> list[int] | None:
    if value is None:
        return None
    try:
        numbers = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        numbers = None
    if numbers is None or (not numbers and value.strip()):  # "x" or "," alone holds no integer
        raise SegpipeError(f"option {option}: expected integers like {example}, got {value!r}")
    return numbers


@click.group(cls=SegpipeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="segpipe")
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=set_meta("segpipe.debug"),
              help="Show full tracebacks instead of one-line errors.")
def cli() -> None:
    """segpipe: brain-tumour segmentation from raw dataset to per-patient report.

    \b
    The pipeline, one verb per stage:
      segpipe preprocess --input RAW --output PREPARED
      segpipe fit        --data PREPARED --output MODEL
      segpipe infer      --model MODEL --input IMAGES --output PREDICTIONS --sliding-window
      segpipe evaluate   --pred PREDICTIONS --labels REFERENCES --output REPORTS
    `segpipe demo` runs all four on a synthetic dataset it makes itself.

    Each verb reads only inside its inputs, never writes over or inside them, and locks
    its output folder; images over SEGPIPE_MAX_IMAGE_MEMORY (default 2GiB) are refused
    before loading. See docs/limits.md.
    """


@cli.command()
@click.option("--input", "-i", "input_dir", required=True, type=click.Path(path_type=Path),
              help="Raw dataset folder, in any layout segpipe reads.")
@click.option("--output", "-o", "output_dir", default=None, type=click.Path(path_type=Path),
              help="Prepared-dataset folder to write (plan.json, splits.json, manifest.json, cases/).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Parallel worker processes. [default: all cores]")
@click.option("--layout", type=click.Choice(layout_names()),
              default=None, help="Dataset layout (preprocess.layout). [default: detected]")
@click.option("--keep-going", is_flag=True, help="Skip a case that cannot be preprocessed, go on, and list the skipped cases at the end.")
@click.option("--verify-only", is_flag=True,
              help="Only check the dataset (missing files, shape/spacing/affine mismatches, undeclared labels, "
                   "NaN/Inf, channel counts, duplicate ids, empty labels) and print the report; exit 1 if unusable.")
@config_options
@common_options
def preprocess(input_dir: Path, output_dir: Path | None, workers: int | None, layout: str | None, keep_going: bool, verify_only: bool,
               config_path: str | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Verify, fingerprint, normalise and cache a dataset.

    \b
    Layouts (detected in this order):
      {layouts}

    Reads every training case, reorients 3D images to RAS, crops to the brain, z-scores
    each channel over the brain and resamples to the target spacing (the median spacing
    unless preprocess.target_spacing is set). Re-running only touches new or changed cases.
    """
    quiet_libraries()
    from segpipe.pipeline.preprocess import open_dataset
    from segpipe.pipeline.preprocess import preprocess as run

    quiet = silent(quiet)
    extra = (*overrides, f"preprocess.layout={layout}") if layout else overrides
    cfg = _config(config_path, extra)
    if verify_only:
        from segpipe.data.verify import verify_dataset

        from segpipe.data.guard import reading_inside

        with reading_inside(input_dir):
            report = verify_dataset(open_dataset(input_dir, cfg), progress=not quiet)
        summary = {"usable": report.usable, "cases": report.cases,
                   "errors": [{"path": str(f.path), "message": f.message} for f in report.errors],
                   "warnings": [{"path": str(f.path), "message": f.message} for f in report.warnings]}
        if not emit_json(summary):
            click.echo(report.format())
        if not report.usable:
            raise click.exceptions.Exit(1)
        return
    if output_dir is None:
        raise SegpipeError("option --output: required unless --verify-only")
    started = time.perf_counter()
    with guard_outputs("preprocess", [output_dir], [input_dir]):
        result = run(input_dir, output_dir, cfg, workers=workers or os.cpu_count() or 1, quiet=quiet, keep_going=keep_going)
    if emit_json({"output": result.output, "cases": result.cases, "reused": result.reused,
                   "seconds": round(time.perf_counter() - started, 2), "target_spacing": result.plan["target_spacing"],
                   "patch_size": result.plan["patch_size"], "normalization": result.plan["normalization_choice"],
                   "folds": result.folds, "notes": result.notes,
                   "failed": [{"case": c, "error": e} for c, e in result.failed]}):
        pass
    elif not quiet:
        from segpipe.artifacts.normalization import describe as describe_normalization

        plan = result.plan
        click.echo(
            f"prepared {result.cases} case(s) ({result.reused} reused from the cache) in "
            f"{time.perf_counter() - started:.1f} s\n"
            f"  target spacing {plan['target_spacing']} mm, patch size {plan['patch_size']}\n"
            f"  normalisation: {describe_normalization(plan['normalization_choice'])}\n"
            f"  plan:     {output_dir / 'plan.json'}\n  splits:   {output_dir / 'splits.json'}\n"
            f"  manifest: {output_dir / 'manifest.json'}"
        )
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        if result.folds != cfg.preprocess.folds and not result.notes:
            click.echo(f"note: splits.json holds {result.folds} fold(s), not the {cfg.preprocess.folds} of "
                       "preprocess.folds (fewer patients than folds, or the dataset's own folds)", err=True)
    _report_failures(result.failed)


preprocess.help = (preprocess.help or "").replace("{layouts}", describe_layouts("\n      "))


@cli.command()
@click.option("--data", "-d", "prepared_dir", required=True, type=click.Path(path_type=Path),
              help="Prepared-dataset folder written by `segpipe preprocess`.")
@click.option("--output", "-o", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder to write (config.yaml, plan.json, checkpoints/, metrics.csv, curves.png).")
@click.option("--fold", default=None, metavar="K|all",
              help="Validation fold from splits.json (train.fold), or 'all' to train every fold into OUTPUT/fold_<k>/.")
@click.option("--all-cases", is_flag=True, default=None,
              help="Train on every case with no validation fold (nnU-Net's 'all' fold; train.all_cases): best.pt is last.pt.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Number of epochs (train.epochs).")
@click.option("--resume", is_flag=True, help="Continue from the model folder's checkpoints/last.pt, exactly where it stopped.")
@click.option("--epochs-this-run", type=click.IntRange(min=1), default=None,
              help="Stop after this many epochs (the schedule still spans all epochs); continue later with --resume.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, metavar="MODEL_DIR",
              help="Start from this model folder's best weights (fine-tuning; train.init_from): the stem is re-initialised "
                   "if the channel counts differ, the head if the label sets differ. Needs the same architecture.")
@click.option("--device", default=None, help="torch device to train on, e.g. cpu or cuda:0 (train.device). [default: cpu]")
@config_options
@common_options
def fit(prepared_dir: Path, model_dir: Path, fold: str | None, all_cases: bool | None, epochs: int | None, resume: bool,
        epochs_this_run: int | None, init_from: Path | None, device: str | None, config_path: str | None,
        overrides: tuple[str, ...], quiet: bool) -> None:
    """Train a U-Net or LinkNet with MONAI's DiceCELoss on one fold.

    Each epoch draws patches with foreground oversampling and the configured MONAI
    augmentations (train.augment), validates on the fold's validation cases with
    sliding-window inference (Dice per label and region, a patient's slices pooled, as
    `segpipe evaluate` reports it), and saves
    checkpoints/last.pt (and best.pt when validation Dice improves) atomically.

    \b
    Several processes or machines: torchrun --nproc_per_node=N -m segpipe fit ...
    (DistributedDataParallel; see docs/training.md).
    """
    quiet_libraries()
    from segpipe.artifacts.prepared import load_prepared
    from segpipe.pipeline.fit import fit as run
    from segpipe.pipeline.fit import fit_folds
    from segpipe.runtime.distributed import is_main_process
    from segpipe.training.handlers import selection_caution

    quiet = silent(quiet)
    all_folds = fold == "all"
    if fold is not None and not all_folds and not fold.isdigit():
        raise SegpipeError(f"option --fold: expected a fold number or 'all', got {fold!r}")
    if all_cases and fold is not None:
        raise SegpipeError("option --all-cases: trains on every case with no validation fold; leave out --fold")
    base = None
    config_file = model_dir / "config.yaml" if not all_folds else model_dir / "fold_0" / "config.yaml"
    if resume and config_file.is_file():
        from segpipe.artifacts.model_folder import read_config

        base = read_config(config_file)
    extra = list(overrides)
    if fold is not None and not all_folds:
        extra.append(f"train.fold={fold}")
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if all_cases:
        extra.append("train.all_cases=true")
    if device is not None:
        extra.append(f"train.device={device}")
    cfg = _config(config_path, tuple(extra), base)
    if init_from is not None:
        cfg.train.init_from = str(init_from.resolve())
    plan = load_prepared(prepared_dir).plan if prepared_dir.is_dir() else {}
    source = plan.get("source") if isinstance(plan, dict) and isinstance(plan.get("source"), str) else None
    if resume and not model_dir.exists():  # before the output guard makes it: a mistyped --output
        raise SegpipeError(f"{model_dir / 'checkpoints' / 'last.pt'}: nothing to resume from")
    with guard_outputs("fit", [model_dir], [prepared_dir, source, init_from]):  # never a model folder inside the data
        if all_folds:
            results = fit_folds(prepared_dir, model_dir, cfg, load_prepared(prepared_dir).folds, resume=resume, quiet=quiet)
        else:
            results = [run(prepared_dir, model_dir, cfg, resume=resume, quiet=quiet, epochs_this_run=epochs_this_run)]
    if not is_main_process():  # torchrun: rank 0 reports for all
        return
    if emit_json({"models": [{"model_dir": r.model_dir, "epochs": r.epochs, "best_epoch": r.best_epoch,
                               "best_val_dice": None if r.best_metric != r.best_metric else r.best_metric,
                               "val_patients": r.val_patients, "stopped_early": r.stopped_early,
                               "precision": r.precision, "threshold": r.threshold} for r in results]}):
        pass
    elif not quiet:
        for result in results:
            scored = result.best_metric == result.best_metric and abs(result.best_metric) != float("inf")
            at = f" and foreground threshold {result.threshold:g}" if result.threshold is not None else ""
            best = (f"best validation Dice {result.best_metric:.4f} at epoch {result.best_epoch}{at}"
                    f"{selection_caution(result.val_patients)}" if scored
                    else "no validation Dice was scored (no validation cases, or none with a label)")
            click.echo(f"{result.model_dir}: trained to epoch {result.epochs} in {result.precision}; {best}")


@cli.command()
@click.option("--model", "-m", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder written by `segpipe fit`.")
@click.option("--input", "-i", "inputs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Image file, folder of images, or dataset folder of any layout preprocess reads (a "
                   "Decathlon or slice folder: its test cases, else its training cases, unless imagesTs/ holds "
                   "images dataset.json does not list; a BraTS cohort, "
                   "pair folder, MAT folder or DICOM folder: every case). Repeatable.")
@click.option("--output", "-o", "output_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the masks, one <case>.nii.gz per input, in the input's geometry.")
@click.option("--sliding-window/--whole-image", default=True, show_default=True,
              help="Sweep the network over ROI-sized windows (MONAI sliding_window_inference), or run it on the whole image at once.")
@click.option("--roi-size", default=None, metavar="X,Y,Z", help="Window size. [default: the training patch size]")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=None, help="Window overlap. [default: 0.5]")
@click.option("--mode", type=click.Choice(["gaussian", "constant"]), default=None, help="Blending of overlapping windows. [default: gaussian]")
@click.option("--sw-batch-size", type=click.IntRange(min=1), default=None, help="Windows per forward pass. [default: 2]")
@click.option("--device", default=None, help="torch device, e.g. cpu or cuda:0. [default: cpu]")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default=None, help="Which weights. [default: best]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="Arithmetic: bf16 autocast on CPU or CUDA, fp16 on CUDA only; auto picks bf16 on a CPU whose "
                   "bf16 kernels measure clearly faster than fp32 ones, else fp32 (bf16 or fp16 on CUDA), and keeps a "
                   "model trained in fp32 in fp32 on CPU, as its validation scored it. [default: auto]")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads. [default: torch's choice]")
@click.option("--tta/--no-tta", default=None, help="Average over mirrored copies along every spatial axis. [default: the model's infer.tta (msd_2d: on; otherwise off)]")
@click.option("--folds", default=None, metavar="all|K,K,...",
              help="MODEL holds fold_<k>/ model folders (fit --fold all): ensemble these. [default: all]")
@click.option("--shard", default=None, metavar="I/N",
              help="Segment only every N-th case starting at the I-th, so N processes or machines split a cohort.")
@click.option("--probabilities", is_flag=True,
              help="Also write class probabilities (<case>_probabilities.nii.gz, or .npy for slices, indexed like the "
                   "mask: rows, columns, classes) in the input's geometry.")
@click.option("--dicom-seg", is_flag=True,
              help="For DICOM series inputs, also write a DICOM-SEG (<case>_seg.dcm) referencing the series (needs highdicom).")
@click.option("--rtstruct", is_flag=True,
              help="For DICOM series inputs, also write an RT Structure Set (<case>_rtstruct.dcm), one ROI per label and "
                   "region, for radiotherapy planning systems (needs rt-utils: pip install 'segpipe[rtstruct]').")
@click.option("--keep-largest", default=None, metavar="LABEL,...",
              help="Keep only the largest connected component of these labels (\"\" keeps none, overriding the "
                   "model's infer.keep_largest).")
@click.option("--min-size", type=click.IntRange(min=0), default=None,
              help="Remove connected components smaller than this many voxels. [default: 0]")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Foreground where the summed foreground probability (for region models, each region's) exceeds "
                   "this. [default: the threshold the checkpoint was validated with (train.threshold_grid, as in "
                   "figshare_2d; the mean over an ensemble's folds), else infer.threshold, else the argmax]")
@click.option("--skip-empty/--no-skip-empty", default=None,
              help="Skip windows that hold only background (zeros after normalisation). [default: on]")
@click.option("--channels-last/--no-channels-last", default=None, help="Channels-last memory format for the network and windows. [default: on]")
@click.option("--reuse-memory/--no-reuse-memory", default=None,
              help="CPU: keep freed memory for reuse instead of returning it to the system (much faster for 3D). [default: on]")
@click.option("--fuse/--no-fuse", default=None,
              help="Fold batch norms into convolutions and run instance norm + ReLU in one in-place step; same masks, faster. [default: on]")
@click.option("--overwrite", is_flag=True, help="Replace masks that already exist (they are skipped otherwise).")
@click.option("--keep-going", is_flag=True, help="Skip a case that cannot be read, go on, and list the skipped cases at the end.")
@click.option("--strict", is_flag=True,
              help="Refuse (do not segment) cases flagged out of distribution, list them and exit 1; without it they are "
                   "segmented with a warning. Flags are in OUTPUT/cases.csv either way.")
@click.option("--uncertainty", is_flag=True,
              help="Also write a voxel uncertainty map (softmax entropy / log(classes), 0 certain to 1 uniform): "
                   "<case>_uncertainty.nii.gz, or .npy for slices (rows, columns), in the input's geometry.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Reference masks (folder or dataset): evaluate the masks in the same run, reports in OUTPUT/evaluation/.")
@common_options
def infer(model_dir: Path, inputs: tuple[Path, ...], output_dir: Path, sliding_window: bool, roi_size: str | None,
          overlap: float | None, mode: str | None, sw_batch_size: int | None, device: str | None,
          checkpoint: str | None, precision: str | None, threads: int | None, tta: bool | None, folds: str | None,
          shard: str | None, probabilities: bool, dicom_seg: bool, rtstruct: bool, keep_largest: str | None, min_size: int | None,
          threshold: float | None,
          skip_empty: bool | None, channels_last: bool | None, reuse_memory: bool | None, fuse: bool | None,
          overwrite: bool, keep_going: bool, strict: bool, uncertainty: bool, labels: Path | None,
          quiet: bool) -> None:
    """Segment images and write masks with the input's own shape and geometry.

    Each image goes through the model's preprocessing, the network (MONAI
    sliding_window_inference with gaussian blending by default) and the exact inverse of
    the preprocessing (resampling, cropping, reorientation). NIfTI in, NIfTI out; NRRD/MHA
    in, the same out; PNG slices or MAT-files in, PNG masks out; DICOM series in, NIfTI in
    the series' geometry out. A 2D model given volumes segments them slice by slice.

    Every run also writes OUTPUT/cases.csv: per case the volume (ml) and voxel count of
    each label and region, the tumour's connected components, the arithmetic, seconds, a
    confidence (expected Dice, no ground truth needed), out-of-distribution flags (checked
    against the model's training fingerprint before segmenting) and needs_review.
    """
    quiet_libraries()
    from segpipe.pipeline.infer import infer as run

    quiet = silent(quiet)
    overrides = {
        "roi_size": _parse_ints(roi_size, "--roi-size"), "overlap": overlap, "mode": mode,
        "sw_batch_size": sw_batch_size, "device": device, "checkpoint": checkpoint, "precision": precision,
        "threads": threads, "tta": tta, "keep_largest": _parse_ints(keep_largest, "--keep-largest", "1,3"),
        "min_component_size": min_size, "skip_empty": skip_empty, "channels_last": channels_last,
        "fuse": fuse, "reuse_memory": reuse_memory, "threshold": threshold,
    }
    click.get_current_context().with_resource(guard_outputs("infer", [output_dir], [*inputs, model_dir, labels]))
    result = run(model_dir, list(inputs), output_dir, overrides, sliding_window=sliding_window, overwrite=overwrite,
                 quiet=quiet, folds=folds, shard=shard, probabilities=probabilities, dicom_seg=dicom_seg,
                 keep_going=keep_going, rtstruct=rtstruct, strict=strict, uncertainty=uncertainty)
    summary: dict[str, Any] = {"written": result.written, "skipped_existing": result.skipped,
                               "failed": [{"input": p, "error": e} for p, e in result.failed],
                               "refused": [{"input": p, "error": e} for p, e in result.refused],
                               "seconds_per_case": round(result.seconds_per_case, 3), "precision": result.precision,
                               "threshold": result.threshold,
                               "cases_csv": result.cases_csv, "cases": result.cases, "warnings": result.warnings}
    if labels is None and emit_json(summary):
        pass
    elif not quiet:
        click.echo(
            f"wrote {len(result.written)} mask(s) to {output_dir}"
            + (f", {result.seconds_per_case:.1f} s per case ({result.precision}"
               + (f", threshold {result.threshold:g}" if result.threshold is not None else "") + ")"
               if result.written else "")
            + (f"; skipped {len(result.skipped)} existing (use --overwrite)" if result.skipped else "")
        )
    if not quiet and not meta("segpipe.json"):
        _report_qc(result)  # with --json the warnings are in the document
    if labels is not None and (result.written or result.skipped):  # what was segmented is scored, failures or not
        from segpipe.artifacts.model_folder import ModelFolder, first_model_folder
        from segpipe.pipeline.evaluate import evaluate as run_evaluate

        model = ModelFolder.open(first_model_folder(model_dir))
        report = run_evaluate(output_dir, labels, output_dir / "evaluation", _evaluate_config(model.config),
                              model.plan.label_names, quiet=quiet)
        summary["evaluation"] = _evaluation_summary(report)
        if emit_json(summary):
            pass
        elif not quiet:
            click.echo(report.matched_line())
            _warn(report.warnings)
            _print_summary(report.per_patient)
            click.echo(f"reports in {output_dir / 'evaluation'}")
    elif labels is not None:
        emit_json(summary)
    _report_failures(result.failed + result.refused)


def _warn(lines: list[str]) -> None:
    """Warning lines on standard error (with --json they are the document's "warnings")."""
    for line in lines:
        click.echo(f"warning: {line}", err=True)


@cli.command()
@click.option("--pred", "-p", "pred_dir", required=True, type=click.Path(path_type=Path), help="Folder of predicted masks.")
@click.option("--labels", "-l", required=True, type=click.Path(path_type=Path),
              help="Folder of reference masks (named like the predictions), or a dataset folder of any layout "
                   "preprocess reads (every labelled split counts: training, test_labels/, labelsTs/).")
@click.option("--output", "-o", "output_dir", required=True, type=click.Path(path_type=Path),
              help="Folder for per_patient.csv, summary.csv and summary.json.")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Folder of the images, for overlays. [default: the dataset's images, or the folder beside "
                   "--labels (test_labels/ -> test_images/, labelsTs/ -> imagesTs/)]")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder: its label names name the columns and the report; its training curves go into the report.")
@click.option("--lesion-wise", is_flag=True,
              help="Also score each region lesion by lesion as BraTS 2023 does (lesion-wise Dice and HD95; missed and "
                   "false-positive lesions count against it) and PQ/RQ/SQ, through panoptica (pip install 'segpipe[lesion]').")
@config_options
@common_options
def evaluate(pred_dir: Path, labels: Path, output_dir: Path, images: Path | None, model_dir: Path | None, lesion_wise: bool,
             config_path: str | None, overrides: tuple[str, ...], quiet: bool) -> None:
    """Per-patient Dice, HD95 (mm), volumes (ml), sensitivity and precision.

    Scores each label and each region (evaluate.regions; by default the BraTS regions
    whole tumour, tumour core and enhancing tumour for MSD or BraTS label sets). Slices of
    one patient are pooled before scoring: the patient comes from the dataset, else from
    the file name through evaluate.patient_pattern (or preprocess.patient_pattern; default
    the BRATS_<id> of BRATS_<id>_z<slice>). A BraTS-layout --labels dataset is scored in
    the --model's label values, else in preprocess.label_set's (msd or brats). Writes
    per_patient.csv, per_case.csv, summary.csv, summary.json, overlays of the best, median
    and worst patients and report.html.
    """
    quiet_libraries()
    from segpipe.pipeline.evaluate import evaluate as run

    quiet = silent(quiet)
    cfg = _config(config_path, overrides)
    with guard_outputs("evaluate", [output_dir], [pred_dir, labels, images, model_dir]):
        result = run(pred_dir, labels, output_dir, _evaluate_config(cfg), images=images, model_dir=model_dir, quiet=quiet,
                     lesion_wise=lesion_wise, label_set=cfg.preprocess.label_set)
    if emit_json(_evaluation_summary(result)):
        pass
    elif not quiet:
        click.echo(result.matched_line())
        _warn(result.warnings)
        _print_summary(result.per_patient)
        if lesion_wise:
            regions = [c.removeprefix("lesion_dice_") for c in result.per_patient.columns if c.startswith("lesion_dice_")]
            table = result.per_patient[["patient"]].copy()
            for r in regions:
                table[r] = result.per_patient[f"lesion_dice_{r}"]
                table["missed"], table["false_pos"] = result.per_patient[f"lesions_fn_{r}"], result.per_patient[f"lesions_fp_{r}"]
                table = table.rename(columns={"missed": f"{r}_missed", "false_pos": f"{r}_false_pos"})
            click.echo("Lesion-wise Dice (BraTS 2023), missed and false-positive lesions per patient:")
            _print_table(table)
        click.echo(f"reports in {output_dir}: " + ", ".join(f.name for f in result.files))


def _evaluate_config(cfg: Any) -> Any:
    """The evaluate section, its patient pattern defaulting to preprocess.patient_pattern."""
    from dataclasses import replace

    return replace(cfg.evaluate, patient_pattern=cfg.evaluate.patient_pattern or cfg.preprocess.patient_pattern)


def _evaluation_summary(result: Any) -> dict[str, Any]:
    """Patients, files, the references matched and the mean of every per-patient column, for --json."""
    means = result.summary.set_index("metric")["mean"]
    return {"patients": int(len(result.per_patient)), "files": result.files, "references": result.references,
            "mean": {k: (None if v != v else float(v)) for k, v in means.items()}, "warnings": result.warnings}


def _report_qc(result: Any) -> None:
    """One warning line per out-of-distribution flag, and the cases to review."""
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)
    review = [r["case"] for r in result.cases if r.get("needs_review")]
    if result.cases_csv is not None:
        click.echo(f"{len(review)} of {len(result.cases)} case(s) need review (needs_review in {result.cases_csv})")


def _report_failures(failed: list) -> None:
    """List the cases --keep-going skipped, then exit 1 so scripts notice."""
    if not failed:
        return
    click.echo(f"skipped {len(failed)} case(s) that could not be processed:", err=True)
    for path, message in failed:
        text = " ".join(message.split())
        click.echo(f"  {text}" if str(path) in text else f"  {path}: {text}", err=True)  # the path once
    raise click.exceptions.Exit(1)


def _print_summary(per_patient) -> None:
    """Per-patient Dice table (the full metrics are in the CSV files)."""
    cols = ["patient", *[c for c in per_patient.columns if c.startswith("dice_")]]
    frame = per_patient[cols].rename(columns=lambda c: c.removeprefix("dice_"))
    click.echo("Dice per patient:")
    _print_table(frame)


def _print_table(frame) -> None:
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        click.echo(frame.to_string(index=False))


@cli.command()
@click.option("--output", "-o", "output_dir", type=click.Path(path_type=Path), default=Path("demo_output"),
              show_default=True, help="Folder for the synthetic dataset and every artifact.")
@click.option("--cases", type=click.IntRange(min=3), default=12, show_default=True, help="Synthetic training cases.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override the demo config's epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic data and training.")
@common_options
def demo(output_dir: Path, cases: int, epochs: int | None, seed: int, quiet: bool) -> None:
    """Make a synthetic Decathlon-layout dataset, then preprocess, fit, infer and evaluate it.

    Takes a few minutes on 2 CPU cores. Held-out cases are scored against their
    synthetic reference masks.
    """
    quiet_libraries()
    from segpipe.pipeline.demo import run_demo

    with guard_outputs("demo", [output_dir], []):  # a second demo into the folder is refused, not interleaved
        result = run_demo(output_dir, cases=cases, epochs=epochs, seed=seed, quiet=silent(quiet))
    if emit_json({"mean_dice": result.mean_dice, "seconds": round(result.seconds, 1),
                  "per_patient": result.per_patient.to_dict(orient="records"),
                  "paths": {name: Path(path).resolve() for name, path in result.paths.items()}}):
        pass
    elif not quiet:
        _print_summary(result.per_patient)
        click.echo(f"\nmean Dice over held-out cases: {result.mean_dice:.3f} ({result.seconds:.0f} s in all)")
        for name, path in result.paths.items():
            click.echo(f"  {name:<12} {path}")


from segpipe.cli_export import export  # noqa: E402 - defined beside, registered here

cli.add_command(export)

from segpipe.cli_report import report  # noqa: E402 - defined beside, registered here

cli.add_command(report)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="segpipe")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

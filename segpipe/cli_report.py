"""`segpipe report`: registered on the CLI group in segpipe/cli.py (`cli.add_command(report)`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from segpipe.cli_common import common_options, emit_json, guard_outputs, quiet_libraries, silent


@click.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--open", "open_browser", is_flag=True, help="Also open report.html in the default web browser.")
@click.option("--rebuild", is_flag=True,
              help="Run the evaluation again from the inputs and settings its summary.json records, and rewrite "
                   "the report (done anyway when report.html is missing).")
@common_options
def report(folder: Path, open_browser: bool, rebuild: bool, quiet: bool) -> None:
    """Reopen or rebuild the browsable report.html of a reports folder or a model folder.

    FOLDER is a reports folder written by `segpipe evaluate` (or `segpipe infer --labels`),
    or a folder above one, such as a model or predictions folder: then its newest reports
    folder up to two levels down is used. Prints the path of report.html, which opens from
    disk in any browser (no server, no network).
    """
    quiet_libraries()
    from segpipe.reports.reopen import report_folder

    target = report_folder(folder)
    page = target / "report.html"
    rebuilt = rebuild or not page.is_file()
    if rebuilt:
        rebuild_report(target, quiet=silent(quiet) or not sys.stderr.isatty())  # progress bars only on a terminal
    if not emit_json({"report": page.resolve(), "rebuilt": rebuilt}) and not quiet:
        click.echo(f"{'rebuilt' if rebuilt else 'report'}: {page.resolve()}")
    if open_browser:
        click.launch(str(page.resolve()))


def rebuild_report(reports: Path, quiet: bool = True) -> None:
    """Run `evaluate` again with the inputs and settings the reports folder's summary.json records."""
    from segpipe.pipeline.evaluate import evaluate
    from segpipe.reports.reopen import recorded_inputs

    inputs, ecfg = recorded_inputs(reports)
    pred = Path(inputs["pred"])
    # `infer --labels` writes its reports inside its predictions: rebuilt as infer made them, the
    # predictions folder is the output (locked), the other inputs stay apart
    inside = reports.resolve().is_relative_to(pred.resolve())
    read = [None if inside else pred, inputs["labels"], inputs.get("images"), inputs.get("model")]
    with guard_outputs("report", [pred if inside else reports], read):  # evaluate's guard: apart, locked
        evaluate(inputs["pred"], inputs["labels"], reports, ecfg, images=inputs.get("images"),
                 model_dir=inputs.get("model"), quiet=quiet, lesion_wise=bool(inputs.get("lesion_wise")),
                 label_set=inputs.get("label_set") or "msd")

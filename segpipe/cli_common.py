"""Helpers every command module shares (segpipe/cli.py, cli_export.py, cli_report.py): the
common options, --json output, the output guard and quieting the libraries. Imports nothing heavy, so `segpipe --help` stays instant."""

from __future__ import annotations

import os
from typing import Any

import click


def quiet_libraries() -> None:
    """Silence import-time chatter of optional MONAI back-ends that users cannot act on
    (unless --verbose)."""
    import logging
    import warnings

    if meta("segpipe.verbose"):
        logging.basicConfig(level=logging.INFO)
        return

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("monai", "nvimgcodec", "monai.data.image_reader"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="monai")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, message=".*TorchScript.*")


def set_meta(key: str):
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value:
            ctx.meta[key] = value
        return value

    return callback


def common_options(func):
    """--quiet, --verbose, --json and --debug on every command."""
    func = click.option(
        "--debug", is_flag=True, expose_value=False, is_eager=True, callback=set_meta("segpipe.debug"),
        help="Show the full traceback of an error instead of one line.",
    )(func)
    func = click.option(
        "--json", "as_json", is_flag=True, expose_value=False, is_eager=True, callback=set_meta("segpipe.json"),
        help="Print a machine-readable JSON summary on standard output (no progress bars, no tables).",
    )(func)
    func = click.option(
        "--verbose", "-v", is_flag=True, expose_value=False, is_eager=True, callback=set_meta("segpipe.verbose"),
        help="Also show the warnings and log messages of MONAI and the other libraries.",
    )(func)
    func = click.option("--quiet", "-q", is_flag=True, help="No progress bars or tables; errors only.")(func)
    return func


def meta(key: str) -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(key))


def silent(quiet: bool) -> bool:
    """Progress bars and tables off: --quiet, or --json (standard output is for the JSON)."""
    return quiet or meta("segpipe.json")


def emit_json(summary: dict[str, Any]) -> bool:
    """With --json, print `summary` and return True (the caller then prints no text)."""
    if not meta("segpipe.json"):
        return False
    from segpipe.atomic import dumps_json

    click.echo(dumps_json(summary))  # strict JSON: NaN and infinities become null
    return True


def guard_outputs(verb: str, outputs: list, inputs: list, files: tuple = ()) -> Any:
    """The output guard of segpipe/outputs.py: outputs apart from inputs, a lock, reads inside the inputs."""
    from segpipe.outputs import guard

    return guard(verb, outputs, inputs, files=files)

"""`segpipe export`: registered on the CLI group in segpipe/cli.py (`cli.add_command(export)`).

Heavy modules (torch, MONAI, ONNX) are imported inside the command, so `segpipe --help`
stays instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from segpipe.cli_common import common_options, emit_json, guard_outputs, quiet_libraries, silent


@click.command()
@click.option("--model", "-m", "model_dir", required=True, type=click.Path(path_type=Path),
              help="Model folder written by `segpipe fit`.")
@click.option("--format", "-f", "fmt", required=True, type=click.Choice(["torchscript", "onnx", "bundle"]),
              help="torchscript: one .pt file for torch.jit.load; onnx: one .onnx file (opset 17, dynamic batch "
                   "and spatial axes); bundle: a MONAI bundle folder that runs with `python -m monai.bundle run` "
                   "(see docs/bundle.md).")
@click.option("--output", "-o", required=True, type=click.Path(),  # a str: Path would drop a trailing slash
              help="File to write (torchscript: .pt, onnx: .onnx), or folder (bundle).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default=None,
              help="Which weights. [default: the model's infer.checkpoint, best]")
@click.option("--overwrite", is_flag=True, help="Replace an existing output (refused otherwise).")
@common_options
def export(model_dir: Path, fmt: str, output: str, checkpoint: str | None, overwrite: bool, quiet: bool) -> None:
    """Export a trained network as TorchScript, ONNX or a MONAI bundle.

    The exported network is the model folder's network in eval mode: it takes a
    preprocessed batch (N, channels, *spatial) of any spatial size and returns logits.
    Before anything is kept the export is loaded back and run on random inputs; its
    logits must equal the eager network's within 1e-4. The bundle also holds the
    preprocessing, sliding-window inference (with the mirrored copies of infer.tta),
    argmax or the model's foreground threshold, inverse preprocessing and
    infer.keep_largest, so it turns a NIfTI image into the mask `segpipe infer` writes,
    on the image's own grid, without segpipe.
    """
    quiet_libraries()
    from segpipe.pipeline.export import export as run

    quiet = silent(quiet)
    folder = fmt == "bundle"
    target = Path(output)
    with guard_outputs("export", [target] if folder else [], [model_dir], files=() if folder else (target,)):
        result = run(model_dir, fmt, output, checkpoint=checkpoint, overwrite=overwrite)
    if emit_json({"format": fmt, "output": result.output, "files": result.files, "max_abs_diff": result.max_abs_diff,
                  "notes": result.notes}):
        return
    for note in result.notes:  # also under --quiet: the bundle does less than infer
        click.echo(f"note: {note}", err=True)
    if not quiet:
        shape = "x".join(str(s) for s in result.input_shape)
        click.echo(f"exported {fmt} to {result.output} (checked on a {shape} input and an odd size: "
                   f"max |difference| {result.max_abs_diff:.2e})")
        if fmt == "bundle":
            for path in result.files:
                click.echo(f"  {path}")
            click.echo(f"run it: python -m monai.bundle run --config_file {target}/configs/inference.json "
                       f"--bundle_root {target} --input_image IMAGE.nii.gz --output_dir MASKS")

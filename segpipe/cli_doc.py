"""The CLI reference (docs/cli.md), rendered from the Click group itself.

Regenerate with `python -m segpipe.cli_doc > docs/cli.md`; tests/test_docs.py fails
when the file is out of date. The text is deterministic: it does not depend on the
terminal width or on the environment.
"""

from __future__ import annotations

import inspect

import click

HEADER = """# CLI reference

Generated from the command-line interface by `python -m segpipe.cli_doc > docs/cli.md`;
do not edit by hand (tests/test_docs.py checks that it is up to date). Walk-throughs are in
[user-guide.md](user-guide.md), training in [training.md](training.md), the MONAI bundle in
[bundle.md](bundle.md), metrics in [evaluation.md](evaluation.md) and measured numbers in
[benchmarks.md](benchmarks.md).
"""


def _help_text(command: click.Command) -> str:
    """A command's docstring help, with Click's `\\b` (no-rewrap) markers turned into code blocks."""
    text = inspect.cleandoc(command.help or "")
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.splitlines()
        if lines and lines[0].strip() == "\b":
            body = inspect.cleandoc("\n".join(lines[1:]))
            out.append("```text\n" + body + "\n```")
        else:
            out.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(p for p in out if p.strip())


def _option_row(ctx: click.Context, param: click.Parameter) -> tuple[str, str] | None:
    record = param.get_help_record(ctx)
    if record is None:
        return None
    names, help_text = record
    return names, " ".join(help_text.split())


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _usage(ctx: click.Context, command: click.Command) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return " ".join([ctx.command_path, *pieces])


def render_command(command: click.Command, ctx: click.Context, level: int = 2) -> str:
    """Markdown for one command: usage, help and a table of every option."""
    lines = [f"{'#' * level} `{ctx.command_path}`", "", "```text", _usage(ctx, command), "```", ""]
    help_text = _help_text(command)
    if help_text:
        lines += [help_text, ""]
    rows = [row for param in command.get_params(ctx) if (row := _option_row(ctx, param)) is not None]
    if rows:
        lines += ["| option | description |", "|---|---|"]
        lines += [f"| `{_escape(names)}` | {_escape(text)} |" for names, text in rows]
        lines.append("")
    return "\n".join(lines)


def render_cli_reference(group: click.Group, prog_name: str = "segpipe") -> str:
    """The whole reference: the group, then each command in the order `--help` lists them."""
    # A fixed width keeps the help records (defaults, choices) independent of the terminal.
    settings = {**group.context_settings, "terminal_width": 100, "max_content_width": 100}
    root = click.Context(group, info_name=prog_name, **settings)
    parts = [HEADER, render_command(group, root, level=2)]
    names = group.list_commands(root)
    parts.append("Commands: " + ", ".join(f"[`{name}`](#{prog_name}-{name})" for name in names) + ".\n")
    for name in names:
        command = group.get_command(root, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=root, terminal_width=100, max_content_width=100)
        parts.append(render_command(command, sub, level=2))
    return "\n".join(parts).rstrip() + "\n"


def documented_cli() -> click.Group:
    """segpipe's group with every command registered (including `export`)."""
    from segpipe.cli import cli
    from segpipe.cli_export import export

    if "export" not in cli.commands:
        cli.add_command(export)
    return cli


def main() -> None:
    """Print the reference to stdout."""
    click.echo(render_cli_reference(documented_cli()), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()

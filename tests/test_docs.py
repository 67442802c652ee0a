"""Documentation stays true: docs/cli.md matches the CLI, and --help stays light."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from segpipe.cli_doc import documented_cli, render_cli_reference

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def test_cli_reference_is_up_to_date():
    expected = render_cli_reference(documented_cli())
    current = (DOCS / "cli.md").read_text() if (DOCS / "cli.md").is_file() else ""
    assert current == expected, "docs/cli.md is out of date: run `python -m segpipe.cli_doc > docs/cli.md`"


def test_cli_reference_documents_every_command_and_option():
    cli = documented_cli()
    text = render_cli_reference(cli)
    for name, command in cli.commands.items():
        assert f"## `segpipe {name}`" in text
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert f"{opt}" in text, f"{name} {opt}"
    assert "--format" in text and "bundle" in text


def test_cli_reference_is_deterministic():
    env = {**os.environ, "COLUMNS": "37"}
    out = subprocess.run([sys.executable, "-m", "segpipe.cli_doc"], capture_output=True, text=True,
                         check=True, env=env, cwd=REPO)
    assert out.stdout == render_cli_reference(documented_cli())


def test_help_imports_neither_torch_nor_monai():
    code = (
        "import sys\n"
        "from segpipe.cli import cli\n"
        "from segpipe.cli_export import export\n"
        "cli.add_command(export)\n"
        "for args in (['--help'], ['export', '--help'], ['infer', '--help']):\n"
        "    try:\n        cli(args, prog_name='segpipe')\n    except SystemExit:\n        pass\n"
        "bad = [m for m in ('torch', 'monai', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "export" in done.stdout


def test_docs_link_to_existing_files():
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).is_file(), f"{page.name} links to missing {target}"

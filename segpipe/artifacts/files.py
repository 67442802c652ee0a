"""Reading the JSON and YAML files of segpipe's folders, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.parsing import parse_json, parse_yaml


def _check(path: Path, missing: str) -> None:
    if not path.is_file():
        raise SegpipeError(f"{path}: missing; {missing}")
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # no link out of the folder


def read_json(path: Path, missing: str) -> Any:
    """The content of a JSON file; `missing` ends the error line when the file is absent."""
    _check(path, missing)
    return parse_json(path.read_text(), path)


def read_yaml(path: Path, missing: str) -> Any:
    """The content of a YAML file (safe loader: no code runs), or a one-line error."""
    _check(path, missing)
    return parse_yaml(path.read_text(), path)

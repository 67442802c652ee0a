"""Reading the JSON and YAML files of segpipe's folders, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from segpipe.errors import SegpipeError


def _check(path: Path, missing: str) -> None:
    if not path.is_file():
        raise SegpipeError(f"{path}: missing; {missing}")
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # no link out of the folder


def read_json(path: Path, missing: str) -> Any:
    """The content of a JSON file; `missing` ends the error line when the file is absent."""
    _check(path, missing)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SegpipeError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def read_yaml(path: Path, missing: str) -> Any:
    """The content of a YAML file (safe loader: no code runs), or a one-line error."""
    _check(path, missing)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise SegpipeError(f"{path}: not valid YAML") from None

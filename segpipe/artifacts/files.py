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


def parse_json(text: str, source: object) -> Any:
    """JSON text parsed, or one line naming `source`: malformed, or nested past Python's recursion limit."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SegpipeError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise SegpipeError(f"{source}: JSON nested too deeply") from None


def parse_yaml(text: str, source: object) -> Any:
    """YAML text parsed with the safe loader (no code runs), or one line naming `source`."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SegpipeError(f"{source}: not valid YAML{where}") from None
    except RecursionError:
        raise SegpipeError(f"{source}: YAML nested too deeply") from None


def read_json(path: Path, missing: str) -> Any:
    """The content of a JSON file; `missing` ends the error line when the file is absent."""
    _check(path, missing)
    return parse_json(path.read_text(), path)


def read_yaml(path: Path, missing: str) -> Any:
    """The content of a YAML file (safe loader: no code runs), or a one-line error."""
    _check(path, missing)
    return parse_yaml(path.read_text(), path)

"""Reading the JSON and YAML files of segpipe's folders, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segpipe.errors import SegpipeError
from segpipe.limits import MAX_YAML_BYTES
from segpipe.parsing import parse_json, parse_yaml, read_text


def _check(path: Path, missing: str) -> None:
    if not path.is_file():
        raise SegpipeError(f"{path}: missing; {missing}")
    from segpipe.data.guard import resolve_inside

    resolve_inside(path)  # no link out of the folder


def read_json(path: Path, missing: str) -> Any:
    """The content of a JSON file; `missing` ends the error line when the file is absent."""
    _check(path, missing)
    return parse_json(read_text(path), path)


def read_yaml(path: Path, missing: str) -> Any:
    """The content of a YAML file (safe loader: no code runs), or a one-line error."""
    _check(path, missing)
    return parse_yaml(read_text(path, "YAML file", MAX_YAML_BYTES), path)


def read_table(path: Path) -> Any:
    """A CSV table segpipe wrote (metrics.csv), or one line saying why it cannot be read."""
    import pandas as pd

    _check(path, "")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise SegpipeError(f"{path}: not a readable table ({first})") from None

"""JSON and YAML text parsed with one-line errors: malformed, or nested past Python's recursion limit."""

from __future__ import annotations

import json
from typing import Any

import yaml

from segpipe.errors import SegpipeError


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

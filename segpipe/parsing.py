"""JSON and YAML text read and parsed with one-line errors: not UTF-8, malformed, a key given
twice, or nested past Python's recursion limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from segpipe.errors import SegpipeError
from segpipe.limits import MAX_JSON_BYTES, human


def read_text(path: str | Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> str:
    """A text file's content (UTF-8, a byte-order mark read past), or one line naming it; a file
    over `max_bytes` is refused unread."""
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SegpipeError(f"{path}: cannot read {what}: larger than {human(max_bytes)}")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SegpipeError(f"{path}: cannot read {what}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                           f"position {exc.start})") from None
    except OSError as exc:
        raise SegpipeError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None


class _UniqueKeys(yaml.SafeLoader):
    """The safe loader, refusing a mapping that gives one key twice (the last would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _Twice(key, key_node.start_mark.line + 1)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Twice(Exception):
    def __init__(self, key: object, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Twice(key, 0)
        seen[key] = value
    return seen


def parse_json(text: str, source: object) -> Any:
    """JSON text parsed, or one line naming `source`: malformed, a key given twice in one object,
    or nested past Python's recursion limit."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except _Twice as twice:
        raise SegpipeError(f"{source}: key '{twice.key}' given twice in one object; the first would be dropped "
                           "silently") from None
    except json.JSONDecodeError as exc:
        raise SegpipeError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise SegpipeError(f"{source}: JSON nested too deeply") from None


def parse_yaml(text: str, source: object) -> Any:
    """YAML text parsed with the safe loader (no code runs), or one line naming `source`."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 - a SafeLoader subclass
    except _Twice as twice:
        raise SegpipeError(f"{source}: key '{twice.key}' given twice (line {twice.line}); "
                           "the first would be dropped silently") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SegpipeError(f"{source}: not valid YAML{where}") from None
    except RecursionError:
        raise SegpipeError(f"{source}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # PyYAML's int and timestamp constructors (a 5000-digit number, 2001-02-30)
        raise SegpipeError(f"{source}: a value YAML cannot read ({exc})") from None

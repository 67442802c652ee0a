"""Files a verb replaces in an existing output folder must be ones segpipe wrote.

`infer` merges its rows into `cases.csv` and `evaluate` replaces its tables and
`summary.json` on every run; a file of the same name that the user keeps there (a table
of their own, a note) would be lost. Before any work, each such file that exists is
recognised by what segpipe writes into it, or the verb is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segpipe.errors import SegpipeError

Recognise = Callable[[Path], bool]


def csv_with(*columns: str) -> Recognise:
    """A CSV table whose header holds `columns`."""

    def recognise(path: Path) -> bool:
        try:
            with path.open(encoding="utf-8", errors="strict") as stream:
                header = stream.readline(65536).strip().split(",")
        except (OSError, UnicodeDecodeError):
            return False
        return set(columns) <= set(header)

    return recognise


def text_with(marker: str) -> Recognise:
    """A text file whose first 64 KiB hold `marker`."""

    def recognise(path: Path) -> bool:
        try:
            with path.open("rb") as stream:
                return marker.encode() in stream.read(65536)
        except OSError:
            return False

    return recognise


def check_own(folder: Path, files: dict[str, Recognise], verb: str) -> None:
    """Refuse when a file of `files` exists in `folder` and is not recognised as segpipe's."""
    for name, recognise in files.items():
        path = folder / name
        if path.exists() and not (path.is_file() and recognise(path)):
            raise SegpipeError(f"{path}: exists and was not written by segpipe {verb}, which would replace it; "
                               "move it or choose another output")

"""Files a verb replaces in an existing output folder must be ones segpipe wrote.

Every verb writes files of fixed names into its output folder (`preprocess` its plan and
cached cases, `fit` its checkpoints and tables, `infer` its `cases.csv`, `evaluate` its
tables, figures and page); a file of the same name that the user keeps there would be
lost. Before any work, each such file that exists is recognised by what segpipe writes
into it, or the verb is refused in one line.
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


def text_with(*markers: str) -> Recognise:
    """A file whose first 64 KiB hold every one of `markers`."""

    def recognise(path: Path) -> bool:
        try:
            with path.open("rb") as stream:
                head = stream.read(65536)
        except OSError:
            return False
        return all(marker.encode() in head for marker in markers)

    return recognise


SOFTWARE = "segpipe"  # the PNG text chunk `Software` of every figure segpipe draws
FIGURE_METADATA = {"Software": SOFTWARE}


def figure() -> Recognise:
    """A PNG whose `Software` text chunk names segpipe (`FIGURE_METADATA`, given to savefig)."""

    def recognise(path: Path) -> bool:
        from PIL import Image

        try:
            with Image.open(path) as img:
                return str(getattr(img, "text", {}).get("Software", "")).startswith(SOFTWARE)
        except Exception:  # not an image at all
            return False

    return recognise


def beside(marker: Path, recognise: Recognise) -> Recognise:
    """Any file, when `marker` beside it is segpipe's: a folder whose table segpipe wrote holds its
    figures too (figures drawn before they carried `FIGURE_METADATA`)."""
    return lambda path: marker.is_file() and recognise(marker)


def either(*recognisers: Recognise) -> Recognise:
    return lambda path: any(recognise(path) for recognise in recognisers)


def figures_beside(files: dict[str, Recognise], marker: Path, recognise_marker: Recognise) -> dict[str, Recognise]:
    """`files` with each PNG also counted as segpipe's where the folder's `marker` table is
    (figures drawn before they carried `FIGURE_METADATA`)."""
    return {name: either(recognise, beside(marker, recognise_marker)) if name.endswith(".png") else recognise
            for name, recognise in files.items()}


def check_own(folder: Path, files: dict[str, Recognise], verb: str) -> None:
    """Refuse when a file of `files` (names, or patterns such as `report_files/patient_*.js`)
    exists in `folder` and is not recognised as segpipe's."""
    for name, recognise in files.items():
        # a pattern leaves out dot files: segpipe's temporaries, which remove_stale_partials looks after
        paths = (sorted(p for p in folder.glob(name) if not p.name.startswith(".")) if any(c in name for c in "*?[")
                 else [folder / name])
        for path in paths:
            if path.exists() and not (path.is_file() and recognise(path)):
                raise SegpipeError(f"{path}: exists and was not written by segpipe {verb}, which would replace it; "
                                   "move it or choose another output")

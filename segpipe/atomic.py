"""Write every file to a temporary name beside it, then rename it into place."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from segpipe.errors import SegpipeError
from segpipe.outputs import PARTIAL, check_target, partial_writer, pid_alive


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success rename it onto `path`.

    The temporary name keeps the full suffix (e.g. `.nii.gz`) so writers that choose a
    format from the extension still work. On any error the temporary file is removed and
    `path` is left as it was.
    """
    path = Path(path)
    check_target(path)  # never onto or inside an input of the running verb
    suffix = "".join(path.suffixes) if path.suffixes else ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{_short(path.name, suffix)}.{os.getpid()}.", suffix=f"{PARTIAL}{suffix}",
                                        dir=path.parent)
    except OSError as exc:
        raise SegpipeError(f"{path.parent}: cannot write to the folder ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the user's usual mode
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota, a read-only file system: name the file, not the temporary
        raise SegpipeError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def _short(name: str, suffix: str, limit: int = 255) -> str:
    """`name` cut so that the temporary name stays within the file system's 255 bytes: a
    mask of a legal 247-character name must not fail for its temporary's sake."""
    room = limit - len(f"..{2**32}.12345678{PARTIAL}{suffix}".encode())  # any PID, mkstemp's 8 characters
    encoded = name.encode()
    return name if len(encoded) <= room else encoded[: max(room, 1)].decode("utf-8", "ignore")


def remove_stale_partials(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed processes left in `folder` (not in sub-folders).

    A temporary file whose writer (the PID in its name) is still running is kept, so two
    processes writing into one folder at once do not delete each other's work. Returns
    the paths removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".*{PARTIAL}*"):
        # a name without a writer's PID is not a segpipe temporary (a user's `.draft.partial.md`)
        if path.is_file() and partial_writer(path) is not None and not _writer_alive(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _writer_alive(path: Path) -> bool:
    """Whether the process named in a temporary file's name is running (False if none is named)."""
    pid = partial_writer(path)
    if pid is None or pid == os.getpid():
        return False
    return pid_alive(pid)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp_path)` and rename the result onto `path`."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    return write_with(path, lambda tmp: tmp.write_text(text))


def finite_json(data: Any) -> Any:
    """`data` with every NaN or infinite float replaced by None, so it is valid JSON."""
    if isinstance(data, float):
        return data if data == data and data not in (float("inf"), float("-inf")) else None
    if isinstance(data, dict):
        return {k: finite_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_json(v) for v in data]
    if hasattr(data, "item") and getattr(data, "ndim", None) == 0:  # numpy scalars
        return finite_json(data.item())
    return data


def dumps_json(data: Any, indent: int | None = 2) -> str:
    """Strict JSON (never NaN or Infinity); paths and other objects as strings."""
    return json.dumps(finite_json(data), indent=indent, sort_keys=False, allow_nan=False, default=str)


def write_json(path: str | Path, data: Any) -> Path:
    """Atomically write pretty, strict JSON (NaN and infinities become null)."""
    return write_text(path, dumps_json(data) + "\n")


def write_yaml(path: str | Path, data: Any) -> Path:
    """Atomically write YAML (plain data only)."""
    return write_text(path, yaml.safe_dump(data, sort_keys=False))

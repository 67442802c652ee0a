"""The output guard every verb runs under: outputs apart from inputs, one writer per folder.

`guard(verb, outputs, inputs)` is entered by each CLI verb before it writes anything:

- an output may not be an input, lie inside one, or contain one (`infer -o` equal to
  `-i`, `preprocess -o` inside `-i`, a model folder inside the dataset it came from);
- while the block runs, `segpipe.atomic` refuses to write any file onto or inside an
  input (`check_target`), whatever the verb computed the file name from;
- an output folder is locked: `<output>/.segpipe.lock` holds the writer's PID, a second
  writer is refused with one line naming it, and the lock of a process that no longer
  runs is taken over. Under torchrun only rank 0 takes it.
- the verb's inputs are the only folders readers may open files in
  (`segpipe.data.guard.reading_inside`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from segpipe.errors import SegpipeError

LOCK_NAME = ".segpipe.lock"
PARTIAL = ".partial"  # marks a temporary file (segpipe.atomic): `.<name>.<pid>.<random>.partial<suffixes>`
_ACTIVE: contextvars.ContextVar[tuple[Path, ...] | None] = contextvars.ContextVar("segpipe_inputs", default=None)


def _resolve(path: str | Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def check_apart(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is, lies inside, or contains an input.

    Raises:
        SegpipeError: naming both paths.
    """
    ins = [(Path(i), _resolve(i)) for i in inputs if i is not None]
    for out in outputs:
        o = _resolve(out)
        for given, i in ins:
            if o == i:
                raise SegpipeError(f"{out}: the output is the input {given}; choose another output so the input is not overwritten")
            if i in o.parents:
                raise SegpipeError(f"{out}: the output lies inside the input {given}; choose an output outside it")
            if o in i.parents:
                raise SegpipeError(f"{out}: the output contains the input {given}; choose an output that does not hold it")


def check_target(path: str | Path) -> None:
    """Called by `segpipe.atomic` before a file is written: refuse one onto or inside an
    input of the running verb (no-op outside `guard`)."""
    inputs = _ACTIVE.get()
    if not inputs:
        return
    target = _resolve(Path(path).parent) / Path(path).name
    target = target.resolve() if target.is_symlink() else target
    for i in inputs:
        if target == i or i in target.parents:
            raise SegpipeError(f"{path}: refused to write onto or inside the input {i}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    return pid == os.getpid() or pid_alive(pid)


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID is running (one we may not signal counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partial_writer(path: Path) -> int | None:
    """The PID a temporary file's name holds (None if it names none)."""
    parts = path.name.split(".")
    where = parts.index(PARTIAL[1:]) if PARTIAL[1:] in parts else -1
    return int(parts[where - 2]) if where >= 3 and parts[where - 2].isdigit() else None


def remove_own_partials(folder: Path) -> None:
    """Delete this process's temporary files under `folder`: an interrupt that lands between
    a temporary's creation and the block that removes it would leave one behind."""
    if folder.is_dir():
        for path in folder.rglob(f".*.{os.getpid()}.*{PARTIAL}*"):
            if path.is_file() and partial_writer(path) == os.getpid():
                path.unlink(missing_ok=True)


def _read_lock(path: Path) -> tuple[int, str]:
    """(PID, verb) of a lock; (0, "segpipe") when unreadable."""
    try:
        fields = dict(part.split("=", 1) for part in os.readlink(path).split(";") if "=" in part)
        return int(fields.get("pid", "0")), fields.get("verb", "segpipe")
    except (OSError, ValueError):
        return 0, "segpipe"


@contextlib.contextmanager
def folder_lock(folder: Path, verb: str) -> Iterator[Path]:
    """Hold `<folder>/.segpipe.lock` for the block; refuse when a live process holds it.

    The lock is a symbolic link whose target text holds the PID: creating it is atomic,
    and it needs no data block, so it works on a full disk too.

    Raises:
        SegpipeError: "<folder>: in use by `segpipe <verb>` (PID n) ..." for a live holder.
    """
    lock = folder / LOCK_NAME
    host = socket.gethostname()
    text = f"pid={os.getpid()};verb={verb};host={host};since={time.strftime('%Y-%m-%dT%H:%M:%S')}"
    for _attempt in range(3):
        try:
            os.symlink(text, lock)
            break
        except FileExistsError:
            pid, holder = _read_lock(lock)
            if _pid_alive(pid):
                who = "this process" if pid == os.getpid() else f"PID {pid}"
                raise SegpipeError(
                    f"{folder}: in use by `segpipe {holder}` ({who}); wait for it to finish (or, if no such process "
                    f"runs on {host}, delete {lock})"
                ) from None
            stale = folder / f".segpipe.lock.stale.{os.getpid()}"
            with contextlib.suppress(OSError):
                os.replace(lock, stale)  # take over a dead writer's lock
                stale.unlink()
        except OSError as exc:
            raise SegpipeError(f"{folder}: cannot take the output lock ({exc.strerror or exc})") from None
    else:
        raise SegpipeError(f"{folder}: could not take the output lock {lock}")
    try:
        yield lock
    finally:
        if _read_lock(lock)[0] == os.getpid():
            lock.unlink(missing_ok=True)


def _make_folder(folder: Path) -> bool:
    """Create the output folder; True if this call created it.

    Race-free: torchrun's processes (or two runs) may create the same folder at once.
    """
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        if folder.is_dir():
            return False
        raise SegpipeError(f"{folder}: exists and is not a folder") from None
    except OSError as exc:
        raise SegpipeError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from None
    return True


@contextlib.contextmanager
def guard(verb: str, outputs: Iterable[str | Path], inputs: Iterable[str | Path | None], *,
          files: Iterable[str | Path] = ()) -> Iterator[None]:
    """Run a verb's writing under the output guard (see the module docstring).

    Args:
        verb: the CLI verb, named in the lock.
        outputs: output folders (created, locked, and removed again if left empty).
        inputs: files and folders the verb reads; readers may open files only inside them.
        files: single-file outputs (checked apart from the inputs, not locked).
    """
    from segpipe.data.guard import reading_inside
    from segpipe.runtime.distributed import is_main_process

    ins = [Path(i) for i in inputs if i is not None]
    folders = [Path(o) for o in outputs]
    check_apart([*folders, *map(Path, files)], ins)
    with contextlib.ExitStack() as stack:
        for folder in folders:
            if _make_folder(folder):  # a folder a failed run made and left empty goes again
                stack.callback(_remove_if_empty, folder)
            if is_main_process():  # under torchrun only rank 0 writes, so only it locks
                stack.enter_context(folder_lock(folder, verb))
            stack.callback(remove_own_partials, folder)  # before the lock goes: nothing half-written stays
        stack.enter_context(reading_inside(*ins, *folders))  # a verb may read what it wrote (infer --labels)
        token = _ACTIVE.set(tuple(_resolve(i) for i in ins))
        stack.callback(_ACTIVE.reset, token)
        yield


def _remove_if_empty(folder: Path) -> None:
    """Remove `folder` if it holds nothing but empty folders (a run refused before writing
    anything may have made `checkpoints/`); anything else in it keeps it whole."""
    with contextlib.suppress(OSError):
        if not folder.is_dir() or folder.is_symlink():
            return
        inside = []
        for path in folder.rglob("*"):  # stops at the first file: a finished output is not walked whole
            if not path.is_dir() or path.is_symlink():
                return
            inside.append(path)
        for sub in sorted(inside, key=lambda p: len(p.parts), reverse=True):
            sub.rmdir()
        folder.rmdir()


__all__ = ["guard", "check_apart", "check_target", "folder_lock", "LOCK_NAME"]

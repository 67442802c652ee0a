"""Helpers for the bad-input and kill tests: a small clean dataset, its mutations, and the
assertions every user error must meet (one `error:` line, no traceback, no partial files).

Everything is generated under the test's tmp_path; nothing is copied into the repository.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
from click.testing import CliRunner, Result

from segpipe.cli import cli
from tests.builders import write_nifti

REPO = Path(__file__).resolve().parents[1]
SHAPE = (16, 16, 12)
TINY = ["--set", "model.filters=4", "--set", "model.depth=2", "--set", "train.iterations_per_epoch=2",
        "--set", "train.patch_size=[16,16,16]", "--set", "train.batch_size=2", "--set", "train.samples_per_volume=2",
        "--set", "preprocess.folds=3", "--set", "infer.sw_batch_size=4"]


# ---------------------------------------------------------------- running the CLI


def run(*args: object) -> Result:
    """`segpipe ARGS` in-process through click (stdout and stderr interleaved in .output)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def env() -> dict[str, str]:
    """Environment of a `python -m segpipe` subprocess: this checkout, one thread, no warnings."""
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1"}


def run_subprocess(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m segpipe ARGS` as a real process."""
    return subprocess.run([sys.executable, "-m", "segpipe", *map(str, args)], env=env(), capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(output: str, exit_code: int, *fragments: str) -> str:
    """Assert the user-error contract and return the line: non-zero exit, exactly one
    non-empty line, starting with `error: `, holding every fragment, no traceback."""
    assert exit_code != 0, f"expected failure, got exit 0:\n{output}"
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{output}"
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def assert_error(result: Result, *fragments: str) -> str:
    """`one_line_error` for a CliRunner result (and the exception was handled, not raised)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return one_line_error(result.output, result.exit_code, *fragments)


def partials(folder: Path) -> list[Path]:
    """Temporary files (see `segpipe.atomic`) anywhere under `folder`."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if ".partial" in p.name)


def assert_no_partials(*folders: Path) -> None:
    for folder in folders:
        left = partials(folder)
        assert not left, f"partial files left behind: {left}"


# ---------------------------------------------------------------- a small clean Decathlon dataset

AFFINE = np.diag([1.0, 1.0, 1.2, 1.0])
AFFINE[:3, 3] = [-24.0, -24.0, -24.0]  # as segpipe.data.synthetic writes it


def make_dataset(root: Path, cases: int = 3, test_cases: int = 1, seed: int = 0) -> Path:
    """The synthetic 4-channel Decathlon task at 16 x 16 x 12 (fast to preprocess)."""
    from segpipe.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(root, cases=cases, test_cases=test_cases, shape=SHAPE, seed=seed)


def clone(base: Path, dest: Path) -> Path:
    return Path(shutil.copytree(base, dest))


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj).copy(), np.asarray(img.affine)


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """`builders.write_nifti` with this corpus's affine (the synthetic dataset's) by default."""
    return write_nifti(path, data, AFFINE if affine is None else affine)


def edit_json(path: Path, change) -> None:  # noqa: ANN001 - a function of the parsed JSON
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def brain_voxel(label: np.ndarray) -> tuple[int, int, int]:
    """A voxel inside the tumour (so cropping to the brain keeps it)."""
    return tuple(int(v) for v in np.argwhere(label > 0)[0])  # type: ignore[return-value]


# ---------------------------------------------------------------- file systems for write errors


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "256k", read_only: bool = False) -> Iterator[Path | None]:
    """Mount a small tmpfs at `path` (needs root with CAP_SYS_ADMIN); yields None if not permitted."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def fill(folder: Path) -> None:
    """Write a filler file until the file system holding `folder` is full."""
    for size in (65536, 4096, 1):  # unbuffered, so nothing is left to fail on close
        with open(folder / f"filler{size}", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def no_space(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

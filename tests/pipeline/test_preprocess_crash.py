"""Crash safety of `segpipe preprocess`: killed with SIGKILL at any moment and run again,
it completes with a cache identical to an uninterrupted run.

The uninterrupted reference and every killed run are real `python -m segpipe preprocess`
subprocesses (two worker processes, the CLI default on this machine), killed with SIGKILL
on the main process only, so orphaned workers are part of what is tested. The kill
moments are spread over the measured duration of the work (from the moment the output
folder appears to the moment the process exits); the resuming run goes through the same
CLI in-process (click's CliRunner) to save the interpreter start-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from segpipe.cli import cli
from segpipe.data.synthetic import make_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]
TRIALS = 6
WORKERS = 2
MANIFEST_FIELDS = ("hash", "image", "label", "shape", "channels", "label_counts", "intensity", "patient", "sources", "label_source")


def _command(dataset: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "segpipe", "preprocess", "-i", str(dataset), "-o", str(out), "-q", "--workers", str(WORKERS)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> float | None:
    """Poll until `path` exists; the time it appeared, or None if the process ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return time.monotonic()
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    raise AssertionError(f"{path} did not appear within {timeout} s")


def _survivors(marker: str) -> list[int]:
    """Processes (other than this one) whose command line names `marker` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _snapshot(root: Path) -> dict:
    """Everything of a prepared folder that must match: files, arrays, plan, splits, manifest."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    arrays = {name: np.load(root / name) for name in files if name.startswith("cases/")}
    manifest = json.loads((root / "manifest.json").read_text())
    cases = {cid: {k: e.get(k) for k in MANIFEST_FIELDS} for cid, e in manifest["cases"].items()}
    return {
        "files": files,
        "arrays": arrays,
        "plan": (root / "plan.json").read_text(),
        "splits": (root / "splits.json").read_text(),
        "manifest": (manifest["settings_key"], manifest["settings"], cases),
    }


def _assert_same(got: dict, want: dict, trial: str) -> None:
    assert got["files"] == want["files"], f"{trial}: files differ (leftovers or missing): {set(got['files']) ^ set(want['files'])}"
    for name, array in want["arrays"].items():
        other = got["arrays"][name]
        assert other.dtype == array.dtype and other.shape == array.shape, f"{trial}: {name} dtype/shape differ"
        assert np.array_equal(other, array), f"{trial}: {name} differs"
    assert got["plan"] == want["plan"], f"{trial}: plan.json differs"
    assert got["splits"] == want["splits"], f"{trial}: splits.json differs"
    assert got["manifest"] == want["manifest"], f"{trial}: manifest entries differ"


def test_sigkill_at_any_moment_then_rerun_gives_identical_cache(tmp_path: Path) -> None:
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("needs SIGKILL (POSIX)")
    dataset = make_synthetic_dataset(tmp_path / "Task98", cases=8, test_cases=0, shape=(32, 32, 24), seed=3)

    # uninterrupted reference run, timed from the output folder's creation to exit
    ref = tmp_path / "A"
    proc = subprocess.Popen(_command(dataset, ref), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    started = _wait_for(ref, proc)
    out, err = proc.communicate(timeout=120)
    ended = time.monotonic()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert started is not None
    work = ended - started
    want = _snapshot(ref)
    assert len([f for f in want["files"] if f.startswith("cases/")]) == 16

    rng = np.random.default_rng(0)
    runner = CliRunner()
    killed_alive = 0
    for trial in range(TRIALS):
        out_dir = tmp_path / f"B{trial}"
        # stratified over the work's duration so kills land early, mid-way and late
        delay = work * (trial + rng.uniform()) / TRIALS
        proc = subprocess.Popen(_command(dataset, out_dir), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        appeared = _wait_for(out_dir, proc)
        if appeared is not None:
            time.sleep(max(0.0, delay - (time.monotonic() - appeared)))
        alive = proc.poll() is None
        killed_alive += alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.05)  # let orphaned workers (if any survived their parent) show themselves
        result = runner.invoke(cli, ["preprocess", "-i", str(dataset), "-o", str(out_dir), "-q", "--workers", str(WORKERS)])
        assert result.exit_code == 0, f"trial {trial}: re-run failed: {result.output}\n{result.exception!r}"
        time.sleep(0.2)  # an orphaned worker writing after the re-run would leave files behind
        _assert_same(_snapshot(out_dir), want, f"trial {trial} (killed {delay:.2f} s into {work:.2f} s, alive={alive})")
        if Path("/proc/self/cmdline").exists():
            deadline = time.monotonic() + 3.0  # workers notice their parent's death within ~0.5 s
            while (left := _survivors(str(out_dir))) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:  # do not leak them into the rest of the test session
                os.kill(pid, signal.SIGKILL)
            assert not left, f"trial {trial}: worker processes {left} outlived the killed run"
    print(f"crash test: {TRIALS} SIGKILL trials over {work:.2f} s of work, {killed_alive} killed while running; all caches identical")
    assert killed_alive >= TRIALS // 2, f"only {killed_alive} of {TRIALS} kills landed while the run was going"

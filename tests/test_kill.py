"""Crash safety of `segpipe fit` and `segpipe infer`: SIGKILL at random moments, then run again.

The killed runs are real `python -m segpipe` processes (OMP_NUM_THREADS=1). To keep the file
short, the victims of one test start together (their interpreter start-ups overlap) and each
is killed at its own moment: a stratified random delay after its output folder appears,
spread over the measured duration of the work. The reruns and the uninterrupted references
go through the same CLI in-process (click's CliRunner), single-threaded like the victims.

After every rerun: it completes, every checkpoint loads with `weights_only=True`, every mask
loads with nibabel, no partial file remains, and the results equal the uninterrupted run
(fit in deterministic mode: final weights within 1e-6; infer: masks voxel-equal).
(preprocess is covered by test_preprocess_crash.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from segpipe.artifacts.checkpoints import load_checkpoint
from segpipe.outputs import LOCK_NAME
from tests._corpus import TINY, assert_no_partials, env, make_dataset, one_line_error, partials, run

TRIALS = 5
FIT_ARGS = [*TINY, "--set", "train.epochs=4", "--set", "train.deterministic=true", "--set", "train.threads=1", "-q"]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    """The in-process runs set torch's thread count and deterministic mode; undo both."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small dataset with 8 held-out images, its prepared folder and a 1-epoch model."""
    root = tmp_path_factory.mktemp("kill")
    raw = make_dataset(root / "Task96", cases=3, test_cases=8, seed=5)
    prepared, model = root / "prepared", root / "model"
    assert run("preprocess", "-i", raw, "-o", prepared, "-q", "-j", "1", "--set", "preprocess.folds=3").exit_code == 0
    result = run("fit", "-d", prepared, "-o", model, *TINY, "--set", "train.epochs=1", "--set", "train.threads=1", "-q")
    assert result.exit_code == 0, result.output
    return {"raw": raw, "prepared": prepared, "model": model}


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segpipe", *args], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_all(jobs: list[tuple[subprocess.Popen, Callable[[], bool], float]]) -> int:
    """Kill each process `delay` seconds after its `ready()` turns true (a progress marker:
    its folder appeared, k epochs or masks were written), or when it ends; return how many
    were still running when killed."""
    alive = [False] * len(jobs)

    def killer(i: int, proc: subprocess.Popen, ready: Callable[[], bool], delay: float) -> None:
        end = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < end:
            try:
                if ready():
                    break
            except (OSError, ValueError, pd.errors.ParserError):
                pass  # a file replaced while we looked: look again
            time.sleep(0.005)
        time.sleep(delay)
        alive[i] = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    threads = [threading.Thread(target=killer, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(alive)


def _delays(unit: float, seed: int) -> list[float]:
    """A random moment within one unit of work (an epoch, a case) after each marker."""
    rng = np.random.default_rng(seed)
    return [float(unit * rng.uniform()) for _ in range(TRIALS)]


def _rows(path: Path) -> int:
    return len(pd.read_csv(path)) if path.is_file() else 0


# ---------------------------------------------------------------- fit


def _fit_state(model: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(model / "checkpoints" / "last.pt")["model"]


def _check_model_folder(model: Path) -> None:
    """Nothing corrupt: every checkpoint, table, YAML/JSON and figure loads; no partials."""
    for ckpt in (model / "checkpoints").glob("*.pt"):
        load_checkpoint(ckpt)
    yaml.safe_load((model / "config.yaml").read_text())
    for name in ("plan.json", "network.json"):
        import json

        json.loads((model / name).read_text())
    pd.read_csv(model / "metrics.csv")
    Image.open(model / "curves.png").load()
    assert_no_partials(model)


def test_fit_killed_at_random_moments_then_resumed_equals_uninterrupted(data: dict[str, Path], tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    started = time.monotonic()
    result = run("fit", "-d", data["prepared"], "-o", ref, *FIT_ARGS)
    work = time.monotonic() - started
    assert result.exit_code == 0, result.output
    want = _fit_state(ref)
    want_metrics = pd.read_csv(ref / "metrics.csv").drop(columns=["seconds"])

    outs = [tmp_path / f"killed{k}" for k in range(TRIALS)]
    # trial k is killed within the epoch after the k-th (k = 0: before the first checkpoint)
    epochs = [k % 4 for k in range(TRIALS)]
    readies = [lambda out=out, k=k: out.is_dir() and _rows(out / "metrics.csv") >= k for out, k in zip(outs, epochs)]
    jobs = [(_spawn(["fit", "-d", str(data["prepared"]), "-o", str(out), *FIT_ARGS]), ready, delay)
            for out, ready, delay in zip(outs, readies, _delays(work / 4, seed=1))]
    alive = _kill_all(jobs)

    stages = []
    for k, out in enumerate(outs):
        stage = "no checkpoint" if not (out / "checkpoints" / "last.pt").exists() else \
            f"epoch {load_checkpoint(out / 'checkpoints' / 'last.pt')['epoch'] + 1}"
        stages.append(stage)
        result = run("fit", "-d", data["prepared"], "-o", out, "--resume", *FIT_ARGS)
        assert result.exit_code == 0, f"trial {k} (killed at {stage}): resume failed: {result.output}"
        _check_model_folder(out)
        got = _fit_state(out)
        assert got.keys() == want.keys()
        for name, tensor in want.items():
            assert torch.allclose(got[name], tensor, rtol=0, atol=1e-6), f"trial {k} ({stage}): {name} differs"
        assert load_checkpoint(out / "checkpoints" / "best.pt")["epoch"] == load_checkpoint(ref / "checkpoints" / "best.pt")["epoch"]
        metrics = pd.read_csv(out / "metrics.csv").drop(columns=["seconds"])
        pd.testing.assert_frame_equal(metrics, want_metrics, check_exact=False, atol=1e-6)
    print(f"fit kills: {alive} of {TRIALS} while running; last checkpoint at the kill: {stages}")
    assert alive >= TRIALS // 2, f"only {alive} of {TRIALS} kills landed while fit was running"


def test_fit_resume_on_a_folder_killed_before_its_first_checkpoint_starts_afresh(data: dict[str, Path], tmp_path: Path) -> None:
    """A run killed before last.pt leaves config.yaml, plan.json, network.json and
    checkpoints/ (here: as that moment leaves them, plus a temporary of the first
    checkpoint). `fit --resume` then trains from the start; a folder fit never touched is
    still refused, so a mistyped --output is not silently trained from scratch."""
    out = tmp_path / "early"
    ref = tmp_path / "ref"
    assert run("fit", "-d", data["prepared"], "-o", ref, *FIT_ARGS).exit_code == 0
    (out / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "plan.json", "network.json"):
        (out / name).write_bytes((ref / name).read_bytes())
    (out / "checkpoints" / f".last.pt.{2**22 + 7}.abcdefgh.partial.pt").write_bytes(b"PK\x03\x04 half a zip")
    result = run("fit", "-d", data["prepared"], "-o", out, "--resume", *FIT_ARGS)
    assert result.exit_code == 0, result.output
    _check_model_folder(out)
    for name, tensor in _fit_state(ref).items():
        assert torch.allclose(_fit_state(out)[name], tensor, rtol=0, atol=1e-6), name
    never = run("fit", "-d", data["prepared"], "-o", tmp_path / "typo", "--resume", *FIT_ARGS)
    assert never.exit_code != 0 and "nothing to resume from" in never.output
    assert not (tmp_path / "typo").exists()
    # killed while reading the data: the folder holds only the dead run's lock
    locked = tmp_path / "locked"
    locked.mkdir()
    os.symlink("pid=999999999;verb=fit;host=x;since=then", locked / LOCK_NAME)
    result = run("fit", "-d", data["prepared"], "-o", locked, "--resume", *FIT_ARGS)
    assert result.exit_code == 0, result.output
    for name, tensor in _fit_state(ref).items():
        assert torch.allclose(_fit_state(locked)[name], tensor, rtol=0, atol=1e-6), name
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = run("fit", "-d", data["prepared"], "-o", other, "--resume", *FIT_ARGS)
    assert refused.exit_code != 0 and "nothing to resume from" in refused.output
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- infer


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asanyarray(nib.load(str(p)).dataobj) for p in sorted(folder.glob("*.nii.gz")) if not p.name.startswith(".")}


def test_infer_killed_at_random_moments_then_rerun_equals_uninterrupted(data: dict[str, Path], tmp_path: Path) -> None:
    args = ["-m", str(data["model"]), "-i", str(data["raw"] / "imagesTs"), "-q", "--threads", "1"]
    ref = tmp_path / "ref"
    started = time.monotonic()
    result = run("infer", *args, "-o", ref)
    work = time.monotonic() - started
    assert result.exit_code == 0, result.output
    want = _masks(ref)
    assert len(want) == 8

    outs = [tmp_path / f"killed{k}" for k in range(TRIALS)]
    # trial k is killed within the case after the first 0, 1, 3, 5, 7 masks
    counts = [0, 1, 3, 5, 7][:TRIALS]
    readies = [lambda out=out, n=n: out.is_dir() and len(list(out.glob("[!.]*.nii.gz"))) >= n for out, n in zip(outs, counts)]
    jobs = [(_spawn(["infer", *args, "-o", str(out)]), ready, delay)
            for out, ready, delay in zip(outs, readies, _delays(work / 8, seed=2))]
    alive = _kill_all(jobs)

    done = []
    for k, out in enumerate(outs):
        done_before = len(_masks(out)) if out.exists() else 0
        done.append(done_before)
        for mask in (out.glob("*.nii.gz") if out.exists() else []):  # whatever the kill left must be whole
            if not mask.name.startswith("."):
                nib.load(str(mask)).get_fdata()
        result = run("infer", *args, "-o", out)  # no --overwrite: finished masks are kept, the rest written
        assert result.exit_code == 0, f"trial {k}: rerun failed: {result.output}"
        got = _masks(out)
        assert got.keys() == want.keys(), f"trial {k}"
        for name, mask in want.items():
            assert np.array_equal(got[name], mask), f"trial {k} ({done_before} masks before the rerun): {name} differs"
        # infer removes temporaries that a kill in the middle of a write left
        assert not partials(out)
    print(f"infer kills: {alive} of {TRIALS} while running; masks of 8 written at the kill: {done}")
    assert alive >= TRIALS // 2, f"only {alive} of {TRIALS} kills landed while infer was running"


def _default_signals() -> None:
    """A job started in the background without job control (a CI runner, `cmd &` in a script)
    ignores SIGINT, and so would its children; Ctrl-C's default is what is tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
                         ids=["SIGTERM", "SIGINT"])
def test_infer_stopped_by_a_signal_cleans_up(data: dict[str, Path], tmp_path: Path, sig: int, code: int,
                                             word: str) -> None:
    """SIGTERM (schedulers, `docker stop`) unwinds as Ctrl-C does: one word, no temporary file,
    no lock; the masks written before it are whole."""
    out = tmp_path / "pred"
    proc = subprocess.Popen([sys.executable, "-m", "segpipe", "infer", "-m", str(data["model"]), "-i",
                             str(data["raw"] / "imagesTs"), "-o", str(out), "-q", "--threads", "1",
                             "--probabilities", "--uncertainty"], env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    end = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < end and not list(out.glob("[!.]*.nii.gz")):
        time.sleep(0.01)
    assert proc.poll() is None, "infer ended before the signal"
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1] == word
    assert_no_partials(out)
    assert not (out / LOCK_NAME).exists()
    for mask in out.glob("[!.]*.nii.gz"):
        nib.load(str(mask)).get_fdata()


def test_infer_rerun_removes_the_temporary_a_killed_write_left(data: dict[str, Path], tmp_path: Path) -> None:
    """What SIGKILL during a mask's write leaves: `.<name>.<dead pid>.<random>.partial.nii.gz`."""
    out = tmp_path / "pred"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".SYN_003.nii.gz.{dead.pid}.k1ll3d00.partial.nii.gz"
    stale.write_bytes(b"\x1f\x8b half a gzip")
    result = run("infer", "-m", data["model"], "-i", data["raw"] / "imagesTs", "-o", out, "-q", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert len(_masks(out)) == 8
    assert_no_partials(out)


def test_two_infer_processes_writing_the_same_folder(data: dict[str, Path], tmp_path: Path) -> None:
    """Same inputs, same output folder, at the same time: one writer holds the folder's lock,
    the other is refused with one line naming the holder's PID (issue 17); while the writer
    runs, every mask visible under its final name loads whole; afterwards all are right, no
    temporaries, no lock left."""
    args = ["-m", str(data["model"]), "-i", str(data["raw"] / "imagesTs"), "-q", "--threads", "1"]
    ref = tmp_path / "ref"
    assert run("infer", *args, "-o", ref).exit_code == 0
    want = _masks(ref)
    out = tmp_path / "shared"
    procs = [subprocess.Popen([sys.executable, "-m", "segpipe", "infer", *args, "-o", str(out), "--overwrite"], env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reads = 0
    while any(p.poll() is None for p in procs):
        for mask in (out.glob("*.nii.gz") if out.exists() else []):
            if mask.name.startswith("."):
                continue
            try:
                data_read = np.asanyarray(nib.load(str(mask)).dataobj)
            except FileNotFoundError:
                continue  # replaced between glob and open: fine, the name is never torn
            assert np.array_equal(data_read, want[mask.name]), f"{mask.name} read torn or wrong"
            reads += 1
        time.sleep(0.01)
    errors = {p.pid: p.stderr.read() for p in procs}
    codes = {p.pid: p.returncode for p in procs}
    if sorted(codes.values()) == [0, 1]:  # they overlapped: the later one was refused
        loser = next(pid for pid, code in codes.items() if code == 1)
        winner = next(pid for pid in codes if pid != loser)
        one_line_error(errors[loser], 1, str(out), "in use by `segpipe infer`", f"PID {winner}")
    else:  # the first finished before the second started: both wrote, one after the other
        assert list(codes.values()) == [0, 0], errors
    got = _masks(out)
    assert got.keys() == want.keys() and all(np.array_equal(got[n], want[n]) for n in want)
    assert_no_partials(out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "hidden leftovers (temporaries or the lock)"
    print(f"concurrent infer: {reads} mask reads during the run, none torn")

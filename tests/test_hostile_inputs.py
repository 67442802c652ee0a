"""The hostile-input corpus of issue 17, run through the real CLI (in-process).

For every kind (tests/_hostile.py) the test checks:

- the exit status is 1 and the output is ONE `error: ...` line holding the expected words
  (for `--verify-only` kinds: an `ERROR <file>: ...` report line), with no traceback;
- no file outside the test folders was read: every path the shared read guard
  (`segpipe.data.guard`) checked, and every file Python opened (an audit hook), lies
  outside the secret folder the hostile inputs point at, and the guard saw only files in
  pytest's temporary folder;
- nothing was written outside the verb's output: a snapshot of the kind's folder (and the
  shared fixtures it names) before and after differs only inside the output.

The corpus is built once per session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from segpipe.cli import cli
from segpipe.data.guard import add_read_hook
from tests._corpus import make_dataset, one_line_error
from tests._hostile import KINDS, Fixtures, Kind, build_all, defects, make_outside

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and args and isinstance(args[0], (str, os.PathLike)):
        _OPENED.append(os.fspath(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only while _OPENED is a list


@pytest.fixture(scope="session")
def live_pid():
    """A process that outlives every test: the holder of the locks in the lock kinds."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, tiny_model, prepared_dataset, synthetic_dataset, live_pid) -> tuple[dict[str, Kind], Fixtures]:
    base = tmp_path_factory.mktemp("hostile")
    fx = Fixtures(outside=make_outside(base / "outside"), model=tiny_model, prepared=prepared_dataset,
                  dataset=synthetic_dataset, live_pid=live_pid, base=make_dataset(base / "clean" / "Task97"))
    return build_all(base / "corpus", fx), fx


def _snapshot(*folders: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for path in [folder, *folder.rglob("*")]:
            st = path.lstat()
            if path.is_dir() and not path.is_symlink():  # a folder's own times change when a sibling comes and goes
                out[str(path)] = (st.st_mode,)
            else:
                out[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, os.readlink(path) if path.is_symlink() else None)
    return out


def _inside(path: str, folder: Path) -> bool:
    return path == str(folder) or path.startswith(str(folder) + os.sep)


def run_kind(name: str, item: Kind, fx: Fixtures, tmp_root: Path) -> str:
    """Run one kind under the read recorders; return the error (or report) line."""
    global _OPENED
    folder = tmp_root / name
    watched = [folder, fx.outside, fx.model, *item.watch]
    before = _snapshot(*watched)
    checked: list[Path] = []
    remove = add_read_hook(checked.append)
    _OPENED = []
    try:
        args = [str(a) for a in item.args]
        result = CliRunner().invoke(cli, [args[0], "-q", *args[1:]], env=item.env)
    finally:
        opened, _OPENED = _OPENED, None
        remove()
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    output = result.output
    if item.report:
        assert result.exit_code == 1 and "Traceback" not in output, output
        lines = [line for line in output.splitlines() if line.startswith("ERROR ") and all(f in line for f in item.fragments)]
        assert lines, f"no ERROR line with {item.fragments} in:\n{output}"
        line = lines[0]
    else:
        line = one_line_error(output, result.exit_code, *item.fragments)
        assert result.exit_code == 1
    # nothing outside the test folders was read
    secret = fx.outside.resolve()
    assert not [p for p in checked if _inside(str(p), secret)], f"the guard let a secret file through: {checked}"
    assert not [p for p in opened if _inside(os.path.realpath(p), secret)], f"a secret file was opened: {opened}"
    temp_root = Path(str(tmp_root)).resolve().parents[1]
    assert all(_inside(str(p), temp_root) for p in checked), [p for p in checked if not _inside(str(p), temp_root)]
    # nothing written outside the output
    after = _snapshot(*watched)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    if item.output is not None:
        changed = {p for p in changed if not _inside(p, item.output)}
    assert not changed, f"written outside the output: {sorted(changed)}"
    return line


@pytest.mark.parametrize("name", list(KINDS))
def test_hostile_input(name: str, corpus) -> None:
    kinds, fx = corpus
    if name.endswith("device-cuda-without-cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the kind needs one without")
    line = run_kind(name, kinds[name], fx, fx.outside.parent / "corpus")
    assert "Traceback" not in line


def test_corpus_covers_every_defect_class() -> None:
    """Issue 17 lists nine defect classes; each has kinds, and the corpus has at least 40 in all
    (besides the 45 of test_bad_inputs.py)."""
    by = defects()
    assert sorted(by) == list(range(1, 10)), sorted(by)
    assert len(KINDS) >= 40, len(KINDS)


# ---------------------------------------------------------------- behaviour that is not a refusal


def test_stale_lock_of_a_dead_process_is_taken_over(corpus, tmp_path: Path) -> None:
    kinds, fx = corpus
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(f"pid={dead.pid};verb=preprocess;host=x;since=then", out / ".segpipe.lock")
    result = CliRunner().invoke(cli, ["preprocess", "-i", str(fx.base), "-o", str(out), "-q", "-j", "1",
                                      "--set", "preprocess.folds=3"])
    assert result.exit_code == 0, result.output
    assert (out / "plan.json").is_file()
    assert not (out / ".segpipe.lock").exists() and not (out / ".segpipe.lock").is_symlink(), "the lock outlived the run"


def test_an_output_folder_made_by_another_process_meanwhile_is_used(tmp_path: Path, monkeypatch) -> None:
    """torchrun's processes create the model folder at the same moment. The one whose mkdir
    came second used to refuse it as "exists and is not a folder" (a failed CI run)."""
    from segpipe.errors import SegpipeError
    from segpipe.outputs import guard

    real_mkdir = Path.mkdir

    def other_process_first(self: Path, *args, **kwargs) -> None:
        if self.name == "model" and not self.exists():
            real_mkdir(self)  # the other process wins the race
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", other_process_first)
    with guard("fit", [tmp_path / "model"], [tmp_path / "in"]):
        (tmp_path / "model" / "written").write_text("x")
    assert (tmp_path / "model" / "written").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SegpipeError, match="file: exists and is not a folder"):
        with guard("fit", [tmp_path / "file"], [tmp_path / "in"]):
            pass


def test_keep_going_skips_what_verify_calls_an_error(corpus, tmp_path: Path) -> None:
    """A fractional label: plain preprocess refuses (corpus); --keep-going leaves the case out."""
    kinds, fx = corpus
    ds = Path(kinds["fractional-label-preprocess"].args[2])
    result = CliRunner().invoke(cli, ["preprocess", "-i", str(ds), "-o", str(tmp_path / "out"), "-q", "-j", "1",
                                      "--keep-going", "--set", "preprocess.folds=2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "skipped 1 case(s)" in result.output and "non-integer values 0.5" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "SYN_001" not in manifest["cases"] and len(manifest["cases"]) == 2


def test_grey_palette_png_is_read_by_its_colours(tmp_path: Path) -> None:
    """A palette PNG whose table is grey means those grey levels, not the table indices."""
    from PIL import Image

    from segpipe.data.loading import load_arrays
    from segpipe.data.slices import read_slices
    from tests.builders import make_slices

    root = make_slices(tmp_path / "sl", patients=("BRATS_001",), slices=(10,), size=(16, 16))
    grey = np.tile(np.arange(16, dtype=np.uint8) * 10, (16, 1))
    img = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8), (16, 1)), mode="L").convert("P")
    img.putpalette([v for i in range(256) for v in (10 * i % 256,) * 3])  # index i means grey 10 i
    img.save(root / "training_images" / "BRATS_001_z10.png")
    image, _ = load_arrays(read_slices(root), read_slices(root).training[0])
    assert np.array_equal(image[0].T, grey)  # PILReader returns (x, y)


def test_json_output_is_strict_json() -> None:
    """--json and every JSON file: NaN and infinities become null, never -Infinity or NaN."""
    from segpipe.atomic import dumps_json

    text = dumps_json({"best": float("-inf"), "dice": [float("nan"), 0.5], "n": np.float32("inf"), "ok": 1.0})
    assert json.loads(text) == {"best": None, "dice": [None, 0.5], "n": None, "ok": 1.0}
    assert "Infinity" not in text and "NaN" not in text


def test_any_escaping_exception_is_one_line(monkeypatch: pytest.MonkeyPatch, corpus, tmp_path: Path) -> None:
    """A bug (here: a ValueError deep in evaluate) is one line and exit 1; --debug shows the traceback."""
    import segpipe.pipeline.evaluate as ev

    kinds, fx = corpus
    preds = Path(kinds["evaluate-output-is-references"].args[2])

    def boom(*_a, **_k):
        raise ValueError("something deep broke\nsecond line")

    monkeypatch.setattr(ev, "load_mask_grid", boom)
    args = ["evaluate", "-q", "-p", str(preds), "-l", str(preds), "-o", str(tmp_path / "o")]
    line = one_line_error(CliRunner().invoke(cli, args).output, 1, "ValueError", "something deep broke", "--debug")
    assert "second line" in line  # folded onto the one line
    debug = CliRunner().invoke(cli, ["--debug", *args])
    assert isinstance(debug.exception, ValueError)

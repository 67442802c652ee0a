"""Atomic writes: a crash leaves the previous file and no partial one."""

import os

import pytest

from segpipe.atomic import atomic_path, write_json


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]
    write_json(target, {"a": 1})
    assert target.read_text().strip().startswith("{")
    assert oct(target.stat().st_mode & 0o777) != oct(0o600) or os.umask(0o022) == 0o177


def test_a_long_legal_name_is_written_and_its_stale_temporary_found(tmp_path):
    """A 247-character mask name is legal; its temporary (`.<name>.<pid>.<random>.partial.nii.gz`)
    must not pass the file system's 255 bytes, and a killed writer's one is still cleaned up."""
    from segpipe.atomic import remove_stale_partials

    target = tmp_path / ("b" * 240 + ".nii.gz")
    with atomic_path(target) as tmp:
        assert len(tmp.name.encode()) <= 255 and tmp.name.endswith(".partial.nii.gz")
        tmp.write_bytes(b"mask")
        stale = tmp.with_name(tmp.name.replace(f".{os.getpid()}.", ".999999999."))
        stale.write_bytes(b"half")
    assert target.read_bytes() == b"mask"
    assert remove_stale_partials(tmp_path) == [stale] and os.listdir(tmp_path) == [target.name]


def test_the_output_guard_removes_this_process_s_temporaries_on_the_way_out(tmp_path):
    """An interrupt between a temporary's creation and the block that removes it leaves one;
    the guard removes this process's (in sub-folders too) and keeps a live writer's."""
    import subprocess
    import sys

    from segpipe.outputs import guard

    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(KeyboardInterrupt), guard("infer", [out], []):
            (out / "evaluation").mkdir(parents=True)
            mine = [out / f".a.nii.gz.{os.getpid()}.k1ll3d00.partial.nii.gz",
                    out / "evaluation" / f".per_case.csv.{os.getpid()}.abcdefgh.partial.csv"]
            theirs = out / f".b.nii.gz.{other.pid}.abcdefgh.partial.nii.gz"
            for path in (*mine, theirs):
                path.write_bytes(b"half")
            raise KeyboardInterrupt
        assert not any(p.exists() for p in mine) and theirs.exists()
    finally:
        other.kill()
        other.wait()


def test_a_dot_file_named_partial_without_a_writer_is_the_users_and_kept(tmp_path):
    from segpipe.atomic import remove_stale_partials

    draft = tmp_path / ".draft.partial.md"  # no PID in its name: not a segpipe temporary
    draft.write_text("notes")
    stale = tmp_path / ".mask.nii.gz.999999999.abcd1234.partial.nii.gz"
    stale.write_bytes(b"half")
    assert remove_stale_partials(tmp_path) == [stale] and draft.read_text() == "notes"

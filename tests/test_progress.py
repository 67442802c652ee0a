"""Progress bars appear only on a terminal, and never when quiet."""

from __future__ import annotations

import io
import sys

import pytest

from segpipe.progress import progress


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(("tty", "quiet", "shown"), [(True, False, True), (False, False, False), (True, True, False)])
def test_bar_only_on_a_terminal(monkeypatch, tty, quiet, shown):
    stream = _Stream(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    assert list(progress(range(3), quiet=quiet, desc="work", file=stream)) == [0, 1, 2]
    assert ("work" in stream.getvalue()) is shown


def test_fit_logged_to_a_file_has_no_bar(prepared_dataset, tmp_path):
    from click.testing import CliRunner

    from segpipe.cli import cli

    args = ["fit", "--data", str(prepared_dataset), "--output", str(tmp_path / "m"), "--set", "model.filters=4",
            "--set", "model.depth=2", "--set", "train.epochs=1", "--set", "train.iterations_per_epoch=2",
            "--set", "train.patch_size=[16,16,16]", "--set", "train.precision=fp32"]
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert "it/s" not in out.output and "%|" not in out.output

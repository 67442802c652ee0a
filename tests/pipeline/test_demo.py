"""The demo end to end, as a user runs it: its held-out Dice must be far above chance."""

import pandas as pd
import pytest
from click.testing import CliRunner

from segpipe.cli import cli


def test_demo_runs_end_to_end_and_learns(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, ["demo", "--output", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "reports" / "per_patient.csv")
    assert len(table) == 3
    labels = ["dice_edema", "dice_non-enhancing_tumour", "dice_enhancing_tumour"]
    # chance level for three nested regions is well under 0.3; a working pipeline reaches > 0.9
    assert table[labels].mean().min() > 0.7
    assert "mean Dice over held-out cases" in result.output
    for name in ("model/checkpoints/best.pt", "model/curves.png", "prepared/plan.json", "predictions/SYN_012.nii.gz"):
        assert (out / name).is_file(), name


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    result = CliRunner().invoke(cli, ["demo", "--output", str(tmp_path)])
    assert result.exit_code != 0 and "not a segpipe demo folder" in result.output
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_demo_json_is_one_json_document_on_standard_output(tmp_path):
    import json

    result = CliRunner().invoke(cli, ["demo", "-o", str(tmp_path / "d"), "--cases", "3", "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # no tables, lines or progress around it
    table = pd.read_csv(summary["paths"]["per_patient"])
    assert summary["mean_dice"] == pytest.approx(table["dice_mean"].mean(), abs=1e-5)  # the CSV keeps 6 decimals
    assert [row["patient"] for row in summary["per_patient"]] == table["patient"].tolist()


def test_a_demo_folder_holding_a_users_file_is_refused_and_kept(tmp_path):
    from segpipe.errors import SegpipeError
    from segpipe.pipeline.demo import MARKER, _fresh_folder

    root = tmp_path / "demo"
    (root / "model").mkdir(parents=True)
    (root / MARKER).write_text("made by segpipe demo")
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(SegpipeError, match="thesis.tex: not made by segpipe demo"):
        _fresh_folder(root)
    assert (root / "thesis.tex").read_text() == "precious" and (root / "model").is_dir()
    (root / "thesis.tex").unlink()
    _fresh_folder(root)  # an earlier demo's parts alone are replaced
    assert not (root / "model").exists() and (root / MARKER).is_file()


def test_a_demo_into_a_folder_another_demo_is_using_is_refused(tmp_path):
    """demo replaces its folder's parts: a second one running there would delete the first's files
    and the first would report the second's patients."""
    import os

    from click.testing import CliRunner

    from segpipe.cli import cli

    folder = tmp_path / "demo"
    folder.mkdir()
    (folder / ".segpipe-demo").write_text("made by segpipe demo; safe to delete\n")
    (folder / "dataset").mkdir()
    os.symlink(f"pid={os.getppid()};verb=demo;host=x;since=then", folder / ".segpipe.lock")  # a live process
    result = CliRunner().invoke(cli, ["demo", "-o", str(folder), "--cases", "3", "--epochs", "1"])
    assert result.exit_code == 1 and "in use by `segpipe demo`" in result.output
    assert (folder / "dataset").is_dir()

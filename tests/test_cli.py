import json
import shutil
import subprocess
import sys

import yaml
from click.testing import CliRunner

from segpipe import __version__
from segpipe.cli import cli

COMMANDS = ["preprocess", "fit", "infer", "evaluate", "demo"]


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def _assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def test_version_and_help():
    assert __version__ in run("--version").output
    top = run("--help")
    assert top.exit_code == 0
    for command in COMMANDS:
        assert command in top.output
        help_text = run(command, "--help")
        assert help_text.exit_code == 0, command
        assert "--quiet" in help_text.output and "--debug" in help_text.output
    infer_help = run("infer", "--help").output
    for option in ("--sliding-window", "--roi-size", "--overlap", "--mode", "--sw-batch-size", "--device", "--overwrite"):
        assert option in infer_help


def test_help_does_not_import_torch_or_monai():
    code = (
        "import sys; from segpipe.cli import cli\n"
        "try:\n    cli(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('torch', 'monai') if m in sys.modules]\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "segpipe", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


def test_missing_path(tmp_path):
    _assert_one_line_error(run("preprocess", "-i", tmp_path / "nope", "-o", tmp_path / "out"), "nope", "no such file")
    assert not (tmp_path / "out").exists()


def test_folder_without_dataset_json(tmp_path):
    (tmp_path / "raw").mkdir()
    _assert_one_line_error(run("preprocess", "-i", tmp_path / "raw", "-o", tmp_path / "out"), "raw", "dataset.json")


def test_malformed_dataset_json(synthetic_dataset, tmp_path):
    data = shutil.copytree(synthetic_dataset, tmp_path / "ds")
    (data / "dataset.json").write_text('{"labels": {"0": "bg",}')
    _assert_one_line_error(run("preprocess", "-i", data, "-o", tmp_path / "out"), "dataset.json", "not valid JSON")
    (data / "dataset.json").write_text(json.dumps({"labels": {"0": "bg"}}))
    _assert_one_line_error(run("preprocess", "-i", data, "-o", tmp_path / "out"), "dataset.json", "missing key")


def test_config_errors_name_the_key(synthetic_dataset, tmp_path):
    _assert_one_line_error(run("preprocess", "-i", synthetic_dataset, "-o", tmp_path / "o", "--set", "preprocess.folds=many"), "preprocess.folds")
    _assert_one_line_error(run("preprocess", "-i", synthetic_dataset, "-o", tmp_path / "o", "--set", "preprocess.fold=3"), "preprocess.fold")
    _assert_one_line_error(run("fit", "-d", tmp_path, "-o", tmp_path / "m", "--config", "no_such_config"), "no_such_config")


def test_debug_shows_the_traceback(tmp_path):
    result = run("--debug", "preprocess", "-i", tmp_path / "nope", "-o", tmp_path / "out")
    assert result.exit_code != 0 and result.exc_info is not None


def test_pipeline_through_the_cli(synthetic_dataset, tmp_path):
    prepared, model, pred, rep = (tmp_path / n for n in ("prep", "model", "pred", "rep"))
    assert run("preprocess", "-i", synthetic_dataset, "-o", prepared, "-q", "--set", "preprocess.folds=3").exit_code == 0
    overrides = ["--set", "model.filters=4", "--set", "model.depth=2", "--set", "train.iterations_per_epoch=2",
                 "--set", "train.patch_size=[16,16,16]"]
    result = run("fit", "-d", prepared, "-o", model, "--epochs", "1", "--json", "--device", "cpu", *overrides)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["models"][0]
    assert report["val_patients"] == 2 and report["threshold"] is None  # 6 patients, 3 folds; the argmax
    assert yaml.safe_load((model / "config.yaml").read_text())["train"]["device"] == "cpu"
    result = run("infer", "-m", model, "-i", synthetic_dataset, "-o", pred, "--sliding-window", "--roi-size", "16,16,16", "--overlap", "0.25")
    assert result.exit_code == 0, result.output
    assert "wrote 2 mask(s)" in result.output
    result = run("evaluate", "-p", pred, "-l", synthetic_dataset / "labelsTs", "-o", rep)
    assert result.exit_code == 0, result.output
    assert "SYN_006" in result.output and (rep / "per_patient.csv").is_file()
    _assert_one_line_error(run("fit", "-d", prepared, "-o", model, "--epochs", "1", "-q"), "already holds a trained model")


def test_json_summaries_are_machine_readable(synthetic_dataset, tiny_model, tmp_path):
    prep = run("preprocess", "-i", synthetic_dataset, "-o", tmp_path / "prep", "--json", "--set", "preprocess.folds=3")
    assert prep.exit_code == 0, prep.output
    summary = json.loads(prep.output)
    assert summary["cases"] == 6 and summary["failed"] == [] and len(summary["target_spacing"]) == 3
    verify = json.loads(run("preprocess", "-i", synthetic_dataset, "--verify-only", "--json").output)
    assert verify["usable"] is True and verify["cases"] == 8  # 6 training + 2 test cases
    inf = run("infer", "-m", tiny_model, "-i", synthetic_dataset, "-o", tmp_path / "pred", "--json",
              "--labels", synthetic_dataset / "labelsTs")
    assert inf.exit_code == 0, inf.output
    summary = json.loads(inf.output)
    assert len(summary["written"]) == 2 and summary["evaluation"]["patients"] == 2
    assert summary["precision"] in ("fp32", "bf16")  # what --precision auto chose on this machine
    assert 0.0 <= summary["evaluation"]["mean"]["dice_mean"] <= 1.0
    ev = json.loads(run("evaluate", "-p", tmp_path / "pred", "-l", synthetic_dataset / "labelsTs", "-o", tmp_path / "rep", "--json").output)
    assert ev["patients"] == 2 and any(str(f).endswith("per_patient.csv") for f in ev["files"])
    # the reports infer --labels wrote inside its predictions are rebuilt where they are
    (tmp_path / "pred" / "evaluation" / "report.html").unlink()
    rebuilt = run("report", tmp_path / "pred" / "evaluation", "--rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.output)["rebuilt"] and (tmp_path / "pred" / "evaluation" / "report.html").is_file()


def test_fewer_patients_than_folds_is_noted(synthetic_dataset, tmp_path):
    """Six patients cannot make ten folds: splits.json holds six, and preprocess says so."""
    result = run("preprocess", "-i", synthetic_dataset, "-o", tmp_path / "p", "--set", "preprocess.folds=10", "-j", "1")
    assert result.exit_code == 0, result.output
    assert "note: splits.json holds 6 fold(s), not the 10 of preprocess.folds" in result.output
    assert len(json.loads((tmp_path / "p" / "splits.json").read_text())) == 6
    again = run("preprocess", "-i", synthetic_dataset, "-o", tmp_path / "p", "--set", "preprocess.folds=10", "--json")
    assert json.loads(again.stdout)["folds"] == 6

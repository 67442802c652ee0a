"""Fine-tuning (`fit --init-from`): kept and re-initialised layers, freezing, provenance, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from click.testing import CliRunner

from segpipe.artifacts.checkpoints import load_checkpoint
from segpipe.cli import cli
from segpipe.errors import SegpipeError
from segpipe.networks.spec import build_from_spec
from segpipe.pipeline.fit import fit
from segpipe.training import finetune
from tests.conftest import tiny_config

MSD = {"0": "background", "1": "edema", "2": "non-enhancing tumour", "3": "enhancing tumour"}


def _source(tiny_model):
    ckpt = load_checkpoint(tiny_model / "checkpoints" / "best.pt")
    return ckpt["model"], ckpt["network"]


def _fresh(spec, seed=5):
    torch.manual_seed(seed)
    model = build_from_spec(spec)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def test_kept_layers_equal_the_source(tiny_model):
    weights, spec = _source(tiny_model)
    model, fresh = _fresh(spec)
    record = finetune.load_source(model, spec, MSD, tiny_model)
    assert record["reinitialised"] == {}
    assert set(record["kept"]) == set(weights)
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
        assert not torch.equal(value, fresh[key]) or key.endswith("num_batches_tracked"), key
    assert finetune.note({**record, "source": "S"}) == "initialised from S: kept stem, encoder, decoder, head"


def test_head_reinitialised_when_label_sets_differ(tiny_model):
    weights, spec = _source(tiny_model)
    for out_channels, labels in ((2, {"0": "background", "1": "tumour"}), (4, {**MSD, "3": "necrosis"})):
        target = {**spec, "out_channels": out_channels}  # the second: same shapes, other meaning
        model, fresh = _fresh(target)
        record = finetune.load_source(model, target, labels, tiny_model)
        state = model.state_dict()
        for key, value in state.items():
            if key.startswith("head."):
                assert torch.equal(value, fresh[key]) and "label sets differ" in record["reinitialised"][key], key
            else:
                assert torch.equal(value, weights[key]), key
        assert "re-initialised head (label sets differ" in finetune.note(record)


def test_stem_reinitialised_when_channels_differ(tiny_model):
    weights, spec = _source(tiny_model)
    assert spec["in_channels"] == 4
    target = {**spec, "in_channels": 1}
    model, fresh = _fresh(target)
    record = finetune.load_source(model, target, MSD, tiny_model)
    for key, value in model.state_dict().items():
        if key.startswith("stem.conv1."):
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, weights[key]), key
    line = finetune.note(record)
    assert "kept stem.conv2, encoder, decoder, head" in line
    assert "re-initialised stem.conv1 (4 input channels in the source, 1 here)" in line


def test_strided_stem_reinitialised_when_channels_differ(tmp_path):
    from segpipe.artifacts.checkpoints import save_checkpoint
    from segpipe.atomic import write_json

    spec = {"name": "unet", "spatial_dims": 2, "in_channels": 4, "out_channels": 4,
            "options": {"filters": 4, "depth": 2, "stem": "strided"}}
    source, _ = _fresh(spec, seed=1)
    weights = source.state_dict()
    write_json(tmp_path / "network.json", spec)
    (tmp_path / "checkpoints").mkdir()
    save_checkpoint(tmp_path / "checkpoints" / "best.pt", {"model": weights, "network": spec, "labels": MSD, "epoch": 0})
    model, fresh = _fresh({**spec, "in_channels": 1})
    finetune.load_source(model, {**spec, "in_channels": 1}, MSD, tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh[key] if key.startswith("stem.0.") else weights[key]), key


def test_other_architecture_refused_naming_both(tiny_model, prepared_dataset, tmp_path):
    _, spec = _source(tiny_model)
    other = {**spec, "options": {**spec["options"], "filters": 8}}
    with pytest.raises(SegpipeError, match=r"the source is unet 3D .*filters=4.*this run is unet 3D .*filters=8"):
        finetune.load_source(build_from_spec(other), other, MSD, tiny_model)
    strided = {**spec, "options": {**spec["options"], "stem": "strided"}}
    with pytest.raises(SegpipeError, match=r"stem=plain, this run is unet 3D .*stem=strided"):
        finetune.load_source(build_from_spec(strided), strided, MSD, tiny_model)
    older = {**spec, "options": {k: v for k, v in spec["options"].items() if k != "stem"}}  # before model.stem existed
    assert finetune._same_architecture(older, spec)
    result = CliRunner().invoke(cli, ["fit", "--data", str(prepared_dataset), "--output", str(tmp_path / "m"),
                                      "--init-from", str(tiny_model), "--set", "model.filters=4", "--set", "model.depth=3",
                                      "--set", "train.patch_size=[16,16,16]", "--set", "train.precision=fp32", "--quiet"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "depth=2" in lines[0] and "depth=3" in lines[0], result.output


def test_options_validated_in_one_line(tiny_model, prepared_dataset, tmp_path):
    cases = [
        ({"train.init_from": str(tiny_model), "train.freeze": "[encodr]"}, "unknown part 'encodr' .known: stem, encoder, decoder"),
        ({"train.freeze": "[encoder]"}, "needs a source"),
        ({"train.init_from": str(tiny_model), "train.init_lr_scale": "0"}, "positive factor"),
        ({"train.init_from": str(tiny_model), "train.freeze_epochs": "-1"}, "train.freeze_epochs"),
        ({"train.init_from": str(tmp_path)}, "not a segpipe model folder"),
    ]
    for i, (extra, message) in enumerate(cases):
        with pytest.raises(SegpipeError, match=message):
            fit(prepared_dataset, tmp_path / f"m{i}", tiny_config(**extra), quiet=True)


def test_kept_layers_get_the_scaled_learning_rate(tiny_model):
    _, spec = _source(tiny_model)
    target = {**spec, "out_channels": 2}
    model, _ = _fresh(target)
    record = finetune.load_source(model, target, {"0": "background", "1": "tumour"}, tiny_model)
    groups = finetune.FineTune(record, lr_scale=0.1).param_groups(model, 1e-3)
    names = dict(model.named_parameters())
    assert [g["name"] for g in groups] == ["new", "kept"]
    assert {id(p) for p in groups[0]["params"]} == {id(names["head.weight"]), id(names["head.bias"])}
    assert groups[0]["lr"] == 1e-3 and groups[1]["lr"] == pytest.approx(1e-4)
    assert len(groups[1]["params"]) == len(names) - 2


def _fine_tune(source):
    return tiny_config(**{"train.init_from": str(source), "train.freeze": "[encoder]", "train.freeze_epochs": "1",
                          "train.init_lr_scale": "0.5", "train.deterministic": "true"})


def test_freeze_resume_and_provenance(tiny_model, prepared_dataset, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_model, source)
    weights, _ = _source(source)
    encoder = [k for k in weights if k.startswith(("stem.", "encoder."))]
    decoder = [k for k in weights if k.startswith("decoder.") and not k.endswith("num_batches_tracked")]

    # Interrupted after the frozen epoch: the encoder is the source's, the decoder has trained.
    fit(prepared_dataset, tmp_path / "b", _fine_tune(source), quiet=True, epochs_this_run=1)
    after1 = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(after1[k], weights[k]) for k in encoder)
    assert any(not torch.equal(after1[k], weights[k]) for k in decoder)

    # Provenance: config.yaml and init.json name the source, its hash and the layers kept.
    config = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert config["train"]["init_from"] == str(source) and config["train"]["freeze"] == ["encoder"]
    record = json.loads((tmp_path / "b" / "init.json").read_text())
    assert record["source"] == str(source.resolve())
    assert record["checkpoint"].endswith("best.pt") and len(record["sha256"]) == 64
    assert set(record["kept"]) == set(weights) and record["reinitialised"] == {}
    assert record["note"].startswith(f"initialised from {source.resolve()}: kept")

    # --resume continues from last.pt and never reloads the source: poison it, then resume.
    poisoned = load_checkpoint(source / "checkpoints" / "best.pt")
    poisoned["model"] = {k: torch.zeros_like(v) for k, v in poisoned["model"].items()}
    torch.save(poisoned, source / "checkpoints" / "best.pt")
    fit(prepared_dataset, tmp_path / "b", _fine_tune(source), resume=True, quiet=True)
    resumed = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert resumed["epoch"] == 1
    assert any(not torch.equal(resumed["model"][k], weights[k]) for k in encoder)  # unfrozen in epoch 2

    # ... and ends where an uninterrupted fine-tuning run from the intact source ends.
    shutil.rmtree(source)
    shutil.copytree(tiny_model, source)
    fit(prepared_dataset, tmp_path / "a", _fine_tune(source), quiet=True)
    straight = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")["model"]
    for key, value in straight.items():
        assert torch.allclose(value, resumed["model"][key], atol=1e-6), key


def test_resume_refuses_another_source(tiny_model, prepared_dataset, tmp_path):
    fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.init_from": str(tiny_model), "train.epochs": "1"}), quiet=True)
    with pytest.raises(SegpipeError, match="was started from"):
        fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.init_from": str(tmp_path), "train.epochs": "2"}),
            resume=True, quiet=True)


@pytest.mark.parametrize("record", [["a list"], {"kept": []}, {"source": "x", "kept": "conv"}, {"source": "x", "kept": [1]}])
def test_resume_refuses_a_damaged_init_record(tiny_model, prepared_dataset, tmp_path, record):
    fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.init_from": str(tiny_model), "train.epochs": "1"}), quiet=True)
    (tmp_path / "m" / "init.json").write_text(json.dumps(record))
    with pytest.raises(SegpipeError, match=r"init\.json: (not a fine-tuning record|'kept' must be a list)"):
        fit(prepared_dataset, tmp_path / "m", tiny_config(**{"train.init_from": str(tiny_model), "train.epochs": "2"}),
            resume=True, quiet=True)


def test_cli_init_from_and_resume(tiny_model, prepared_dataset, tmp_path):
    out = tmp_path / "m"
    args = ["fit", "--data", str(prepared_dataset), "--output", str(out), "--init-from", str(tiny_model),
            "--set", "model.filters=4", "--set", "model.depth=2", "--set", "train.patch_size=[16,16,16]",
            "--set", "train.iterations_per_epoch=2", "--set", "train.precision=fp32", "--epochs", "2"]
    result = CliRunner().invoke(cli, [*args, "--epochs-this-run", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["models"][0]["model_dir"] == str(out)  # --json output stays clean JSON
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["init_from"] == str(tiny_model.resolve())
    assert json.loads((out / "init.json").read_text())["source"] == str(tiny_model.resolve())
    result = CliRunner().invoke(cli, [*args, "--resume", "--quiet"])  # the same command line again, resumed
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1

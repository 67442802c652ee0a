"""Typed artifacts: plan.json, the prepared folder and the model folder, label keys converted at load."""

import json
import shutil

import pytest

from segpipe.artifacts.model_folder import ModelFolder, first_model_folder, fold_folders, load_model_folder
from segpipe.artifacts.plan import BRATS_REGIONS, MSD_REGIONS, Plan
from segpipe.artifacts.prepared import load_prepared
from segpipe.errors import SegpipeError


def test_plan_converts_label_keys_once():
    plan = Plan.from_dict({"labels": {"0": "background", "2": "edema", "1": "necrosis"}}, "plan.json")
    assert plan.label_names == {0: "background", 2: "edema", 1: "necrosis"}
    assert plan.label_ids == [2, 1]  # plan.json's order, background left out
    assert plan.stored_labels == {"0": "background", "2": "edema", "1": "necrosis"}
    assert json.loads(json.dumps(plan)) == {"labels": {"0": "background", "2": "edema", "1": "necrosis"}}


@pytest.mark.parametrize("labels, words", [
    (None, "not a segpipe plan (no 'labels' mapping)"),
    (["a", "b"], "not a segpipe plan (no 'labels' mapping)"),
    ({"one": "a"}, "label value 'one' is not an integer"),
    ({"0": "bg", "300": "a"}, "label value 300 is outside 0..255"),
])
def test_plan_without_readable_labels_is_refused(labels, words, tmp_path):
    with pytest.raises(SegpipeError) as err:
        Plan.from_dict({"labels": labels}, tmp_path / "plan.json")
    assert str(err.value).startswith(f"{tmp_path / 'plan.json'}: {words}")


def test_plan_regions_default_to_the_label_set():
    msd = Plan.from_dict({"labels": {"0": "bg", "1": "a", "2": "b", "3": "c"}}, "p")
    brats = Plan.from_dict({"labels": {"0": "bg", "1": "a", "2": "b", "4": "c"}}, "p")
    assert msd.regions(None) == MSD_REGIONS
    assert brats.regions(None) == BRATS_REGIONS
    assert msd.regions({"x": [1]}) == {"x": [1]}
    assert msd.regions({}) == {}


def test_prepared_dataset_is_typed(prepared_dataset):
    prepared = load_prepared(prepared_dataset)
    assert isinstance(prepared.plan, Plan)
    assert prepared.folds == list(range(len(prepared.splits)))
    assert set(prepared.plan.label_names) == {0, 1, 2, 3}
    assert set(prepared.manifest["cases"])


def test_model_folder_reads_config_and_plan_without_weights(tiny_model):
    folder = ModelFolder.open(tiny_model)
    assert folder.plan.label_names == {int(k): v for k, v in json.loads((tiny_model / "plan.json").read_text())["labels"].items()}
    assert folder.checkpoint_path("last") == tiny_model / "checkpoints" / "last.pt"
    assert folder.network_spec() == json.loads((tiny_model / "network.json").read_text())
    model = load_model_folder(tiny_model, "last")
    assert model.root == tiny_model and model.plan == folder.plan and model.checkpoint.name == "last.pt"


def test_checkpoint_choice_is_checked(tiny_model):
    with pytest.raises(SegpipeError, match="expected 'best' or 'last', got 'first'"):
        ModelFolder.open(tiny_model).checkpoint_path("first")


def test_model_folder_missing_files_name_the_file(tmp_path):
    with pytest.raises(SegpipeError, match=r"config.yaml: missing; .* is not a segpipe model folder"):
        ModelFolder.open(tmp_path)


def test_fold_folders(tiny_model, tmp_path):
    assert fold_folders(tiny_model) == [tiny_model]
    assert first_model_folder(tiny_model) == tiny_model
    with pytest.raises(SegpipeError, match="is a single model folder"):
        fold_folders(tiny_model, "0")
    for k in (1, 0, 2):
        (tmp_path / f"fold_{k}").mkdir()
        shutil.copy(tiny_model / "config.yaml", tmp_path / f"fold_{k}" / "config.yaml")
    assert fold_folders(tmp_path) == [tmp_path / "fold_0", tmp_path / "fold_1", tmp_path / "fold_2"]
    assert fold_folders(tmp_path, "2,0") == [tmp_path / "fold_0", tmp_path / "fold_2"]
    assert first_model_folder(tmp_path) == tmp_path / "fold_0"
    with pytest.raises(SegpipeError, match="has no fold_7"):
        fold_folders(tmp_path, "1,7")


def test_fold_folders_are_fold_and_a_number_in_numeric_order(tiny_model, tmp_path):
    for name in ("fold_10", "fold_2", "fold_0_old", "fold_x", "fold_1"):
        shutil.copytree(tiny_model, tmp_path / name)  # complete model folders, backups among them
    assert fold_folders(tmp_path) == [tmp_path / "fold_1", tmp_path / "fold_2", tmp_path / "fold_10"]
    assert first_model_folder(tmp_path) == tmp_path / "fold_1"

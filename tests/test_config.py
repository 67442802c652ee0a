import pytest

from segpipe.config import Config, config_from_dict, load_config, parse_override
from segpipe.errors import SegpipeError


def test_defaults_are_typed():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.preprocess.target_spacing is None


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 7\n  lr: 1e-4\nmodel:\n  name: linknet\n")
    cfg = load_config(path, ["train.epochs=9", "train.patch_size=[32, 32, 16]", "preprocess.target_spacing=[1, 1, 2.5]"])
    assert cfg.train.epochs == 9
    assert cfg.train.lr == pytest.approx(1e-4)  # YAML 1.1 reads 1e-4 as a string; it is converted
    assert cfg.model.name == "linknet"
    assert cfg.train.patch_size == [32, 32, 16]
    assert cfg.preprocess.target_spacing == [1.0, 1.0, 2.5]
    assert all(isinstance(v, float) for v in cfg.preprocess.target_spacing)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=ten", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.patch_size=[a, b]", "train.patch_size"),
        ("model.residual=3", "model.residual"),
        ("evaluate.regions=[1, 2]", "evaluate.regions"),
    ],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(SegpipeError, match=f"'{key}'".replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


@pytest.mark.parametrize("override, key", [("train.epoch=3", "train.epoch"), ("trian.epochs=3", "trian")])
def test_unknown_key_names_the_key(override, key):
    with pytest.raises(SegpipeError, match=key):
        load_config(None, [override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  filtres: 8\n")
    with pytest.raises(SegpipeError, match="model.filtres"):
        load_config(path)


def test_yaml_never_runs_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train:\n  epochs: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SegpipeError, match="not valid YAML"):
        load_config(path)


def test_override_syntax_errors():
    with pytest.raises(SegpipeError, match="section.key=value"):
        parse_override("train.epochs")
    with pytest.raises(SegpipeError, match="section.key"):
        parse_override("epochs=3")


def test_round_trip_through_dict():
    cfg = load_config(None, ["train.epochs=3", "evaluate.regions={wt: [1, 2]}"])
    again = config_from_dict(cfg.to_dict(), "test")
    assert again == cfg


def test_repository_configs_folder_holds_the_ready_configs():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    names = {p.name for p in root.glob("*.yaml")}
    assert {"msd_2d.yaml", "msd_2d_seed.yaml", "msd_3d.yaml", "figshare_2d.yaml", "figshare_2d_seed.yaml",
            "figshare_2d_linknet.yaml", "demo.yaml"} <= names
    for name in names:
        assert isinstance(load_config(root / name), Config)


def test_a_byte_order_mark_is_read_past(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + b"train:\n  epochs: 7\n")
    assert load_config(path).train.epochs == 7


def test_network_choices_are_named_by_their_config_key():
    from segpipe.config_schema import NETWORK_NAMES
    from segpipe.networks.registry import NETWORKS
    from segpipe.networks.layers import NORMS

    assert set(NETWORK_NAMES) == set(NETWORKS) and set(NORMS) == {"batch", "instance"}
    for key, value in (("model.name", "resnet"), ("model.norm", "group"), ("model.stem", "wide")):
        with pytest.raises(SegpipeError, match=f"config key '{key}' must be one of"):
            load_config(overrides=[f"{key}={value}"])

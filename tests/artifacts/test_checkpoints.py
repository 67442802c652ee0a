import os
import pickle

import pytest
import torch

from segpipe.artifacts.checkpoints import check_compatible, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from segpipe.errors import SegpipeError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_round_trip_with_rng_state(tmp_path):
    state = {"model": {"w": torch.randn(3)}, "epoch": 4, "rng": rng_state(), "labels": {"0": "bg"}}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 4 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    expected = torch.rand(5)
    set_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(5), expected)


def test_pickle_carrying_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "segpipe-checkpoint/1", "x": _Evil()}, path)
    with pytest.raises(SegpipeError, match="refused to load"):
        load_checkpoint(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(SegpipeError, match="raw.pt"):
        load_checkpoint(raw)


def test_truncated_and_foreign_files(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.randn(100)}})
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SegpipeError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "t.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "f.pt")
    with pytest.raises(SegpipeError, match="not a segpipe checkpoint"):
        load_checkpoint(tmp_path / "f.pt")
    with pytest.raises(SegpipeError, match="not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_other_architecture_or_labels_are_named():
    net = {"name": "unet", "spatial_dims": 3, "in_channels": 4, "out_channels": 4, "options": {"filters": 16}}
    labels = {"0": "bg", "1": "tumour"}
    ckpt = {"network": {**net, "name": "linknet"}, "labels": labels}
    with pytest.raises(SegpipeError, match="another architecture .name: checkpoint 'linknet'"):
        check_compatible("c.pt", ckpt, net, labels)
    with pytest.raises(SegpipeError, match="another label set"):
        check_compatible("c.pt", {"network": net, "labels": {"0": "bg"}}, net, labels)
    check_compatible("c.pt", {"network": net, "labels": labels}, net, labels)

"""Checkpoints: round trips, atomic writes, no pickle, clear errors on bad files."""
import json
import os
import pickle

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.checkpoint import (CheckpointError, load_checkpoint, read_config,
                                 save_checkpoint)
from scoresde.nets import MLP, UNet


def small_model(sde, prediction="epsilon", **kw):
    torch.manual_seed(0)
    return sd.ScoreModel(MLP(2, hidden=16, depth=1, time_dim=8), sde, prediction=prediction,
                         **kw)


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine", "ddpm_linear", "ddpm_cosine"])
def test_round_trip_every_sde(tmp_path, build_sde, name):
    sde = build_sde(name)
    model = small_model(sde, prediction="v_prediction" if name != "ve" else "sample")
    save_checkpoint(tmp_path, model, step=7)
    model2, sde2, config = load_checkpoint(tmp_path)
    assert type(sde2) is type(sde) and sde2.config() == sde.config()
    if isinstance(sde, sd.DiscreteVPSDE):
        assert torch.equal(sde2.betas, sde.betas)
    t = torch.linspace(0.01, 1.0, 7)
    assert all(torch.equal(a, b) for a, b in zip(sde.marginal_coeffs(t), sde2.marginal_coeffs(t)))
    assert (model2.prediction, model2.time_input, model2.time_scale) == \
        (model.prediction, model.time_input, model.time_scale)
    assert config["step"] == 7 and config["model"]["class"] == "MLP"
    x = torch.randn(5, 2)
    assert torch.equal(model(x, t[:5]), model2(x, t[:5]))  # float64 weights restored exactly
    assert next(model2.parameters()).dtype == torch.float64


def test_ema_model_float32_and_unet(tmp_path):
    torch.manual_seed(0)
    sde = sd.VESDE()
    net = UNet(1, base_channels=8, channel_mults=(1, 2)).float()
    ema = UNet(1, base_channels=8, channel_mults=(1, 2)).float()
    save_checkpoint(tmp_path, net, sde, ema=ema, data={"name_or_path": "digits"},
                    train_config={"betas": (0.9, 0.99)}, extra={"note": "hi"})
    ck = load_checkpoint(tmp_path)
    assert ck.model.net is ck.ema_net and ck.model.time_input == "scaled"
    assert all(torch.equal(a, b) for a, b in zip(ck.ema_net.state_dict().values(),
                                                  ema.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(ck.net.state_dict().values(),
                                                  net.state_dict().values()))
    assert next(ck.net.parameters()).dtype == torch.float32
    assert ck.config["train"]["betas"] == (0.9, 0.99) and ck.config["extra"] == {"note": "hi"}
    assert load_checkpoint(tmp_path, use_ema=False).model.net is not None
    assert load_checkpoint(tmp_path, dtype=torch.float64).net.conv_in.weight.dtype \
        == torch.float64


def test_only_json_and_safetensors_are_written_and_no_pickle_on_load(tmp_path, monkeypatch):
    from scoresde.training import TrainConfig, Trainer
    torch.manual_seed(0)
    tr = Trainer(MLP(2, hidden=8, depth=1), sd.DiscreteVPSDE.linear(50), "gmm",
                 TrainConfig(steps=3, batch_size=8, loss="ddpm"))
    tr.train(progress=False)
    tr.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "ema.safetensors", "model.safetensors",
                                            "optimizer.safetensors", "state.safetensors"]
    for name in os.listdir(tmp_path):
        head = (tmp_path / name).read_bytes()[:2]
        assert head != b"\x80\x02" and not head.startswith(b"PK")  # no pickle, no zip

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle / torch.load must not be used to load a checkpoint")
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    resumed = Trainer.load(tmp_path)
    assert resumed.step == 3


def test_save_overwrites_atomically(tmp_path, monkeypatch):
    model = small_model(sd.VPSDE())
    save_checkpoint(tmp_path, model, step=1)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}

    def failing_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, step=2)
    monkeypatch.undo()
    after = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    assert after == before  # old checkpoint intact, no temporary files left behind
    assert load_checkpoint(tmp_path).step == 1


def test_truncated_and_corrupt_files(tmp_path):
    save_checkpoint(tmp_path, small_model(sd.VPSDE()))
    path = tmp_path / "model.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated: \d+ bytes"):
        load_checkpoint(tmp_path)
    flipped = bytearray(blob)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt: its SHA-256"):
        load_checkpoint(tmp_path)
    path.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing"):
        load_checkpoint(tmp_path)

    # a file that matches its recorded checksum but is not safetensors
    cfg_path = tmp_path / "config.json"
    record = json.loads(cfg_path.read_text())
    import hashlib
    junk = b"\x00" * 64
    path.write_bytes(junk)
    record["files"]["model.safetensors"] = {"bytes": 64,
                                            "sha256": hashlib.sha256(junk).hexdigest()}
    cfg_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path)

    text = cfg_path.read_text()
    cfg_path.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON.*truncated"):
        load_checkpoint(tmp_path)
    cfg_path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a scoresde checkpoint"):
        read_config(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    os.unlink(cfg_path)
    with pytest.raises(CheckpointError, match=r"config\.json: missing"):
        load_checkpoint(tmp_path)
    assert issubclass(CheckpointError, ValueError)


def test_mismatched_architecture(tmp_path):
    save_checkpoint(tmp_path, small_model(sd.VPSDE()))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: .*shape mismatch"):
        load_checkpoint(tmp_path, net=MLP(2, hidden=32, depth=1, time_dim=8))
    with pytest.raises(CheckpointError, match="missing from the file"):
        load_checkpoint(tmp_path, net=MLP(2, hidden=16, depth=3, time_dim=8))
    # an edited config.json describing another architecture
    cfg_path = tmp_path / "config.json"
    record = json.loads(cfg_path.read_text())
    record["model"]["config"]["depth"] = 2
    cfg_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not in the model|missing from the file"):
        load_checkpoint(tmp_path)
    record["model"]["config"]["colour"] = "red"
    cfg_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="cannot build MLP"):
        load_checkpoint(tmp_path)
    record["sde"] = {"type": "FancySDE", "params": {}}
    cfg_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="FancySDE"):
        load_checkpoint(tmp_path)


def test_unregistered_network_needs_net_argument(tmp_path):
    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x, t):
            return self.lin(x)

    torch.manual_seed(0)
    net = Custom()
    save_checkpoint(tmp_path, net, sd.VPSDE(), ema=Custom())
    with pytest.raises(CheckpointError, match="not registered.*net="):
        load_checkpoint(tmp_path)
    ck = load_checkpoint(tmp_path, net=Custom(), use_ema=False)
    assert torch.equal(ck.net.lin.weight, net.lin.weight) and ck.ema_net is not ck.net

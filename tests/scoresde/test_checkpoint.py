"""Checkpoints: round trips, atomic writes, no pickle, clear errors on bad files.

``CORRUPTIONS`` / ``corrupt`` damage a training checkpoint in the ways a user meets
(test_crash_safety.py runs ``scoresde sample`` on each of them too)."""
import hashlib
import json
import os
import pathlib
import pickle
import shutil

import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scoresde.data import load_dataset
from scoresde.nets import MLP, UNet
from scoresde.training import TrainConfig, Trainer


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


def assert_one_line_naming(error, path):
    """A CheckpointError's message is one line that starts with the file's full path."""
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message


def test_truncated_and_corrupt_files(tmp_path):
    save_checkpoint(tmp_path, small_model(sd.VPSDE()))
    path = tmp_path / "model.safetensors"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated: \d+ bytes") as err:
        load_checkpoint(tmp_path)
    assert_one_line_naming(err, path)
    flipped = bytearray(blob)
    flipped[-3] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt: its SHA-256") as err:
        load_checkpoint(tmp_path)
    assert_one_line_naming(err, path)
    flipped = bytearray(blob)  # in the middle: the header parses, only the checksum catches it
    flipped[len(blob) // 2: len(blob) // 2 + 4] = b"\x00\xff\x00\xff"
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt: its SHA-256") as err:
        load_checkpoint(tmp_path)
    assert_one_line_naming(err, path)
    path.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing") as err:
        load_checkpoint(tmp_path)
    assert_one_line_naming(err, path)

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


# -- corrupted training checkpoints ------------------------------------------------------------
def forbid_unpickling(monkeypatch):
    """Make pickle and torch.load fail loudly, so a test proves that neither is called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle / torch.load must not be used to load a checkpoint")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)


def _record_file(directory, name, blob):
    """Patch config.json's size and SHA-256 of ``name`` to match ``blob``."""
    cfg = directory / "config.json"
    record = json.loads(cfg.read_text())
    record["files"][name] = {"bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
    cfg.write_text(json.dumps(record, indent=2))


def corrupt(directory, kind):
    """Damage the training checkpoint in ``directory`` as ``kind`` says; returns the path
    of the file the error must name."""
    directory = pathlib.Path(directory)
    model = directory / "model.safetensors"
    blob = model.read_bytes()
    if kind == "truncated tensor file":
        model.write_bytes(blob[: len(blob) // 2])
        return model
    if kind == "flipped bytes mid-file":
        middle = bytearray(blob)
        for i in range(len(blob) // 2, len(blob) // 2 + 8):
            middle[i] ^= 0xFF
        model.write_bytes(bytes(middle))
        return model
    if kind == "config.json of another width":
        # a real run of twice the width on the same data, its config.json copied over
        run = Trainer.load(directory)
        cfg = run.net.config()
        torch.manual_seed(1)
        net = MLP(**{**cfg, "hidden": 2 * cfg["hidden"]}).to(next(run.net.parameters()).dtype)
        wide = Trainer(sd.ScoreModel(net, run.sde), None, run.data, run.config)
        wide.train(2, progress=False)
        other = directory.parent / (directory.name + "-wide")
        wide.save(other)
        shutil.copyfile(other / "config.json", directory / "config.json")
        return directory / "config.json"
    if kind == "pickle renamed to .safetensors":
        # torch.save's zip of pickles, with config.json patched so only the parser can object
        torch.save({"weight": torch.ones(3)}, model)
        _record_file(directory, "model.safetensors", model.read_bytes())
        return model
    if kind == "plain pickle renamed to .safetensors":
        model.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))
        _record_file(directory, "model.safetensors", model.read_bytes())
        return model
    if kind == "empty config.json":
        (directory / "config.json").write_bytes(b"")
        return directory / "config.json"
    if kind == "missing ema file":
        (directory / "ema.safetensors").unlink()
        return directory / "ema.safetensors"
    raise ValueError(kind)


# kind -> what the one-line message says after the file's path
CORRUPTIONS = {
    "truncated tensor file": r"truncated: \d+ bytes, config\.json records \d+",
    "flipped bytes mid-file": r"corrupt: its SHA-256 differs",
    "config.json of another width": r"does not describe the files beside it .*model\.safetensors"
                                    r".*different saves",
    "pickle renamed to .safetensors": r"not a valid safetensors file",
    "plain pickle renamed to .safetensors": r"not a valid safetensors file",
    "empty config.json": r"empty file \(0 bytes\)",
    "missing ema file": r"missing \(listed in .*config\.json\)",
}


@pytest.fixture(scope="module")
def training_checkpoint(tmp_path_factory):
    """A 3-step float64 training checkpoint (weights, EMA, optimizer, generator state)."""
    torch.manual_seed(0)
    tr = Trainer(MLP(2, hidden=16, depth=1), sd.VPSDE(), load_dataset("gmm", n=64),
                 TrainConfig(steps=3, batch_size=8))
    tr.train(progress=False)
    return pathlib.Path(tr.save(tmp_path_factory.mktemp("ck") / "run"))


@pytest.mark.parametrize("kind", [k for k in CORRUPTIONS
                                  if k not in ("truncated tensor file", "flipped bytes mid-file")])
def test_corrupted_training_checkpoint_is_one_line_error(training_checkpoint, tmp_path,
                                                         monkeypatch, kind):
    """(Truncation and flipped bytes: test_truncated_and_corrupt_files.)"""
    run = tmp_path / "run"
    shutil.copytree(training_checkpoint, run)
    named = corrupt(run, kind)
    forbid_unpickling(monkeypatch)
    for load in (load_checkpoint, Trainer.load):
        with pytest.raises(CheckpointError, match=CORRUPTIONS[kind]) as err:
            load(run)
        assert_one_line_naming(err, named)
        if kind == "config.json of another width":  # and the tensor file it does not describe
            assert str(run / "model.safetensors") in str(err.value)

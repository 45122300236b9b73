"""Trainer: learning, seeding, EMA, warm-up, and bit-identical resume."""
import math

import pytest
import torch

import scoresde as sd
from scoresde.checkpoint import CheckpointError
from scoresde.data import load_dataset
from scoresde.nets import MLP, UNet
from scoresde.training import TrainConfig, Trainer


def make_trainer(steps=200, seed=0, warmup=10, **kw):
    torch.manual_seed(seed)
    sde = sd.VPSDE()
    model = sd.ScoreModel(MLP(2, hidden=32, depth=2, time_dim=16), sde)
    cfg = TrainConfig(steps=steps, batch_size=64, lr=2e-3, warmup=warmup, log_every=20,
                      ema_decay=0.99, seed=seed, **kw)
    return Trainer(model, None, load_dataset("gmm", n=1000), cfg)


def state_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def optimizer_equal(o1, o2):
    s1, s2 = o1.state_dict(), o2.state_dict()
    if s1["param_groups"] != s2["param_groups"] or s1["state"].keys() != s2["state"].keys():
        return False
    return all(state_equal(s1["state"][k], s2["state"][k]) for k in s1["state"])


def test_loss_decreases():
    tr = make_trainer(steps=80)
    history = tr.train(progress=False)
    assert [r["step"] for r in history] == [20, 40, 60, 80] and tr.step == 80
    assert history[-1]["loss"] < 0.7 * history[0]["loss"]
    assert isinstance(tr.ema, sd.ScoreModel) and tr.ema.net is tr.ema_net
    assert not state_equal(tr.ema_net.state_dict(), tr.net.state_dict())
    assert tr.train(progress=False) == []  # the run is complete


def test_resume_is_bit_identical(tmp_path):
    full = make_trainer()
    full.train(progress=True)

    part = make_trainer()
    part.train(100, progress=False)
    part.save(tmp_path / "run")
    torch.manual_seed(12345)  # the global RNG must not matter
    resumed = Trainer.load(tmp_path / "run")
    assert resumed.step == 100 and resumed.config == part.config
    resumed.train(progress=False)  # the remaining 100 steps

    assert resumed.step == full.step == 200
    assert state_equal(resumed.net.state_dict(), full.net.state_dict())
    assert state_equal(resumed.ema_net.state_dict(), full.ema_net.state_dict())
    assert optimizer_equal(resumed.optimizer, full.optimizer)
    assert torch.equal(resumed.generator.get_state(), full.generator.get_state())
    assert resumed.history == full.history


def test_resume_with_dropout_unet_and_ddpm_loss(tmp_path):
    def trainer():
        torch.manual_seed(1)
        sde = sd.DiscreteVPSDE.linear(N=100)
        net = UNet(1, base_channels=8, channel_mults=(1, 2), dropout=0.2)
        cfg = TrainConfig(steps=6, batch_size=4, loss="ddpm", log_every=2, seed=3)
        return Trainer(net, sde, load_dataset("digits", n=40), cfg)

    pytest.importorskip("sklearn")
    full = trainer()
    torch.manual_seed(7)
    full.train(progress=False)
    part = trainer()
    part.train(3, progress=False)
    part.save(tmp_path / "u")
    torch.manual_seed(8)
    resumed = Trainer.resume(tmp_path / "u", progress=False)
    assert state_equal(resumed.net.state_dict(), full.net.state_dict())
    assert state_equal(resumed.ema_net.state_dict(), full.ema_net.state_dict())
    assert optimizer_equal(resumed.optimizer, full.optimizer)
    assert resumed.model.time_input == "index"
    assert [r["step"] for r in resumed.history] == [2, 4, 6]


def test_seeded_results_and_ema_recursion():
    a, b = make_trainer(steps=3), make_trainer(steps=3)
    init = {k: v.clone() for k, v in a.net.state_dict().items()}
    torch.manual_seed(1)
    a.train_step()
    torch.manual_seed(2)
    b.train_step()
    assert state_equal(a.net.state_dict(), b.net.state_dict())
    # step 0: decay = min(0.99, 1/10) = 0.1, so ema = 0.1 * init + 0.9 * weights
    for k, e in a.ema_net.state_dict().items():
        expected = torch.lerp(init[k], a.net.state_dict()[k], 0.9)
        assert torch.allclose(e, expected, rtol=1e-12, atol=1e-15), k
    c = make_trainer(steps=3, seed=1)
    c.net.load_state_dict(init)
    c.train_step()
    assert not state_equal(a.net.state_dict(), c.net.state_dict())  # other seed, other batch


def test_warmup_learning_rate_and_clipping():
    tr = make_trainer(steps=3, grad_clip=None)
    assert [tr.lr_at(k) for k in (0, 4, 9, 50)] == pytest.approx([2e-4, 1e-3, 2e-3, 2e-3])
    tr.train_step()
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(2e-4)
    assert TrainConfig(warmup=0, lr=0.5).lr == 0.5 and make_trainer(warmup=0).lr_at(0) == 2e-3


def test_cosine_schedule_decays_to_zero_after_warmup():
    # lr (1 + cos(pi p)) / 2 with p = (k - warmup) / (steps - warmup): 1, 1/2, 0 at p = 0, 1/2, 1
    tr = make_trainer(steps=110, warmup=10, lr_schedule="cosine")
    assert [tr.lr_at(k) for k in (0, 9, 10, 35, 60, 110)] == pytest.approx(
        [2e-4, 2e-3, 2e-3, 2e-3 * (1 + math.cos(math.pi / 4)) / 2, 1e-3, 0.0], abs=1e-15)
    assert make_trainer(steps=50, warmup=0, lr_schedule="cosine").lr_at(0) == pytest.approx(2e-3)
    with pytest.raises(ValueError, match=r"lr_schedule='linear' is not supported.*'cosine'"):
        TrainConfig(lr_schedule="linear")


def test_nonfinite_loss_stops_before_update():
    tr = make_trainer(steps=3)
    tr._x[0] = float("nan")
    tr._x[:] = tr._x[0]
    before = {k: v.clone() for k, v in tr.net.state_dict().items()}
    with pytest.raises(FloatingPointError, match="step 1"):
        tr.train_step()
    assert state_equal(before, tr.net.state_dict()) and tr.step == 0


def test_tensor_data_needs_data_on_load(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(100, 2)
    tr = Trainer(MLP(2, hidden=8, depth=1), sd.VESDE(), x, TrainConfig(steps=4, batch_size=8))
    tr.train(progress=False)
    tr.save(tmp_path / "t")
    with pytest.raises(ValueError, match="data="):
        Trainer.load(tmp_path / "t")
    again = Trainer.load(tmp_path / "t", data=x)
    assert again.step == 4 and isinstance(again.sde, sd.VESDE)


def test_model_only_checkpoint_is_not_resumable(tmp_path):
    from scoresde.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "m", sd.ScoreModel(MLP(2, hidden=8, depth=1), sd.VPSDE()))
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        Trainer.load(tmp_path / "m")


def test_config_and_argument_errors():
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l1")
    with pytest.raises(ValueError, match="importance_sampling"):
        TrainConfig(importance_sampling=True)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="DiscreteVPSDE"):
        Trainer(MLP(2), sd.VPSDE(), torch.zeros(4, 2), TrainConfig(loss="ddpm"))
    with pytest.raises(TypeError, match="sde"):
        Trainer(MLP(2), None, torch.zeros(4, 2))
    with pytest.raises(TypeError, match="data"):
        Trainer(MLP(2), sd.VPSDE(), [[0.0, 0.0]])
    cfg = TrainConfig(steps=5, betas=[0.8, 0.9])
    assert cfg.betas == (0.8, 0.9) and TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_numpy_data_trains_like_the_same_tensor():
    """A NumPy array of training data is converted once (as_real_tensor) and trains exactly
    like the tensor it holds."""
    x = load_dataset("gmm", n=256).x
    runs = []
    for data in (x, x.numpy()):
        torch.manual_seed(0)
        model = sd.ScoreModel(MLP(2, hidden=16, depth=1, time_dim=8), sd.VPSDE())
        trainer = Trainer(model, None, data, TrainConfig(steps=3, batch_size=32, warmup=0))
        trainer.train(progress=False)
        runs.append(trainer.net.state_dict())
    assert state_equal(*runs)
    torch.manual_seed(0)   # the initial weights: training moved them
    assert not state_equal(runs[0], MLP(2, hidden=16, depth=1, time_dim=8).state_dict())

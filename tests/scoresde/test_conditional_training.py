"""Class-conditional networks, condition dropout, the conditional Trainer, and the command
line end to end on digits: ``train --conditional``, ``sample --class --guidance``,
``inpaint`` (a tiny model, a few steps)."""
from __future__ import annotations

import re

import matplotlib
import pytest
import torch

import scoresde as sd
from scoresde.nets import NULL_LABEL

matplotlib.use("Agg")

from scoresde.cli import main  # noqa: E402

F64 = torch.float64
VP = sd.VPSDE()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("make, shape", [(lambda: sd.MLP(3, hidden=16, depth=1, num_classes=4),
                                          (5, 3)),
                                         (lambda: sd.UNet(1, base_channels=8, num_classes=4),
                                          (5, 1, 8, 8))])
def test_class_embedding_and_null_token(make, shape):
    torch.manual_seed(0)
    net = make().to(F64)
    x = torch.randn(*shape, dtype=F64, generator=gen())
    t = torch.full((5,), 300.0, dtype=F64)
    null = net(x, t)                                         # cond None: the null token
    assert torch.equal(null, net(x, t, torch.full((5,), NULL_LABEL)))
    labels = torch.tensor([0, 1, 2, 3, -1])
    out = net(x, t, labels)
    assert (out[4] - null[4]).abs().max() < 1e-12
    for i in range(4):                                       # each row uses its own label
        assert (out[i] - net(x[i:i + 1], t[:1], labels[i:i + 1])[0]).abs().max() < 1e-12
        assert (out[i] - null[i]).abs().max() > 1e-6
    assert net.config()["num_classes"] == 4
    with pytest.raises(ValueError, match=r"cond.*\[0, 4\)"):
        net(x, t, torch.tensor([0, 1, 2, 4, 0]))
    uncond = sd.MLP(3, hidden=8, depth=1)
    with pytest.raises(ValueError, match="unconditional.*num_classes"):
        uncond(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_condition_dropout_draws_after_the_noise_and_drops_p_of_the_labels():
    torch.manual_seed(0)
    model = sd.ScoreModel(sd.MLP(2, hidden=8, depth=1, num_classes=3).to(F64), VP)
    n = 4000
    x0 = torch.randn(n, 2, dtype=F64, generator=gen(1))
    cond = torch.arange(n) % 3
    p = 0.25
    with torch.no_grad():
        loss = sd.dsm_loss(model, VP, x0, cond=cond, p_uncond=p, generator=gen(2),
                           reduce="none")
    g = gen(2)                               # the same draws by hand: t, z, then the dropout
    torch.rand(n, generator=g, dtype=F64)
    torch.randn(n, 2, generator=g, dtype=F64)
    dropped = torch.where(torch.rand(n, generator=g, dtype=F64) < p, NULL_LABEL, cond)
    with torch.no_grad():
        want = sd.dsm_loss(model, VP, x0, cond=dropped, generator=gen(2), reduce="none")
    assert torch.equal(loss, want)
    frac = float((dropped == NULL_LABEL).double().mean())
    assert abs(frac - p) < 3 * (p * (1 - p) / n) ** 0.5
    with torch.no_grad():                    # p = 0 draws nothing more: unconditional order kept
        a = sd.dsm_loss(model, VP, x0, cond=cond, generator=gen(2), reduce="none")
        b = sd.dsm_loss(sd.ScoreModel(lambda x, t, c=None: model.net(x, t, cond), VP), VP, x0,
                        generator=gen(2), reduce="none")
    assert torch.equal(a, b)


def test_conditional_trainer_needs_labels_and_a_conditional_net():
    data = sd.load_dataset("digits", split="train")
    cfg = sd.TrainConfig(steps=2, batch_size=8, warmup=0, log_every=1, conditional=True)
    with pytest.raises(ValueError, match="num_classes"):
        sd.Trainer(sd.UNet(1, base_channels=8), VP, data, cfg)
    with pytest.raises(ValueError, match="labelled data"):
        sd.Trainer(sd.MLP(2, hidden=8, num_classes=2), VP, torch.randn(16, 2), cfg)
    with pytest.raises(ValueError, match="p_uncond"):
        sd.TrainConfig(conditional=True, p_uncond=1.0)


# -- the command line ---------------------------------------------------------------------------
def ok(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert main(["train", "--data", "digits", "--conditional", "--p-uncond", "0.2", "--out",
                 str(out), "--steps", "3", "--hidden", "8", "--batch-size", "16",
                 "--no-progress"]) == 0
    return out


def test_cli_conditional_sample_and_inpaint(digits_run, tmp_path, capsys):
    ck = sd.load_checkpoint(str(digits_run))
    assert ck.model.net.num_classes == 10
    assert ck.config["train"]["conditional"] and ck.config["train"]["p_uncond"] == 0.2
    pic, saved = tmp_path / "guided.png", tmp_path / "guided.pt"
    out = ok(capsys, "sample", "--run", digits_run, "--class", "3", "7", "--guidance", "2.0",
             "--solver", "dpm_solver++", "--steps", "4", "--num", "6", "--out", pic,
             "--save-samples", saved, "--no-progress")
    lines = re.findall(r"sampled 6 images of class (\d) \(guidance 2\).*NFE (\d+)", out)
    assert lines == [("3", "8"), ("7", "8")]                 # 2 NFE per guided evaluation
    assert pic.exists() and torch.load(saved).shape == (12, 1, 8, 8)
    out = ok(capsys, "sample", "--run", digits_run, "--class", "3", "--solver", "ddim",
             "--steps", "4", "--num", "2", "--out", pic, "--no-progress")
    assert "NFE 4" in out                                     # guidance 0: one call each
    pic = tmp_path / "inpainted.png"
    out = ok(capsys, "inpaint", "--run", digits_run, "--mask", "bottom", "--num", "4",
             "--steps", "6", "--resample", "2", "--jumps", "2", "--out", pic)
    assert re.search(r"inpainted the bottom half of 4 test images .*NFE 10,.*MSE of the "
                     r"filled half [0-9.]+", out), out
    assert pic.exists()


@pytest.mark.parametrize("argv, match", [
    (["--guidance", "1.0"], "--guidance needs --class"),
    (["--class", "10"], "--class 10 is not a class"),
    (["--class", "1", "--guidance", "-1"], "--guidance: expected a finite number >= 0"),
])
def test_cli_sample_guidance_errors(digits_run, capsys, argv, match):
    status = main(["sample", "--run", str(digits_run), "--num", "2", "--steps", "2",
                   "--solver", "ddim", "--no-progress"] + argv)
    err = capsys.readouterr().err
    assert status == 2 and match in err and len(err.strip().splitlines()) == 1, err

"""Reference networks: shapes, dtypes, time dependence, gradients, rebuild from config."""
import math

import pytest
import torch
from torch import nn

from scoresde.nets import MLP, NETS, SinusoidalEmbedding, UNet, build_net, register_net


def test_sinusoidal_embedding_values():
    emb = SinusoidalEmbedding(8, max_period=10000)
    t = torch.tensor([0.0, 1.0, 500.0], dtype=torch.float64)
    e = emb(t)
    assert e.shape == (3, 8) and e.dtype == torch.float64
    assert torch.equal(e[0, :4], torch.zeros(4, dtype=torch.float64))
    assert torch.equal(e[0, 4:], torch.ones(4, dtype=torch.float64))
    # frequencies w_k = 10000^(-k/4): check one entry against the formula
    w2 = 10000.0 ** (-2 / 4)
    assert e[2, 2].item() == pytest.approx(math.sin(500.0 * w2), abs=1e-12)
    assert e[2, 6].item() == pytest.approx(math.cos(500.0 * w2), abs=1e-12)


def test_sinusoidal_embedding_long_input_and_odd_dim():
    emb = SinusoidalEmbedding(7)
    i = torch.tensor([0, 5, 999])
    e_long = emb(i, dtype=torch.float64)
    e_float = emb(i.to(torch.float64))
    assert e_long.shape == (3, 7)
    assert torch.equal(e_long, e_float)
    assert torch.equal(e_long[:, -1], torch.zeros(3, dtype=torch.float64))
    assert emb(i).dtype == torch.get_default_dtype()
    assert emb(i, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="dim"):
        SinusoidalEmbedding(1)


def _check_grads(net, loss):
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())


def test_mlp_shapes_time_dependence_and_gradients():
    torch.manual_seed(0)
    net = MLP(2, hidden=32, depth=2, time_dim=16).float()
    x = torch.randn(5, 2, dtype=torch.float32)
    out = net(x, torch.rand(5, dtype=torch.float32) * 999)
    assert out.shape == (5, 2) and out.dtype == torch.float32
    # integer (DDPM) time inputs and a scalar time are accepted
    assert net(x, torch.tensor([1, 2, 3, 4, 5])).shape == (5, 2)
    assert net(x, torch.tensor(3.0)).shape == (5, 2)
    # the output depends on the time
    assert not torch.allclose(net(x, torch.zeros(5)), net(x, torch.full((5,), 500.0)))
    _check_grads(net, net(x, torch.rand(5) * 999).pow(2).sum())


def test_mlp_float64_and_bad_input():
    net = MLP(3, hidden=16, depth=1).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    out = net(x, torch.tensor([0, 10, 20, 30]))
    assert out.dtype == torch.float64 and out.shape == (4, 3)
    with pytest.raises(ValueError, match=r"\[batch, 3\]"):
        net(torch.randn(4, 2, dtype=torch.float64), torch.zeros(4))
    with pytest.raises(ValueError, match="t_in"):
        net(x, torch.zeros(3))


@pytest.mark.parametrize("size,mults,attention", [(8, (1, 2), False), (28, (1, 2, 2), True)])
def test_unet_shapes_and_gradients(size, mults, attention):
    torch.manual_seed(0)
    net = UNet(1, base_channels=8, channel_mults=mults, attention=attention).float()
    x = torch.randn(2, 1, size, size, dtype=torch.float32)
    out = net(x, torch.tensor([3, 700]))
    assert out.shape == x.shape
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.full((2,), 900.0)))
    _check_grads(net, out.pow(2).sum())


def test_unet_float64_multichannel_and_odd_size():
    net = UNet(3, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2).double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    out = net(x, torch.tensor([0.5, 1.5], dtype=torch.float64))
    assert out.shape == x.shape and out.dtype == torch.float64
    with pytest.raises(ValueError, match="channel_mults"):
        UNet(1, channel_mults=())
    with pytest.raises(ValueError, match=r"\[batch, 3, H, W\]"):
        net(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2))


@pytest.mark.parametrize("net", [MLP(2, hidden=16, depth=2),
                                 UNet(1, base_channels=8, channel_mults=(1, 2), dropout=0.1)])
def test_rebuild_from_config(net):
    rebuilt = build_net(type(net).__name__, net.config())
    assert rebuilt.config() == net.config()
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_register_net():
    class Tiny(nn.Module):
        def __init__(self, dim=2):
            super().__init__()
            self.dim = dim
            self.lin = nn.Linear(dim, dim)

        def config(self):
            return {"dim": self.dim}

        def forward(self, x, t):
            return self.lin(x)

    try:
        register_net(Tiny)
        assert isinstance(build_net("Tiny", {"dim": 3}), Tiny)
    finally:
        NETS.pop("Tiny", None)
    with pytest.raises(TypeError, match="config"):
        register_net(nn.Linear)
    with pytest.raises(ValueError, match="unknown network"):
        build_net("Nope", {})

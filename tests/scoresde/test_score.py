"""Score parametrizations (scoresde.score) checked against a closed-form Gaussian score.

Data x_0 ~ N(mu, Sigma) diffused by an SDE with x_t = alpha x_0 + std eps has the score
s(x, t) = -C^{-1} (x - alpha mu), C = alpha^2 Sigma + std^2 I. From it, the targets are
    eps = -std s,    x0 = (x + std^2 s)/alpha (Tweedie),    v = alpha eps - std x0.
Networks predicting each of these are written here from alpha, std in closed form (conftest),
decoding their time input themselves; ScoreModel must turn every one back into s.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.score import ScoreModel, score_from_eps

N = 1000                       # the DiscreteVPSDE schedules built in conftest
D = 3
# index times of N = 1000 (closed forms exist there for every schedule), per batch row
T_ROWS = np.array([0.05, 0.123, 0.3, 0.5, 0.77, 0.9])
PREDICTIONS = ["epsilon", "sample", "v_prediction", "score"]


def _gaussian(rng):
    mu = rng.normal(size=D)
    A = rng.normal(size=(D, D))
    return mu, A @ A.T / D + 0.3 * np.eye(D)


def _targets(x, t, name, truth, mu, cov):
    """Closed-form score, eps, x0 and v at x [n, D] (numpy), one time per row."""
    alpha, std = truth.alpha(name, t), truth.std(name, t)
    score = np.stack([-np.linalg.solve(alpha[n] ** 2 * cov + std[n] ** 2 * np.eye(D),
                                       x[n] - alpha[n] * mu) for n in range(len(x))])
    eps = -std[:, None] * score
    x0 = (x + std[:, None] ** 2 * score) / alpha[:, None]
    v = alpha[:, None] * eps - std[:, None] * x0
    return {"score": score, "epsilon": eps, "sample": x0, "v_prediction": v}


def _default_decoder(name):
    """The time a network receives by default, decoded back to t (brief: index for a
    DiscreteVPSDE, t * 999 for a continuous SDE)."""
    if name in ("ddpm_linear", "ddpm_cosine"):
        def decode(t_in):
            assert t_in.dtype == torch.long, f"expected integer timesteps, got {t_in.dtype}"
            return (t_in.numpy() + 1.0) / N
    else:
        def decode(t_in):
            assert t_in.is_floating_point()
            return t_in.numpy() / 999.0
    return decode


class OracleNet:
    """net(x, t_in) predicting `target` of the Gaussian data; records what it receives."""

    def __init__(self, name, truth, mu, cov, target, decode):
        self.name, self.truth, self.mu, self.cov = name, truth, mu, cov
        self.target, self.decode = target, decode
        self.calls = []

    def __call__(self, x, t_in):
        self.calls.append(t_in.detach().clone())
        assert t_in.shape == (x.shape[0],), f"t_in shape {tuple(t_in.shape)}"
        t = self.decode(t_in)
        out = _targets(x.detach().numpy(), t, self.name, self.truth, self.mu, self.cov)
        return torch.as_tensor(out[self.target], dtype=x.dtype)


def test_score_from_eps_returns_oracle_score(sde_name, build_sde, truth, close, rng):
    sde = build_sde(sde_name)
    mu, cov = _gaussian(rng)
    x = rng.normal(size=(len(T_ROWS), D)) * 1.5
    net = OracleNet(sde_name, truth, mu, cov, "epsilon", _default_decoder(sde_name))
    score = score_from_eps(net, sde)(torch.tensor(x), torch.tensor(T_ROWS))
    expected = _targets(x, T_ROWS, sde_name, truth, mu, cov)["score"]
    assert score.shape == x.shape
    close(score, expected, 1e-10, 1e-10, f"{sde_name} score_from_eps")
    assert len(net.calls) == 1


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_parametrization_gives_the_score(sde_name, prediction, build_sde, truth, close,
                                               rng):
    sde = build_sde(sde_name)
    mu, cov = _gaussian(rng)
    x = rng.normal(size=(len(T_ROWS), D)) * 1.5
    tt = torch.tensor(T_ROWS)
    net = OracleNet(sde_name, truth, mu, cov, prediction, _default_decoder(sde_name))
    model = ScoreModel(net, sde, prediction=prediction)
    expected = _targets(x, T_ROWS, sde_name, truth, mu, cov)
    close(model(torch.tensor(x), tt), expected["score"], 1e-10, 1e-10,
          f"{sde_name} {prediction} score")
    close(model.eps(torch.tensor(x), tt), expected["epsilon"], 1e-10, 1e-10,
          f"{sde_name} {prediction} eps")
    close(model.x0(torch.tensor(x), tt), expected["sample"], 1e-9, 1e-9,
          f"{sde_name} {prediction} x0")


def test_image_shaped_states(sde_name, build_sde, truth, close, gen):
    """x [batch, C, H, W] with isotropic data N(m, s0^2 I): s = -(x - alpha m)/(alpha^2 s0^2 + std^2)."""
    sde = build_sde(sde_name)
    m, s0 = 0.3, 0.7
    decode = _default_decoder(sde_name)

    def eps_net(x, t_in):
        t = decode(t_in)
        a = torch.tensor(truth.alpha(sde_name, t))[:, None, None, None]
        s = torch.tensor(truth.std(sde_name, t))[:, None, None, None]
        return s * (x - a * m) / (a ** 2 * s0 ** 2 + s ** 2)

    x = torch.randn(len(T_ROWS), 2, 3, 4, generator=gen)
    score = sd.score_from_eps(eps_net, sde)(x, torch.tensor(T_ROWS))
    a = torch.tensor(truth.alpha(sde_name, T_ROWS))[:, None, None, None]
    s = torch.tensor(truth.std(sde_name, T_ROWS))[:, None, None, None]
    close(score, -(x - a * m) / (a ** 2 * s0 ** 2 + s ** 2), 1e-10, 1e-10, "image score")


# --------------------------------------------------------------------------------------
# what the network receives as its time input
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddpm_linear", "ddpm_cosine"])
def test_discrete_network_receives_integer_timesteps(name, build_sde, gen):
    sde = build_sde(name)
    idx = torch.tensor([0, 1, 2, 17, 499, 500, 998, 999])
    seen = []

    def net(x, t_in):
        seen.append(t_in)
        return torch.zeros_like(x)

    model = ScoreModel(net, sde, prediction="epsilon")
    for dtype in (torch.float64, torch.float32):
        t = ((idx.double() + 1) / N).to(dtype)
        model(torch.randn(len(idx), 2, generator=gen).to(dtype), t)
        assert seen[-1].dtype == torch.long
        assert torch.equal(seen[-1], idx), f"{dtype}: got {seen[-1].tolist()}"
    # round(t N - 1): a time a third of a step off an index time maps to that index
    t = (idx.double() + 1) / N + torch.tensor([0.3, -0.3, 0.3, -0.3, 0.3, -0.3, 0.3, -0.3]) / N
    model(torch.randn(len(idx), 2, generator=gen), t.clamp(0.0, 1.0))
    assert torch.equal(seen[-1], idx)


def test_continuous_network_receives_999_t(continuous_name, build_sde, close, gen):
    sde = build_sde(continuous_name)
    seen = []

    def net(x, t_in):
        seen.append(t_in)
        return torch.zeros_like(x)

    t = torch.tensor([0.001, 0.2, 0.5, 0.999, 1.0])
    ScoreModel(net, sde, prediction="epsilon")(torch.randn(5, 2, generator=gen), t)
    assert seen[-1].dtype == torch.float64
    close(seen[-1], t * 999, 1e-14, 1e-14, "t_in")


@pytest.mark.parametrize("time_input", ["t", "sigma"])
def test_time_input_options(sde_name, time_input, build_sde, truth, close, gen):
    sde = build_sde(sde_name)
    seen = []

    def net(x, t_in):
        seen.append(t_in)
        return torch.zeros_like(x)

    t = np.array([0.05, 0.5, 1.0])
    ScoreModel(net, sde, time_input=time_input)(torch.randn(3, 2, generator=gen),
                                                torch.tensor(t))
    expected = t if time_input == "t" else truth.std(sde_name, t)
    close(seen[-1], expected, 1e-12, 1e-14, f"{sde_name} time_input={time_input}")


def test_float_time_equals_batch_tensor(sde_name, build_sde, truth, close, rng):
    sde = build_sde(sde_name)
    mu, cov = _gaussian(rng)
    net = OracleNet(sde_name, truth, mu, cov, "epsilon", _default_decoder(sde_name))
    model = score_from_eps(net, sde)
    x = torch.tensor(rng.normal(size=(4, D)))
    s_float = model(x, 0.5)
    assert net.calls[-1].shape == (4,)
    s_0d = model(x, torch.tensor(0.5))
    s_batch = model(x, torch.full((4,), 0.5))
    assert torch.equal(s_float, s_batch) and torch.equal(s_0d, s_batch)
    close(s_float, _targets(x.numpy(), np.full(4, 0.5), sde_name, truth, mu, cov)["score"],
          1e-10, 1e-10, "float t")

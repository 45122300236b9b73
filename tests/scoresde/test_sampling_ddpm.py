"""The discrete samplers against the papers, to float precision.

On DiscreteVPSDE.linear(1000) with an arbitrary (fixed random, nonlinear) noise-prediction
network eps(x, i) of the integer timestep i, the reference loops below are written from

* Ho et al. 2020, Algorithm 2 (DDPM):
      x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t)) / sqrt(alpha_t) + sigma_t z,
      sigma_t^2 = beta_t, z = 0 at the last step;
* the same update across skipped steps (a sub-sequence tau of the indices), with
  beta = 1 - abar_tau_k / abar_tau_{k+1} and abar = 1 after the last index;
* Song, Meng & Ermon 2021, eq. 12 (DDIM):
      x_s = sqrt(abar_s) (x_t - sqrt(1 - abar_t) eps)/sqrt(abar_t) + sqrt(1 - abar_s - sigma^2) eps + sigma z,
  with eta = 0 (sigma = 0) and eta = 1 (DDPM's posterior: sigma^2 = beta_tilde =
  (1 - abar_s)/(1 - abar_t) beta, mean written in DDPM's form);

and driven by the same seed: the prior torch.randn(shape) first, then one torch.randn
shaped like x per stochastic update, in order.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.samplers import sample

try:
    from ._sampling_helpers import RandomEpsNet, one_thread  # noqa: F401 (autouse fixture)
except ImportError:  # tests/scoresde is not a package
    from _sampling_helpers import RandomEpsNet, one_thread  # noqa: F401

N = 1000
SHAPE = (8, 3)
SEED = 20240611
TOL = 1e-10


@pytest.fixture(scope="module")
def ddpm_sde():
    return sd.DiscreteVPSDE.linear(N)


def _betas() -> torch.Tensor:
    """Ho et al. 2020, Sec. 4: betas linear from 1e-4 to 0.02 over N = 1000 steps."""
    return torch.tensor(np.linspace(1e-4, 0.02, N), dtype=torch.float64)


def _index_batch(i: int) -> torch.Tensor:
    return torch.full((SHAPE[0],), i, dtype=torch.long)


def ddpm_algorithm2(eps_net, seed: int) -> torch.Tensor:
    """Ho et al. 2020, Algorithm 2, verbatim (0-based index i = t - 1)."""
    betas = _betas()
    alphas = 1.0 - betas
    abar = torch.cumprod(alphas, 0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for i in reversed(range(N)):
        eps = eps_net(x, _index_batch(i))
        z = torch.randn(SHAPE, generator=g, dtype=torch.float64) if i > 0 else torch.zeros(SHAPE)
        sigma = math.sqrt(betas[i].item())
        x = (x - betas[i] / torch.sqrt(1.0 - abar[i]) * eps) / torch.sqrt(alphas[i]) + sigma * z
    return x


def skipped_indices(steps: int) -> list:
    """The sub-sequence of DDPM indices: round(linspace(N - 1, 0, steps))."""
    return [int(i) for i in np.round(np.linspace(N - 1, 0, steps))]


def ddpm_skipped(eps_net, seed: int, indices, variance: str) -> torch.Tensor:
    """DDPM's update between consecutive chosen indices t > s (abar_s = 1 after the last):
    beta = 1 - abar_t/abar_s, x_s = (x_t - beta/sqrt(1 - abar_t) eps)/sqrt(1 - beta) + sigma z
    with sigma^2 = beta ("beta") or the posterior variance beta_tilde = (1 - abar_s)/(1 - abar_t) beta."""
    abar = torch.cumprod(1.0 - _betas(), 0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for k, i in enumerate(indices):
        last = k == len(indices) - 1
        ab_t = abar[i]
        ab_s = torch.tensor(1.0, dtype=torch.float64) if last else abar[indices[k + 1]]
        beta = 1.0 - ab_t / ab_s
        eps = eps_net(x, _index_batch(i))
        mean = (x - beta / torch.sqrt(1.0 - ab_t) * eps) / torch.sqrt(1.0 - beta)
        if last:
            x = mean
            continue
        var = beta if variance == "beta" else (1.0 - ab_s) / (1.0 - ab_t) * beta
        x = mean + torch.sqrt(var) * torch.randn(SHAPE, generator=g, dtype=torch.float64)
    return x


def ddim_eta0(eps_net, seed: int, indices) -> torch.Tensor:
    """Song, Meng & Ermon 2021, eq. 12 with sigma = 0, abar = 1 after the last index."""
    abar = torch.cumprod(1.0 - _betas(), 0)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for k, i in enumerate(indices):
        ab_t = abar[i]
        ab_s = torch.tensor(1.0, dtype=torch.float64) if k == len(indices) - 1 \
            else abar[indices[k + 1]]
        eps = eps_net(x, _index_batch(i))
        x0 = (x - torch.sqrt(1.0 - ab_t) * eps) / torch.sqrt(ab_t)
        x = torch.sqrt(ab_s) * x0 + torch.sqrt(1.0 - ab_s) * eps
    return x


def _run(ddpm_sde, solver, **options):
    net = RandomEpsNet(SHAPE[1])
    model = sd.ScoreModel(net, ddpm_sde, "epsilon")
    g = torch.Generator().manual_seed(SEED)
    res = sample(model, ddpm_sde, SHAPE, solver=solver, generator=g, **options)
    return res, net


def _check_received(net: RandomEpsNet, indices) -> None:
    """The network got torch.long timesteps, one batch per chosen index, in order."""
    assert len(net.t_inputs) == len(indices), \
        f"network called {len(net.t_inputs)} times, expected {len(indices)}"
    for k, (t_in, i) in enumerate(zip(net.t_inputs, indices)):
        assert t_in.dtype == torch.long, f"call {k}: timestep dtype {t_in.dtype}, not torch.long"
        assert t_in.shape == (SHAPE[0],), f"call {k}: timestep shape {tuple(t_in.shape)}"
        assert bool((t_in == i).all()), f"call {k}: timesteps {t_in.tolist()}, expected {i}"


def test_schedule_matches_ddpm(ddpm_sde, close):
    """The SDE under test is DDPM's schedule: betas linspace(1e-4, 0.02, 1000)."""
    close(ddpm_sde.betas, _betas(), rtol=1e-15, atol=1e-18, what="betas")


def test_ddpm_all_steps_is_algorithm_2(ddpm_sde, close):
    res, net = _run(ddpm_sde, "ddpm")
    ref = ddpm_algorithm2(RandomEpsNet(SHAPE[1]), SEED)
    assert res.x.dtype == torch.float64
    assert float(ref.abs().max()) > 0.1  # a non-trivial comparison
    close(res.x, ref, rtol=TOL, atol=TOL, what="ddpm (1000 steps) vs Ho et al. Algorithm 2")
    _check_received(net, list(range(N - 1, -1, -1)))
    assert res.nfe == N


def test_ddpm_100_of_1000_steps_is_skipped_step_update(ddpm_sde, close):
    idx = skipped_indices(100)
    assert len(set(idx)) == 100 and idx[0] == N - 1 and idx[-1] == 0
    res, net = _run(ddpm_sde, "ddpm", steps=100)
    ref = ddpm_skipped(RandomEpsNet(SHAPE[1]), SEED, idx, variance="beta")
    close(res.x, ref, rtol=TOL, atol=TOL, what="ddpm (100 of 1000 steps) vs skipped-step DDPM")
    _check_received(net, idx)
    assert res.nfe == 100


def test_ddpm_with_fewer_steps_differs_from_all_steps(ddpm_sde):
    """The step subset matters (guards against steps= being ignored)."""
    full, _ = _run(ddpm_sde, "ddpm")
    some, _ = _run(ddpm_sde, "ddpm", steps=100)
    assert float((full.x - some.x).abs().max()) > 1e-3


@pytest.mark.parametrize("steps", [50, 1000])
def test_ddim_eta0_is_eq12(ddpm_sde, close, steps):
    idx = skipped_indices(steps)
    res, net = _run(ddpm_sde, "ddim", steps=steps, eta=0.0)
    ref = ddim_eta0(RandomEpsNet(SHAPE[1]), SEED, idx)
    close(res.x, ref, rtol=TOL, atol=TOL, what=f"ddim eta=0 ({steps} steps) vs eq. 12")
    _check_received(net, idx)
    assert res.nfe == steps


def test_ddim_eta0_draws_only_the_prior(ddpm_sde):
    """Deterministic given x_T: after the prior, the generator is untouched."""
    g = torch.Generator().manual_seed(SEED)
    model = sd.ScoreModel(RandomEpsNet(SHAPE[1]), ddpm_sde, "epsilon")
    sample(model, ddpm_sde, SHAPE, solver="ddim", steps=20, eta=0.0, generator=g)
    ref = torch.Generator().manual_seed(SEED)
    torch.randn(SHAPE, generator=ref, dtype=torch.float64)
    assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("steps", [50, 1000])
def test_ddim_eta1_is_ddpm_with_posterior_variance(ddpm_sde, close, steps):
    idx = skipped_indices(steps)
    res, net = _run(ddpm_sde, "ddim", steps=steps, eta=1.0)
    ref = ddpm_skipped(RandomEpsNet(SHAPE[1]), SEED, idx, variance="beta_tilde")
    close(res.x, ref, rtol=TOL, atol=TOL,
          what=f"ddim eta=1 ({steps} steps) vs DDPM with sigma^2 = beta_tilde")
    _check_received(net, idx)


def test_ddim_eta1_and_ddpm_differ_only_in_variance(ddpm_sde):
    """DDPM (sigma^2 = beta) and DDIM eta = 1 (sigma^2 = beta_tilde) share the noise but not
    the variance: with the same seed their samples differ, by a bounded amount."""
    a, _ = _run(ddpm_sde, "ddpm", steps=50)
    b, _ = _run(ddpm_sde, "ddim", steps=50, eta=1.0)
    diff = float((a.x - b.x).abs().max())
    assert 1e-4 < diff < 10.0, diff


def test_ddpm_sde_marginal_matches_schedule_at_index_times(ddpm_sde, close):
    """alphabar(t_i) of the continuous-time view equals DDPM's cumprod at t_i = (i + 1)/N,
    the times the samplers step through."""
    i = torch.tensor([0, 1, 9, 99, 499, 998, 999])
    t = (i.to(torch.float64) + 1.0) / N
    abar = torch.cumprod(1.0 - _betas(), 0)[i]
    close(ddpm_sde.alphas_cumprod(t), abar, rtol=1e-12, atol=0.0, what="alphabar at t_i")

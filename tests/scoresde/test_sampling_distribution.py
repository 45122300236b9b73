"""Every sampler, run with the exact score of a 2-D Gaussian mixture, samples the right law.

The truth is the mixture's marginal at the end time eps (x_eps = alpha x_0 + std z, a
mixture again), or the data law itself for samplers that end at t = 0 (DDIM, DDPM) or
denoise with Tweedie's formula (denoise=True; E[x_0 | x_eps] differs from x_0 in law by
O(std(eps)^2) = O(1e-4), far below the Monte Carlo error). For each sampler:

* sample mean and covariance agree with the truth within 3 standard errors, the standard
  errors estimated from the samples;
* an energy-distance two-sample test against oracle samples (permutation p-value) does not
  reject at the 1% level.

Steps are chosen so that the discretization bias is far below the Monte Carlo error of
2000 samples; the power checks at the end show that both tests see a wrong law.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.samplers import sample

try:
    from ._sampling_helpers import (one_thread,  # noqa: F401 (autouse fixture)
                                    MIX_COVS, MIX_MEANS, MIX_WEIGHTS, energy_test,
                                    mixture_moments, moment_report, vp_alpha, vp_var)
except ImportError:  # tests/scoresde is not a package
    from _sampling_helpers import (one_thread,  # noqa: F401
                                   MIX_COVS, MIX_MEANS, MIX_WEIGHTS, energy_test,
                                   mixture_moments, moment_report, vp_alpha, vp_var)

N_SAMPLES = 2000
EPS = 1e-3
ALPHA_LEVEL = 0.01


@pytest.fixture(scope="module")
def vp():
    return sd.VPSDE(beta_min=0.1, beta_max=20.0)


@pytest.fixture(scope="module")
def ddpm_sde():
    return sd.DiscreteVPSDE.linear(1000)


def _mixture(sde=None):
    return sd.GaussianMixture(torch.tensor(MIX_WEIGHTS), torch.tensor(MIX_MEANS),
                              torch.tensor(MIX_COVS), sde=sde)


@pytest.fixture(scope="module")
def truth():
    """(mean, cov, oracle samples) of the law at eps under the VP-SDE and of the data law."""
    a, v = vp_alpha(EPS), vp_var(EPS)
    g = torch.Generator().manual_seed(99)
    at_eps = sd.GaussianMixture(torch.tensor(MIX_WEIGHTS), a * torch.tensor(MIX_MEANS),
                                a ** 2 * torch.tensor(MIX_COVS) + v * torch.eye(2))
    data = _mixture()
    return {
        "eps": (*mixture_moments(MIX_WEIGHTS, MIX_MEANS, MIX_COVS, a, v),
                at_eps.sample(N_SAMPLES, generator=g)),
        "data": (*mixture_moments(MIX_WEIGHTS, MIX_MEANS, MIX_COVS),
                 data.sample(N_SAMPLES, generator=g)),
    }


# Langevin's step 2 alpha (snr |z|/|score|)^2 has an O(step) bias (unadjusted Langevin); at
# score_sde's snr = 0.16, tuned for images, it is a few standard errors in 2-D even with
# batch-averaged norms, so the Langevin corrector runs at snr = 0.05 here. The annealed
# Langevin corrector's step 2 alpha (snr std)^2 is small enough at the default snr.
CORRECTOR_OPTS = {"langevin": {"snr": 0.05}, "ald": {}, "none": {}}
PC_COMBOS = [(p, c) for p in ("reverse_diffusion", "euler_maruyama", "ancestral")
             for c in ("langevin", "ald", "none")]

# (id, solver, options, target)
VP_CASES = [
    ("euler_maruyama", "euler_maruyama", {"steps": 500}, "eps"),
    ("reverse_diffusion", "reverse_diffusion", {"steps": 500}, "eps"),
    ("ancestral", "ancestral", {"steps": 500}, "eps"),
    # steps counts network evaluations: 500 grid steps, each a predictor and (unless
    # "none") one corrector move
    *[(f"pc-{p}-{c}", "pc", {"steps": 500 if c == "none" else 1000, "predictor": p,
                             "corrector": c, **CORRECTOR_OPTS[c]},
       "eps") for p, c in PC_COMBOS],
    ("ode-dopri5", "ode", {}, "eps"),
    ("ode_euler", "ode_euler", {"steps": 500}, "eps"),
    ("ode_heun", "ode_heun", {"steps": 200}, "eps"),   # 100 Heun steps
    ("ode_rk4", "ode_rk4", {"steps": 200}, "eps"),     # 50 RK4 steps
    ("sde_adaptive", "sde_adaptive", {}, "eps"),
    ("ddim-eta0", "ddim", {"steps": 100, "eta": 0.0}, "data"),
    ("ddim-eta1", "ddim", {"steps": 200, "eta": 1.0}, "data"),
    ("euler_maruyama-denoise", "euler_maruyama", {"steps": 500, "denoise": True}, "data"),
    ("ode_rk4-denoise", "ode_rk4", {"steps": 200, "denoise": True}, "data"),
]


def _check_law(x, target, truth, what):
    assert x.shape == (N_SAMPLES, 2) and bool(torch.isfinite(x).all()), what
    mean, cov, oracle_samples = truth[target]
    ok, report = moment_report(x, mean, cov, k=3.0)
    assert ok, f"{what}: moments off by more than 3 SE: {report}"
    stat, p = energy_test(x, oracle_samples)
    assert p > ALPHA_LEVEL, f"{what}: energy test rejects, E = {stat:.4g}, p = {p:.4g}; {report}"


@pytest.mark.parametrize("case", VP_CASES, ids=[c[0] for c in VP_CASES])
def test_vp_sampler_law(vp, truth, case):
    name, solver, options, target = case
    oracle = _mixture(vp)
    g = torch.Generator().manual_seed(2024)
    res = sample(oracle.score, vp, (N_SAMPLES, 2), solver=solver, generator=g, **options)
    _check_law(res.x, target, truth, name)


# Corrector-only sampling (predictor "none"; Song et al. 2021, Sec. 4.2 and Table 1, "C2000")
# tracks the moving marginal only as the number of Langevin steps grows; with one step per
# level it lags visibly (covariance ~17% low at 500 levels), so it needs several corrector
# steps per level and is slow.
CORRECTOR_ONLY = [("pc-none-ald", {"corrector": "ald", "snr": 0.3}),
                  ("pc-none-langevin", {"corrector": "langevin", "snr": 0.1})]


@pytest.mark.slow
@pytest.mark.parametrize("case", CORRECTOR_ONLY, ids=[c[0] for c in CORRECTOR_ONLY])
def test_vp_corrector_only_law(vp, truth, case):
    name, options = case
    oracle = _mixture(vp)
    g = torch.Generator().manual_seed(2024)
    res = sample(oracle.score, vp, (N_SAMPLES, 2), solver="pc", predictor="none",
                 steps=2000, corrector_steps=4, generator=g, **options)  # 500 x 4 moves
    _check_law(res.x, "eps", truth, name)


def test_ddpm_with_oracle_score_on_discrete_schedule(ddpm_sde, truth):
    """DDPM Algorithm 2 on DDPM's own schedule (all 1000 steps) with the exact score of the
    mixture diffused by that schedule ends at the data law."""
    oracle = _mixture(ddpm_sde)
    g = torch.Generator().manual_seed(2025)
    res = sample(oracle.score, ddpm_sde, (N_SAMPLES, 2), solver="ddpm", generator=g)
    assert res.nfe == 1000
    _check_law(res.x, "data", truth, "ddpm")


# -- the tests above can fail: power against a wrong law -----------------------------------------
def test_checks_reject_a_wrong_law(truth):
    """A mixture with the weights of two components swapped and covariances 20% wider is
    flagged by both the moment check and the energy test."""
    wrong = sd.GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), torch.tensor(MIX_MEANS),
                               1.2 * torch.tensor(MIX_COVS))
    x = wrong.sample(N_SAMPLES, generator=torch.Generator().manual_seed(5))
    mean, cov, oracle_samples = truth["data"]
    ok, report = moment_report(x, mean, cov, k=3.0)
    assert not ok, report
    _, p = energy_test(x, oracle_samples)
    assert p <= ALPHA_LEVEL, p


def test_checks_reject_a_coarse_sampler(vp, truth):
    """Euler on the PF-ODE with 4 steps is visibly wrong; the checks see it."""
    oracle = _mixture(vp)
    res = sample(oracle.score, vp, (N_SAMPLES, 2), solver="ode_euler", steps=4,
                 generator=torch.Generator().manual_seed(2024))
    mean, cov, oracle_samples = truth["eps"]
    ok, report = moment_report(res.x, mean, cov, k=3.0)
    _, p = energy_test(res.x, oracle_samples)
    assert not ok or p <= ALPHA_LEVEL, f"p = {p}; {report}"


def test_oracle_samples_pass_against_independent_oracle_samples(truth):
    """Calibration: two independent samples of the same law pass both checks."""
    mean, cov, oracle_samples = truth["data"]
    other = _mixture().sample(N_SAMPLES, generator=torch.Generator().manual_seed(12345))
    ok, report = moment_report(other, mean, cov, k=3.0)
    assert ok, report
    _, p = energy_test(other, oracle_samples)
    assert p > ALPHA_LEVEL, p

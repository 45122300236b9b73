"""Convergence of the samplers, measured against closed-form truth for Gaussian data.

For data N(mu, Sigma) on the VP-SDE (beta from 0.1 to 20) the score is exact, the
probability-flow ODE is linear with a closed-form solution, and the law of the
Euler--Maruyama chain follows from a moment recursion (tests/scoresde/_sampling_helpers.py).

* Euler--Maruyama and the ancestral sampler, driven by the same Brownian increments,
  approach each other at rate O(1/steps).
* The fixed-step PF-ODE solvers have global orders 1 (Euler), 2 (Heun), 4 (RK4).
* Euler--Maruyama has weak order 1 in mean and covariance.
* The adaptive PF-ODE solve: tighter tolerances give smaller errors at more NFE, the
  reported NFE is the number of score calls, backends agree, NaN is an error.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import scoresde as sd
import solvers
from scoresde.samplers import sample

try:
    from ._sampling_helpers import (one_thread,  # noqa: F401 (autouse fixture)
                                    GAUSS_COV, GAUSS_MEAN, CountingScore, em_chain_law,
                                    fit_slope, gaussian_marginal_cov, gaussian_pf_ode_exact,
                                    moment_report, vp_alpha, vp_beta, vp_log_alpha)
except ImportError:  # tests/scoresde is not a package
    from _sampling_helpers import (one_thread,  # noqa: F401
                                   GAUSS_COV, GAUSS_MEAN, CountingScore, em_chain_law,
                                   fit_slope, gaussian_marginal_cov, gaussian_pf_ode_exact,
                                   moment_report, vp_alpha, vp_beta, vp_log_alpha)

EPS = 1e-3


@pytest.fixture(scope="module")
def vp():
    return sd.VPSDE(beta_min=0.1, beta_max=20.0)


@pytest.fixture(scope="module")
def gauss(vp):
    return sd.GaussianData(torch.tensor(GAUSS_MEAN), torch.tensor(GAUSS_COV), sde=vp)


def _x_T(n: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- 2. the continuous limit: Euler--Maruyama and ancestral sampling ---------------------------
def test_euler_maruyama_and_ancestral_approach_each_other(vp, gauss):
    """Same seed, same draws in the same order: the two discretizations of the reverse SDE
    differ per step by O(dt^2) in the drift and O(dt^1.5) in the noise scale, so their
    paths differ by O(1/steps) at the end."""
    steps = [50, 100, 200, 400, 800]
    diffs = []
    for n in steps:
        out = {}
        for solver in ("euler_maruyama", "ancestral"):
            g = torch.Generator().manual_seed(11)
            out[solver] = sample(gauss.score, vp, (200, 2), solver=solver, steps=n,
                                 generator=g).x
        diffs.append(float((out["euler_maruyama"] - out["ancestral"]).abs().mean()))
    slope = fit_slope(steps, diffs)
    assert abs(slope - 1.0) <= 0.3, f"slope {slope:.3f}; mean |x_EM - x_anc| = {diffs}"
    assert diffs[-1] < 0.01, diffs


def _em_chain(score_np, ts, x, zs):
    """Euler--Maruyama on the reverse VP-SDE (Song et al. 2021, eq. 6), written out:
    x_s = x_t + (beta/2 x + beta score(x, t)) (t - s) + sqrt(beta (t - s)) z."""
    n = len(ts) - 1
    for k in range(n):
        t, s = ts[k], ts[k + 1]
        d, b = t - s, vp_beta(t)
        x = x + d * (0.5 * b * x + b * score_np(x, t))
        if k < n - 1:
            x = x + math.sqrt(b * d) * zs[k]
    return x


def _ancestral_chain(score_np, ts, x, zs):
    """Ancestral sampling (Song et al. 2021, App. F; DDPM's step with beta = 1 - abar_t/abar_s):
    x_s = (x_t + beta score(x, t))/sqrt(1 - beta) + sqrt(beta) z."""
    n = len(ts) - 1
    for k in range(n):
        t, s = ts[k], ts[k + 1]
        beta = -math.expm1(2.0 * (vp_log_alpha(t) - vp_log_alpha(s)))
        x = (x + beta * score_np(x, t)) / math.sqrt(1.0 - beta)
        if k < n - 1:
            x = x + math.sqrt(beta) * zs[k]
    return x


def _gauss_score_np(x, t):
    mu = np.asarray(GAUSS_MEAN)
    return -np.linalg.solve(gaussian_marginal_cov(GAUSS_COV, t), (x - vp_alpha(t) * mu).T).T


@pytest.mark.parametrize("solver,chain", [("euler_maruyama", _em_chain),
                                          ("ancestral", _ancestral_chain)])
def test_stochastic_chain_matches_formula_pathwise(vp, gauss, close, solver, chain):
    """The sampler is the chain written from the paper: prior first, then one normal per
    update (none on the last), uniform grid from T to eps."""
    n, shape = 40, (16, 2)
    g = torch.Generator().manual_seed(3)
    res = sample(gauss.score, vp, shape, solver=solver, steps=n, generator=g)
    ref_g = torch.Generator().manual_seed(3)
    x_T = torch.randn(shape, generator=ref_g, dtype=torch.float64)
    zs = [torch.randn(shape, generator=ref_g, dtype=torch.float64).numpy() for _ in range(n - 1)]
    ts = [1.0 + (EPS - 1.0) * k / n for k in range(n + 1)]
    ref = chain(_gauss_score_np, ts, x_T.numpy(), zs)
    close(res.x, torch.as_tensor(ref), rtol=1e-10, atol=1e-10, what=f"{solver} vs the formula")
    assert torch.equal(g.get_state(), ref_g.get_state()), "the sampler drew a different number of normals"


# -- 3. convergence order of the fixed-step PF-ODE solvers -------------------------------------
@pytest.mark.parametrize("solver,order,steps,final_error", [
    ("ode_euler", 1, [20, 40, 80, 160, 320], 7e-3),
    ("ode_heun", 2, [20, 40, 80, 160], 5e-4),
    ("ode_rk4", 4, [20, 40, 80, 160], 1e-7),
])
def test_pf_ode_fixed_step_order(vp, gauss, solver, order, steps, final_error):
    """Global error at eps against the exact solution; slopes fitted over steps in the
    asymptotic regime (the finest errors are about 3.4e-3, 2.4e-4 and 2e-8)."""
    x_T = _x_T(64)
    exact = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, EPS)
    errs = []
    per_step = {"ode_euler": 1, "ode_heun": 2, "ode_rk4": 4}[solver]  # steps= counts NFE
    for n in steps:
        res = sample(gauss.score, vp, x_T.shape, solver=solver, steps=n * per_step, eps=EPS,
                     x_T=x_T)
        errs.append(float((res.x - exact).abs().max()))
    slope = fit_slope(steps, errs)
    assert abs(slope - order) <= 0.3, f"{solver}: slope {slope:.3f} (order {order}); errors {errs}"
    assert errs[-1] < final_error, f"{solver}: error {errs[-1]:.3e} at {steps[-1]} steps"


def test_pf_ode_exact_solution_is_a_solution(vp, gauss):
    """The closed form the order tests compare against satisfies the PF-ODE
    dx/dt = -beta/2 x - beta/2 score(x, t) (central differences, independent of the solvers)."""
    x_T = _x_T(8)
    for t in (0.05, 0.3, 0.9):
        h = 1e-5
        xp = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, t + h)
        xm = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, t - h)
        x = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, t)
        dxdt = (xp - xm) / (2 * h)
        b = vp_beta(t)
        field = -0.5 * b * x - 0.5 * b * torch.as_tensor(_gauss_score_np(x.numpy(), t))
        assert float((dxdt - field).abs().max()) < 1e-6


# -- 3. weak order of Euler--Maruyama ----------------------------------------------------------
def _exact_start():
    """x_T ~ N(alpha_T mu, C(T)): the true marginal at T, so that the exact reverse SDE ends
    at N(alpha(eps) mu, C(eps)) and the weak error is the discretization's alone."""
    return vp_alpha(1.0) * np.asarray(GAUSS_MEAN), gaussian_marginal_cov(GAUSS_COV, 1.0)


def test_euler_maruyama_weak_order_one():
    m0, P0 = _exact_start()
    m_true, P_true = vp_alpha(EPS) * np.asarray(GAUSS_MEAN), gaussian_marginal_cov(GAUSS_COV, EPS)
    steps = [100, 200, 400, 800]
    em, ec = [], []
    for n in steps:
        ts = [1.0 + (EPS - 1.0) * k / n for k in range(n + 1)]
        m, P = em_chain_law(GAUSS_MEAN, GAUSS_COV, ts, m0, P0)
        em.append(float(np.abs(m - m_true).max()))
        ec.append(float(np.abs(P - P_true).max()))
    sm, sc = fit_slope(steps, em), fit_slope(steps, ec)
    assert abs(sm - 1.0) <= 0.3, f"weak order in the mean {sm:.3f}; errors {em}"
    assert abs(sc - 1.0) <= 0.3, f"weak order in the covariance {sc:.3f}; errors {ec}"


def test_euler_maruyama_law_is_the_chain_law(vp, gauss):
    """Monte Carlo: the implementation's samples (started from the exact marginal at T) have
    the mean and covariance of the Euler--Maruyama chain's exact law, which at 20 steps is
    far (many standard errors) from the truth, and at 400 steps agrees with the truth."""
    m0, P0 = _exact_start()
    n = 20000
    g = torch.Generator().manual_seed(17)
    L = torch.as_tensor(np.linalg.cholesky(P0))
    x_T = torch.as_tensor(m0) + torch.randn(n, 2, generator=g, dtype=torch.float64) @ L.T
    for steps in (20, 400):
        res = sample(gauss.score, vp, (n, 2), solver="euler_maruyama", steps=steps,
                     generator=g, x_T=x_T)
        ts = [1.0 + (EPS - 1.0) * k / steps for k in range(steps + 1)]
        m, P = em_chain_law(GAUSS_MEAN, GAUSS_COV, ts, m0, P0)
        ok, report = moment_report(res.x, m, P, k=3.5)
        assert ok, f"{steps} steps, against the chain law: {report}"
        truth_ok, truth_report = moment_report(res.x, vp_alpha(EPS) * np.asarray(GAUSS_MEAN),
                                               gaussian_marginal_cov(GAUSS_COV, EPS), k=3.5)
        if steps == 20:
            assert not truth_ok, f"20 steps should be visibly biased: {truth_report}"
        else:
            assert truth_ok, f"400 steps, against the truth: {truth_report}"


# -- 5. the adaptive PF-ODE solve ----------------------------------------------------------------
def test_adaptive_tolerance_error_and_nfe(vp, gauss):
    x_T = _x_T(32)
    exact = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, EPS)
    errs, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        counter = CountingScore(gauss.score)
        res = sample(counter, vp, x_T.shape, solver="ode", rtol=tol, atol=tol, x_T=x_T)
        assert res.nfe == counter.calls, f"tol {tol}: reported nfe {res.nfe}, counted {counter.calls}"
        assert res.stats.get("nfe", res.nfe) == counter.calls
        errs.append(float((res.x - exact).abs().max()))
        nfes.append(res.nfe)
        # every score call happened inside [eps, T]
        ts = torch.cat([t.reshape(-1) for t in counter.times])
        assert float(ts.min()) >= EPS - 1e-12 and float(ts.max()) <= 1.0 + 1e-12
    assert errs[0] > errs[1] > errs[2], f"errors {errs} do not fall with the tolerance"
    assert nfes[0] < nfes[1] < nfes[2], f"nfe {nfes} do not grow as the tolerance tightens"
    assert errs[2] < 1e-5, errs
    assert errs[0] < 1e-1, errs


@pytest.mark.parametrize("method", ["dopri5", "RK45", "bosh3", "DOP853"])
def test_adaptive_backends_agree_with_exact(vp, gauss, method):
    x_T = _x_T(16)
    exact = gaussian_pf_ode_exact(GAUSS_MEAN, GAUSS_COV, x_T, 1.0, EPS)
    counter = CountingScore(gauss.score)
    res = sample(counter, vp, x_T.shape, solver="ode", method=method, rtol=1e-7, atol=1e-7,
                 x_T=x_T)
    assert res.nfe == counter.calls
    err = float((res.x - exact).abs().max())
    assert err < 1e-4, f"{method}: max error {err:.3e} at rtol = atol = 1e-7"


def test_scipy_and_torchdiffeq_agree(vp, gauss):
    x_T = _x_T(16)
    a = sample(gauss.score, vp, x_T.shape, solver="ode", method="dopri5", rtol=1e-6,
               atol=1e-6, x_T=x_T).x
    b = sample(gauss.score, vp, x_T.shape, solver="ode", method="RK45", rtol=1e-6,
               atol=1e-6, x_T=x_T).x
    diff = float((a - b).abs().max())
    assert diff < 1e-4, f"dopri5 and RK45 differ by {diff:.3e} at rtol = atol = 1e-6"


def test_nfe_counts_calls_for_every_solver(vp, gauss):
    """NFE = counted score calls, whatever the solver."""
    for solver, opts in [("euler_maruyama", {"steps": 7}), ("pc", {"steps": 14}),
                         ("ode_heun", {"steps": 14}), ("ode_rk4", {"steps": 28, "denoise": True}),
                         ("ode", {"rtol": 1e-4, "atol": 1e-4}), ("ddim", {"steps": 7}),
                         ("sde_adaptive", {"rtol": 1e-2, "atol": 1e-2})]:
        counter = CountingScore(gauss.score)
        res = sample(counter, vp, (8, 2), solver=solver,
                     generator=torch.Generator().manual_seed(0), **opts)
        assert res.nfe == counter.calls, f"{solver}: nfe {res.nfe}, counted {counter.calls}"


def _nan_below(score, t_nan: float):
    def f(x, t):
        s = score(x, t)
        return torch.where((t < t_nan)[:, None], torch.full_like(s, float("nan")), s)
    return f


def _numbers(msg: str):
    return [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", msg)]


def test_nan_score_raises_in_adaptive_solve(vp, gauss):
    with pytest.raises(RuntimeError) as info:
        sample(_nan_below(gauss.score, 0.5), vp, (8, 2), solver="ode",
               generator=torch.Generator().manual_seed(0))
    err, msg = info.value, str(info.value)
    assert isinstance(err, solvers.NonFiniteStateError), type(err)
    assert "step" in msg and re.search(r"\bt\s*=", msg), msg
    t_reported = getattr(err, "t", None)
    assert t_reported is not None and 0.0 < t_reported < 0.5 + 1e-9, msg


@pytest.mark.parametrize("solver", ["euler_maruyama", "ode_euler", "pc"])
def test_nan_score_raises_in_fixed_step_solve_naming_step_and_time(vp, gauss, solver):
    """Uniform grid t_k = 1 + (eps - 1) k/10: the score is first NaN at t_6 = 0.4006,
    evaluated by step 7 (t_6 -> t_7). The error names step 7 and its time."""
    steps = 10
    ts = [1.0 + (EPS - 1.0) * k / steps for k in range(steps + 1)]
    with pytest.raises(RuntimeError) as info:
        sample(_nan_below(gauss.score, 0.5), vp, (8, 2), solver=solver,
               steps=steps * (2 if solver == "pc" else 1),  # network evaluations
               generator=torch.Generator().manual_seed(0))
    msg = str(info.value)
    assert isinstance(info.value, solvers.NonFiniteStateError), type(info.value)
    assert "step 7" in msg, msg
    nums = _numbers(msg.split("step 7", 1)[1])
    assert any(abs(v - ts[6]) < 1e-4 or abs(v - ts[7]) < 1e-4 for v in nums), \
        f"the message should name t = {ts[6]:.4f} or {ts[7]:.4f}: {msg}"


def test_adaptive_max_steps_is_an_error(vp, gauss):
    with pytest.raises(RuntimeError) as info:
        sample(gauss.score, vp, (8, 2), solver="ode", rtol=1e-9, atol=1e-9, max_steps=3,
               generator=torch.Generator().manual_seed(0))
    assert "max_steps" in str(info.value), str(info.value)

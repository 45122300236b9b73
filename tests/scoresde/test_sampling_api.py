"""The sample() entry point: reproducibility, the randomness contract, input errors, NFE,
trajectories, callbacks, time grids and the denoising step.

Scores used here are closed form: for data N(0, I) on a VP-type SDE every marginal is
N(0, I), so score(x, t) = -x whatever the shape of x; Gaussian data (oracle) where a
non-trivial score is needed.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import scoresde as sd
import solvers
from scoresde.samplers import SOLVERS, list_solvers, sample

try:
    from ._sampling_helpers import (one_thread,  # noqa: F401 (autouse fixture)
                                    GAUSS_COV, GAUSS_MEAN, CountingScore, vp_alpha,
                                    vp_log_alpha, vp_var)
except ImportError:  # tests/scoresde is not a package
    from _sampling_helpers import (one_thread,  # noqa: F401
                                   GAUSS_COV, GAUSS_MEAN, CountingScore, vp_alpha,
                                   vp_log_alpha, vp_var)

EPS = 1e-3
SHAPE = (6, 2)
BRIEF_SOLVERS = ("euler_maruyama", "reverse_diffusion", "ancestral", "pc", "ode", "ode_euler",
                 "ode_heun", "ode_rk4", "sde_adaptive", "ddpm", "ddim")


@pytest.fixture(scope="module")
def vp():
    return sd.VPSDE(beta_min=0.1, beta_max=20.0)


@pytest.fixture(scope="module")
def small_ddpm():
    return sd.DiscreteVPSDE.linear(50)


@pytest.fixture(scope="module")
def gauss_score(vp):
    return sd.GaussianData(torch.tensor(GAUSS_MEAN), torch.tensor(GAUSS_COV), sde=vp).score


def unit_score(x, t):
    """Score of N(0, I) data on any VP-type SDE: every marginal is N(0, I)."""
    return -x


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- the registry ------------------------------------------------------------------------------
def test_registry_has_the_solvers_of_the_brief():
    missing = [s for s in BRIEF_SOLVERS if s not in SOLVERS]
    assert not missing, f"missing solvers: {missing}"
    listing = list_solvers()
    for name in BRIEF_SOLVERS:
        assert isinstance(listing[name], str) and listing[name].strip(), name


# -- reproducibility and the randomness contract -----------------------------------------------
STOCHASTIC = [
    ("euler_maruyama", "vp", {"steps": 12}),
    ("reverse_diffusion", "vp", {"steps": 12}),
    ("ancestral", "vp", {"steps": 12}),
    ("pc", "vp", {"steps": 12}),
    ("pc-ald", "vp", {"steps": 12, "predictor": "ancestral", "corrector": "ald",
                      "corrector_steps": 2}),
    ("sde_adaptive", "vp", {"rtol": 5e-2, "atol": 5e-2}),
    ("ddim-eta1", "vp", {"steps": 12, "eta": 1.0}),
    ("ddim-eta0.5", "ddpm", {"steps": 12, "eta": 0.5}),
    ("ddpm", "ddpm", {}),
]


def _solver(case_id: str) -> str:
    return case_id.split("-")[0]


@pytest.mark.parametrize("case", STOCHASTIC, ids=[c[0] for c in STOCHASTIC])
def test_same_seed_same_samples_bit_for_bit(vp, small_ddpm, gauss_score, case):
    name, which, opts = case
    sde = vp if which == "vp" else small_ddpm
    score = gauss_score if which == "vp" else unit_score
    a = sample(score, sde, SHAPE, solver=_solver(name), generator=_gen(7), **opts).x
    b = sample(score, sde, SHAPE, solver=_solver(name), generator=_gen(7), **opts).x
    c = sample(score, sde, SHAPE, solver=_solver(name), generator=_gen(8), **opts).x
    assert torch.equal(a, b), f"{name}: same seed, different samples"
    assert not torch.equal(a, c), f"{name}: different seeds, same samples"
    # the path noise matters, not only the prior: same x_T, different generators
    x_T = torch.randn(SHAPE, generator=_gen(1), dtype=torch.float64)
    d = sample(score, sde, SHAPE, solver=_solver(name), generator=_gen(7), x_T=x_T, **opts).x
    e = sample(score, sde, SHAPE, solver=_solver(name), generator=_gen(8), x_T=x_T, **opts).x
    assert not torch.equal(d, e), f"{name}: the generator does not drive the path noise"


# (case, options, expected number of standard normal tensors drawn after the prior)
DRAWS = [
    ("euler_maruyama", {"steps": 9}, 8),
    ("reverse_diffusion", {"steps": 9}, 8),
    ("ancestral", {"steps": 9}, 8),
    ("pc", {"steps": 18}, 9 + 8),                     # one corrector draw per level
    ("pc", {"steps": 36, "corrector_steps": 3}, 27 + 8),
    ("pc", {"steps": 9, "corrector": "none"}, 8),
    ("pc", {"steps": 9, "predictor": "none", "corrector": "ald"}, 9),
    ("ddim", {"steps": 9, "eta": 1.0}, 8),
    ("ddim", {"steps": 9, "eta": 0.0}, 0),
    ("ode_euler", {"steps": 9}, 0),
    ("ode_rk4", {"steps": 36}, 0),
    ("ode", {}, 0),
]


@pytest.mark.parametrize("solver,opts,draws", DRAWS,
                         ids=[f"{s}-{'-'.join(f'{k}{v}' for k, v in o.items())}"
                              for s, o, _ in DRAWS])
def test_draws_prior_first_then_one_normal_per_stochastic_update(vp, gauss_score, solver,
                                                                 opts, draws):
    """After sample(), the generator is exactly where torch.randn(shape) once for the prior
    and once per stochastic update (none on the final update) leaves it."""
    g = _gen(3)
    sample(gauss_score, vp, SHAPE, solver=solver, generator=g, **opts)
    ref = _gen(3)
    for _ in range(1 + draws):
        torch.randn(SHAPE, generator=ref, dtype=torch.float64)
    assert torch.equal(g.get_state(), ref.get_state()), \
        f"{solver} {opts}: generator state differs from 1 + {draws} draws"


def test_ddpm_draws_prior_then_n_minus_one_normals(small_ddpm):
    g = _gen(3)
    sample(unit_score, small_ddpm, SHAPE, solver="ddpm", generator=g)
    ref = _gen(3)
    for _ in range(1 + small_ddpm.N - 1):
        torch.randn(SHAPE, generator=ref, dtype=torch.float64)
    assert torch.equal(g.get_state(), ref.get_state())


@pytest.mark.parametrize("name,prior_std", [("vp", 1.0), ("ve", 50.0)])
def test_prior_is_the_first_draw(gauss_score, name, prior_std):
    """x_T = prior_std * torch.randn(shape, generator=g): a deterministic solver started from
    x_T=None equals the same solver started from that tensor."""
    sde = sd.VPSDE() if name == "vp" else sd.VESDE(sigma_min=0.01, sigma_max=50.0)
    score = gauss_score if name == "vp" else \
        sd.GaussianData(torch.tensor(GAUSS_MEAN), torch.tensor(GAUSS_COV), sde=sde).score
    a = sample(score, sde, SHAPE, solver="ode_euler", steps=5, generator=_gen(4)).x
    x_T = prior_std * torch.randn(SHAPE, generator=_gen(4), dtype=torch.float64)
    b = sample(score, sde, SHAPE, solver="ode_euler", steps=5, x_T=x_T).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("solver", ["euler_maruyama", "pc", "ode_heun", "ddim"])
def test_float32(vp, solver):
    steps = {"pc": 10, "ode_heun": 10}.get(solver, 5)  # network evaluations
    res = sample(unit_score, vp, SHAPE, solver=solver, steps=steps, generator=_gen(0),
                 dtype=torch.float32)
    assert res.x.dtype == torch.float32 and bool(torch.isfinite(res.x).all())


# -- input errors ---------------------------------------------------------------------------------
def test_unknown_solver_lists_the_valid_ones(vp):
    with pytest.raises(ValueError) as info:
        sample(unit_score, vp, SHAPE, solver="euler_maruyamaa")
    msg = str(info.value)
    assert "euler_maruyamaa" in msg
    missing = [name for name in SOLVERS if name not in msg]
    assert not missing, f"message does not list {missing}: {msg}"


@pytest.mark.parametrize("solver,option,value", [
    ("ode", "snr", 0.1), ("pc", "eta", 1.0), ("euler_maruyama", "method", "dopri5"),
    ("ode_rk4", "rtol", 1e-3), ("ddpm", "eps", 1e-3), ("ancestral", "corrector", "langevin"),
    ("ode", "steps", 10),
])
def test_option_that_does_not_apply_is_an_error(vp, small_ddpm, solver, option, value):
    sde = small_ddpm if solver == "ddpm" else vp
    with pytest.raises(ValueError) as info:
        sample(unit_score, sde, SHAPE, solver=solver, generator=_gen(0), **{option: value})
    assert option in str(info.value) and solver in str(info.value), str(info.value)


@pytest.mark.parametrize("option,value", [("predictor", "rk4"), ("corrector", "hmc"),
                                          ("grid", "cosine"), ("steps", 0), ("snr", -1.0)])
def test_bad_option_values_are_errors(vp, option, value):
    with pytest.raises(ValueError) as info:
        sample(unit_score, vp, SHAPE, solver="pc", generator=_gen(0), **{option: value})
    assert option in str(info.value), str(info.value)


def test_ancestral_on_subvp_is_a_clear_error():
    with pytest.raises((TypeError, ValueError)) as info:
        sample(unit_score, sd.SubVPSDE(), SHAPE, solver="ancestral", steps=5, generator=_gen(0))
    msg = str(info.value)
    assert "SubVPSDE" in msg and "ancestral" in msg, msg


@pytest.mark.parametrize("sde_name", ["vp", "subvp", "ve"])
def test_ddpm_on_a_continuous_sde_is_an_error(sde_name):
    sde = {"vp": sd.VPSDE(), "subvp": sd.SubVPSDE(), "ve": sd.VESDE()}[sde_name]
    with pytest.raises((TypeError, ValueError)) as info:
        sample(unit_score, sde, SHAPE, solver="ddpm", generator=_gen(0))
    assert "DiscreteVPSDE" in str(info.value), str(info.value)


def test_ddpm_more_steps_than_n_is_an_error(small_ddpm):
    with pytest.raises(ValueError) as info:
        sample(unit_score, small_ddpm, SHAPE, solver="ddpm", steps=51, generator=_gen(0))
    assert "steps" in str(info.value)


def test_x_T_of_the_wrong_shape_is_an_error(vp):
    with pytest.raises(ValueError) as info:
        sample(unit_score, vp, SHAPE, solver="ode_euler", x_T=torch.zeros(3, 2))
    assert "x_T" in str(info.value)


def test_score_of_the_wrong_shape_is_an_error(vp):
    with pytest.raises(ValueError):
        sample(lambda x, t: x[:, :1], vp, SHAPE, solver="euler_maruyama", steps=3,
               generator=_gen(0))


# -- NFE ----------------------------------------------------------------------------------------------
NFE = [
    ("euler_maruyama", {"steps": 10}, 10),
    ("reverse_diffusion", {"steps": 10}, 10),
    ("ancestral", {"steps": 10}, 10),
    ("pc", {"steps": 20}, 20),
    ("pc", {"steps": 30, "corrector_steps": 2}, 30),
    ("pc", {"steps": 10, "corrector": "none"}, 10),
    ("pc", {"steps": 10, "predictor": "none"}, 10),
    ("ode_euler", {"steps": 10}, 10),
    ("ode_heun", {"steps": 20}, 20),
    ("ode_rk4", {"steps": 40}, 40),
    ("ddim", {"steps": 10}, 10),
    ("euler_maruyama", {"steps": 10, "denoise": True}, 11),
    ("pc", {"steps": 20, "denoise": True}, 21),
    ("ode_rk4", {"steps": 40, "denoise": True}, 41),
    ("ode_euler", {}, 100),            # the default: 100 steps for the fixed-step ODE solvers
    ("ode_rk4", {}, 400),
    ("euler_maruyama", {}, 1000),      # the default: sde.N steps
]


@pytest.mark.parametrize("solver,opts,expected", NFE,
                         ids=[f"{s}-{'-'.join(f'{k}{v}' for k, v in o.items())}"
                              for s, o, _ in NFE])
def test_fixed_step_nfe(vp, solver, opts, expected):
    counter = CountingScore(unit_score)
    res = sample(counter, vp, SHAPE, solver=solver, generator=_gen(0), **opts)
    assert counter.calls == expected, f"{solver} {opts}: {counter.calls} score calls"
    assert res.nfe == expected, f"{solver} {opts}: reported nfe {res.nfe}"


@pytest.mark.parametrize("steps,expected", [(None, 50), (7, 7)])
def test_ddpm_nfe(small_ddpm, steps, expected):
    counter = CountingScore(unit_score)
    res = sample(counter, small_ddpm, SHAPE, solver="ddpm", steps=steps, generator=_gen(0))
    assert counter.calls == expected and res.nfe == expected


def test_denoise_is_tweedie(vp, gauss_score, close):
    """denoise=True returns (x + std(eps)^2 score(x, eps))/alpha(eps) of the final state."""
    plain = sample(gauss_score, vp, SHAPE, solver="euler_maruyama", steps=20, generator=_gen(5))
    den = sample(gauss_score, vp, SHAPE, solver="euler_maruyama", steps=20, generator=_gen(5),
                 denoise=True)
    t = torch.full((SHAPE[0],), EPS)
    expected = (plain.x + vp_var(EPS) * gauss_score(plain.x, t)) / vp_alpha(EPS)
    close(den.x, expected, rtol=1e-12, atol=1e-12, what="Tweedie denoising")


# -- trajectories and callbacks -------------------------------------------------------------------------
IMAGE_SHAPE = (3, 2, 4, 4)
TRAJ = [("euler_maruyama", {}), ("ancestral", {}), ("pc", {}), ("ode_euler", {}),
        ("ode_heun", {}), ("ode_rk4", {}), ("ddim", {"eta": 1.0})]


@pytest.mark.parametrize("solver,opts", TRAJ, ids=[s for s, _ in TRAJ])
def test_trajectory_shapes_and_callback(vp, solver, opts):
    steps = 6  # grid steps; ``steps=`` counts network evaluations
    per_step = {"pc": 2, "ode_heun": 2, "ode_rk4": 4}.get(solver, 1)
    calls = []
    x_T = torch.randn(IMAGE_SHAPE, generator=_gen(2), dtype=torch.float64)
    res = sample(unit_score, vp, IMAGE_SHAPE, solver=solver, steps=steps * per_step,
                 generator=_gen(2),
                 x_T=x_T, return_trajectory=True,
                 callback=lambda i, t, x: calls.append((i, float(t), x.clone())), **opts)
    assert res.x.shape == IMAGE_SHAPE
    assert res.trajectory is not None and res.trajectory.shape == (steps + 1, *IMAGE_SHAPE)
    assert res.ts is not None and tuple(res.ts.shape) == (steps + 1,)
    assert torch.equal(res.trajectory[0], x_T)
    assert torch.equal(res.trajectory[-1], res.x)
    assert float(res.ts[0]) == pytest.approx(1.0, abs=1e-12)
    end = 0.0 if solver == "ddim" else EPS
    assert float(res.ts[-1]) == pytest.approx(end, abs=1e-12)
    assert bool((res.ts[1:] < res.ts[:-1]).all())
    # the callback: once per step, in order, with the new time and state
    assert [c[0] for c in calls] == list(range(1, steps + 1)), [c[0] for c in calls]
    for i, t, x in calls:
        assert t == pytest.approx(float(res.ts[i]), abs=1e-12)
        assert torch.equal(x, res.trajectory[i])


def test_no_trajectory_unless_asked(vp):
    res = sample(unit_score, vp, SHAPE, solver="pc", steps=4, generator=_gen(0))
    assert res.trajectory is None


@pytest.mark.parametrize("solver", ["ode", "sde_adaptive"])
def test_adaptive_trajectory_is_returned_or_refused(vp, gauss_score, solver):
    """return_trajectory=True on an adaptive solver must not be ignored silently: either the
    result carries states with their times (first x_T, last the result) or it is a
    ValueError naming the option."""
    x_T = torch.randn(SHAPE, generator=_gen(2), dtype=torch.float64)
    try:
        res = sample(gauss_score, vp, SHAPE, solver=solver, generator=_gen(2), x_T=x_T,
                     return_trajectory=True, rtol=1e-3, atol=1e-3)
    except ValueError as err:
        assert "return_trajectory" in str(err) or "trajectory" in str(err), str(err)
        return
    assert res.trajectory is not None, f"{solver}: return_trajectory=True silently ignored"
    assert res.ts is not None and res.trajectory.shape == (res.ts.shape[0], *SHAPE)
    assert torch.equal(res.trajectory[0], x_T) and torch.equal(res.trajectory[-1], res.x)


def test_callback_on_adaptive_solver_is_refused(vp):
    with pytest.raises(ValueError):
        sample(unit_score, vp, SHAPE, solver="ode", callback=lambda i, t, x: None,
               generator=_gen(0))


# -- time grids (the times at which the score is asked) -------------------------------------------------
def _score_times(sde, grid, steps, eps=EPS):
    counter = CountingScore(unit_score)
    sample(counter, sde, SHAPE, solver="euler_maruyama", steps=steps, eps=eps, grid=grid,
           generator=_gen(0))
    times = torch.stack([t.reshape(-1)[0] for t in counter.times]).numpy()
    for t in counter.times:  # one time per call, the same for the whole batch
        assert t.shape == (SHAPE[0],) and bool((t == t[0]).all())
    return times


def _vp_log_snr(t):
    return np.array([2 * vp_log_alpha(v) - math.log(vp_var(v)) for v in np.atleast_1d(t)])


def _vp_sigma(t):
    """EDM's noise level std/alpha."""
    return np.array([math.sqrt(vp_var(v)) / vp_alpha(v) for v in np.atleast_1d(t)])


def test_uniform_grid(vp):
    n = 8
    k = np.arange(n)
    np.testing.assert_allclose(_score_times(vp, "uniform", n), 1.0 + (EPS - 1.0) * k / n,
                               rtol=0, atol=1e-12)


def test_quadratic_grid(vp):
    """t_k = eps + (T - eps)(1 - k/n)^2 (Song, Meng & Ermon 2021, App. D.1)."""
    n = 8
    k = np.arange(n)
    np.testing.assert_allclose(_score_times(vp, "quadratic", n),
                               EPS + (1.0 - EPS) * (1.0 - k / n) ** 2, rtol=0, atol=1e-12)


def test_logsnr_grid(vp):
    """log-SNR uniform in k between lambda(T) and lambda(eps) (Lu et al. 2022, Sec. 3.3)."""
    n = 8
    k = np.arange(n)
    times = _score_times(vp, "logsnr", n)
    lam_T, lam_eps = _vp_log_snr(1.0)[0], _vp_log_snr(EPS)[0]
    np.testing.assert_allclose(_vp_log_snr(times), lam_T + k / n * (lam_eps - lam_T),
                               rtol=0, atol=1e-7)
    assert times[0] == pytest.approx(1.0, abs=1e-12)


def test_karras_grid(vp):
    """sigma_k = (s_max^(1/7) + k/n (s_min^(1/7) - s_max^(1/7)))^7 with sigma = std/alpha
    (Karras et al. 2022, eq. 5)."""
    n = 8
    k = np.arange(n)
    rho = 7.0
    times = _score_times(vp, "karras", n)
    s_max, s_min = _vp_sigma(1.0)[0], _vp_sigma(EPS)[0]
    expected = (s_max ** (1 / rho) + k / n * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    np.testing.assert_allclose(_vp_sigma(times), expected, rtol=1e-7, atol=0)


def test_eps_is_the_end_time(vp):
    res = sample(unit_score, vp, SHAPE, solver="ode_euler", steps=4, eps=0.05,
                 generator=_gen(0), return_trajectory=True)
    assert float(res.ts[-1]) == pytest.approx(0.05, abs=1e-12)


def test_samples_follow_the_network_dtype_and_mismatch_is_named():
    # a float32 network samples in float32 by default (the test session's default is float64)
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.MLP(2, hidden=8, depth=1).float(), sde)
    for solver, opts in (("ddim", dict(steps=3)), ("ode", dict(rtol=1e-3, atol=1e-3))):
        assert sd.sample(model, sde, (4, 2), solver=solver, **opts).x.dtype == torch.float32
    with pytest.raises(ValueError, match=r"x_T is torch.float64 on cpu but the score "
                                         r"network's parameters are torch.float32 on cpu"):
        sd.sample(model, sde, (4, 2), solver="ddim", steps=3, dtype=torch.float64)


def test_steps_is_the_number_of_network_evaluations_for_every_fixed_step_solver(vp):
    """result.nfe == steps for each fixed-step sampler of the registry (without denoise),
    for the smallest valid steps and a larger one; a steps that does not fit the sampler's
    rule is an error naming the nearest valid values, before any evaluation."""
    ddpm = sd.DiscreteVPSDE.linear(N=40)
    for name, spec in SOLVERS.items():
        if spec.adaptive:
            continue
        sde = ddpm if spec.requires is sd.DiscreteVPSDE else vp
        score = unit_score if sde is ddpm else CountingScore(unit_score)
        for steps in _valid_steps(name, spec):
            res = sample(score, sde, SHAPE, solver=name, steps=steps, generator=_gen(0))
            assert res.nfe == steps, f"{name}: steps={steps} made {res.nfe} evaluations"
        if spec.steps_rule:
            bad = _valid_steps(name, spec)[0] + 1
            counter = CountingScore(unit_score)
            with pytest.raises(ValueError, match=rf"steps.*{bad}.*use \d+ or \d+"):
                sample(counter, sde, SHAPE, solver=name, steps=bad, generator=_gen(0))
            assert counter.calls == 0


def _valid_steps(name, spec):
    if name == "heun_karras":
        return [3, 9]
    if name.startswith("ode_"):
        n = solvers.FIXED_ODE_METHODS[name[4:]].stages
        return [n, 5 * n]
    return [2, 10] if name == "pc" else [1, 7]

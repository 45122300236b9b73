"""Forward SDEs checked against the mathematics (issue #2).

Truth comes from closed forms written in conftest (from the papers), from scipy's
solve_ivp of the moment ODEs, and from scipy.stats; never from scoresde itself.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import solve_ivp

from scoresde.sdes import DiscreteVPSDE, VPSDE

N_DISCRETE = 1000   # the N of DiscreteVPSDE.linear/.cosine built in conftest
SIGMA_MIN = 0.01    # the VESDE built in conftest

# Times in (0, T] where marginals are checked. For the discrete schedules they are index
# times t_i = (i + 1)/N of N = 1000, so closed forms exist there too.
T_CHECK = np.array([0.001, 0.01, 0.1, 0.25, 0.5, 0.73, 0.9, 0.999, 1.0])


def _coeffs_from_sde(sde, t: float):
    """f(t), g(t) read off sde.sde at x = ones (drift = f(t) x)."""
    x = torch.ones(1, 1)
    drift, diffusion = sde.sde(x, torch.tensor([t]))
    return drift.reshape(-1)[0].item() / x[0, 0].item(), diffusion.reshape(-1)[0].item()


def _moment_ode(sde, t0, t_eval, breakpoints=()):
    """scipy DOP853 solve of dm/dt = f m, dv/dt = 2 f v + g^2 from the marginal at t0.

    The solve restarts at every breakpoint (and every t in t_eval) so that kinks of the
    coefficients there (the knots of an interpolated schedule) cost no accuracy.
    Returns (m(t0), v(t0)) and arrays m, v at t_eval.
    """
    mean0, std0 = sde.marginal_prob(torch.ones(1, 1), torch.tensor([float(t0)]))
    y = np.array([mean0.reshape(-1)[0].item(), std0.reshape(-1)[0].item() ** 2])
    y_start = y.copy()

    def rhs(t, y):
        f, g = _coeffs_from_sde(sde, t)
        return [f * y[0], 2.0 * f * y[1] + g * g]

    grid = np.unique(np.concatenate([[t0], t_eval, breakpoints]))
    grid = grid[(grid >= t0) & (grid <= max(t_eval))]
    at = {}
    for a, b in zip(grid[:-1], grid[1:]):
        sol = solve_ivp(rhs, (a, b), y, method="DOP853", rtol=1e-12, atol=1e-12)
        assert sol.success, sol.message
        y = sol.y[:, -1]
        at[b] = y
    res = np.array([at[t] for t in t_eval])
    return y_start, res[:, 0], res[:, 1]


# --------------------------------------------------------------------------------------
# marginal_prob against the moment ODEs of sde() and against the closed forms
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
def test_marginal_prob_solves_moment_odes(name, build_sde, close, gen):
    """mean(t)/x0 and std(t)^2 solve dm/dt = f m, dv/dt = 2 f v + g^2 (Sarkka & Solin eq. 5.51)
    with f, g read off sde.sde; solved by scipy from t = 0."""
    sde_name = name
    sde = build_sde(sde_name)
    (m0, v0), m, v = _moment_ode(sde, 0.0, T_CHECK)
    # the initial values themselves: m(0) = 1; v(0) = 0 (VP types) or sigma_min^2 (VE)
    close(m0, 1.0, 0, 1e-14, "m(0)")
    close(v0, SIGMA_MIN ** 2 if sde_name == "ve" else 0.0, 1e-12, 1e-14, "v(0)")

    x0 = torch.randn(len(T_CHECK), 3, generator=gen) + 2.0
    mean, std = sde.marginal_prob(x0, torch.tensor(T_CHECK))
    assert mean.shape == x0.shape and std.shape == (len(T_CHECK),)
    close(mean, torch.tensor(m)[:, None] * x0, 1e-8, 1e-10, f"{sde_name} mean vs ODE")
    close(std, np.sqrt(v), 1e-8, 1e-10, f"{sde_name} std vs ODE")


# Windows [t0, t1] of the discrete schedules (N = 1000) with times inside them, on and
# between the knots t_i = (i + 1)/N; the solve restarts at every knot.
DISCRETE_WINDOWS = [
    (0.0, [0.0004, 0.001, 0.0017, 0.005, 0.0063, 0.01]),
    (0.25, [0.2537, 0.256, 0.26]),
    (0.5, [0.5001, 0.503, 0.5049]),
    (0.9, [0.9035, 0.906, 0.908]),
    (0.99, [0.9925, 0.995, 0.9981, 0.999, 0.9995, 1.0]),
]


@pytest.mark.parametrize("name", ["ddpm_linear", "ddpm_cosine"])
@pytest.mark.parametrize("window", range(5))
def test_discrete_marginal_prob_solves_moment_odes(name, window, build_sde, close, gen):
    """As above for DiscreteVPSDE.linear/.cosine(1000), on windows of the schedule (a solve
    through all 1000 knots restarted at each costs too many sde() calls); the window
    starting at 0 checks m(0) = 1, v(0) = 0 too, and the values at the window starts are
    checked against cumprod(1 - betas) in test_marginal_prob_closed_form."""
    sde = build_sde(name)
    t0, t_eval = DISCRETE_WINDOWS[window]
    t_eval = np.array(t_eval)
    knots = np.arange(1, N_DISCRETE + 1) / N_DISCRETE
    (m0, v0), m, v = _moment_ode(sde, t0, t_eval, knots)
    if t0 == 0.0:
        close(m0, 1.0, 0, 1e-14, "m(0)")
        close(v0, 0.0, 0, 1e-14, "v(0)")
    x0 = torch.randn(len(t_eval), 3, generator=gen) + 2.0
    mean, std = sde.marginal_prob(x0, torch.tensor(t_eval))
    close(mean, torch.tensor(m)[:, None] * x0, 1e-8, 1e-10, f"{name} mean vs ODE")
    close(std, np.sqrt(v), 1e-8, 1e-10, f"{name} std vs ODE")


def test_marginal_prob_closed_form(sde_name, build_sde, truth, close, gen):
    """x_t | x_0 ~ N(alpha(t) x_0, std(t)^2 I) with the papers' alpha, std."""
    sde = build_sde(sde_name)
    t = np.concatenate([[0.0], T_CHECK])
    x0 = torch.randn(len(t), 2, 3, generator=gen)
    mean, std = sde.marginal_prob(x0, torch.tensor(t))
    close(mean, torch.tensor(truth.alpha(sde_name, t))[:, None, None] * x0, 1e-12, 1e-14,
          f"{sde_name} mean")
    close(std, truth.std(sde_name, t), 1e-11, 1e-14, f"{sde_name} std")
    alpha, std2 = sde.marginal_coeffs(torch.tensor(t))
    close(alpha, truth.alpha(sde_name, t), 1e-12, 1e-14, f"{sde_name} marginal_coeffs alpha")
    close(std2, truth.std(sde_name, t), 1e-11, 1e-14, f"{sde_name} marginal_coeffs std")


def test_log_snr_closed_form(sde_name, build_sde, truth, close):
    sde = build_sde(sde_name)
    a, s = truth.alpha(sde_name, T_CHECK), truth.std(sde_name, T_CHECK)
    close(sde.log_snr(torch.tensor(T_CHECK)), np.log(a ** 2 / s ** 2), 1e-10, 1e-10,
          f"{sde_name} log_snr")


@pytest.mark.parametrize("name", ["vp", "subvp", "ve", "cosine"])
def test_drift_and_diffusion_closed_form(name, build_sde, truth, close, gen):
    """Song et al. 2021 eqs. 9, 11, 12 (and the clipped cosine beta)."""
    sde = build_sde(name)
    t = np.array([0.0, 0.003, 0.1, 0.5, 0.9, 0.997, 0.9985, 0.9995, 1.0])
    x = torch.randn(len(t), 4, generator=gen)
    drift, diffusion = sde.sde(x, torch.tensor(t))
    assert drift.shape == x.shape and diffusion.shape == (len(t),)
    close(drift, torch.tensor(truth.drift_coef(name, t))[:, None] * x, 1e-12, 1e-12,
          f"{name} drift")
    close(diffusion, truth.diffusion(name, t), 1e-12, 1e-12, f"{name} diffusion")


@pytest.mark.parametrize("name", ["vp", "cosine"])
def test_beta_and_alphas_cumprod_closed_form(name, build_sde, truth, close):
    sde = build_sde(name)
    t = np.array([0.0, 0.2, 0.6, 0.99, 0.999, 1.0])
    close(sde.beta(torch.tensor(t)), truth.beta(name, t), 1e-12, 1e-12, f"{name} beta")
    close(sde.alphas_cumprod(torch.tensor(t)), truth.alpha(name, t) ** 2, 1e-12, 1e-300,
          f"{name} alphas_cumprod")


def test_attributes(sde_name, build_sde):
    sde = build_sde(sde_name)
    assert sde.T == 1.0
    assert sde.N == N_DISCRETE


def test_float_time_equals_batch_tensor(sde_name, build_sde, gen):
    sde = build_sde(sde_name)
    x = torch.randn(5, 3, generator=gen)
    tb = torch.full((5,), 0.37)
    for t in (0.37, torch.tensor(0.37)):
        m1, s1 = sde.marginal_prob(x, t)
        m2, s2 = sde.marginal_prob(x, tb)
        assert torch.equal(m1, m2) and torch.equal(s1, s2) and s1.shape == (5,)
        d1, g1 = sde.sde(x, t)
        d2, g2 = sde.sde(x, tb)
        assert torch.equal(d1, d2) and torch.equal(g1, g2) and g1.shape == (5,)


def test_float32_follows_input(sde_name, build_sde, truth, gen):
    sde = build_sde(sde_name)
    t = torch.tensor(T_CHECK[2:], dtype=torch.float32)
    x = torch.randn(len(t), 3, generator=gen).float()
    mean, std = sde.marginal_prob(x, t)
    drift, g = sde.sde(x, t)
    assert mean.dtype == std.dtype == drift.dtype == g.dtype == torch.float32
    a, s = truth.alpha(sde_name, T_CHECK[2:]), truth.std(sde_name, T_CHECK[2:])
    np.testing.assert_allclose(std.numpy(), s, rtol=2e-5)
    np.testing.assert_allclose(mean.numpy(), a[:, None] * x.double().numpy(), rtol=2e-5,
                               atol=1e-6)


# --------------------------------------------------------------------------------------
# prior
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6, 1), (6, 5), (4, 2, 3, 3)])
def test_prior_logp_matches_scipy(sde_name, build_sde, truth, close, gen, shape):
    sde = build_sde(sde_name)
    s = truth.prior_std(sde_name)
    z = s * torch.randn(shape, generator=gen) * 1.3
    flat = z.reshape(shape[0], -1).numpy()
    d = flat.shape[1]
    expected = stats.multivariate_normal(mean=np.zeros(d), cov=s ** 2 * np.eye(d)).logpdf(flat)
    close(sde.prior_logp(z), np.atleast_1d(expected), 1e-12, 1e-10, f"{sde_name} prior_logp")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_sampling_shape_dtype_device(sde_name, build_sde, dtype):
    sde = build_sde(sde_name)
    z = sde.prior_sampling((3, 2, 4), dtype=dtype, device=torch.device("cpu"))
    assert z.shape == (3, 2, 4) and z.dtype == dtype and z.device.type == "cpu"
    z = sde.prior_sampling([7, 5], dtype=dtype, device="cpu")
    assert z.shape == (7, 5) and z.dtype == dtype
    assert sde.prior_sampling((2, 3)).dtype == torch.get_default_dtype()
    # a device other than the CPU is honoured too (the meta device needs no hardware)
    assert sde.prior_sampling((2, 3), dtype=dtype, device="meta").device.type == "meta"


def test_prior_sampling_reproducible(sde_name, build_sde, truth):
    """Same seed, same draw, bit for bit; it is prior_std * torch.randn (DESIGN: randomness)."""
    sde = build_sde(sde_name)
    a = sde.prior_sampling((4, 3, 2), generator=torch.Generator().manual_seed(7))
    b = sde.prior_sampling((4, 3, 2), generator=torch.Generator().manual_seed(7))
    c = sde.prior_sampling((4, 3, 2), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    ref = truth.prior_std(sde_name) * torch.randn((4, 3, 2),
                                                  generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, ref) or (a - ref).abs().max() <= 1e-15 * ref.abs().max()


def test_prior_sampling_moments(sde_name, build_sde, truth, gen):
    """Sample mean 0 and variance prior_std^2 within 4 standard errors (n = 200000)."""
    sde = build_sde(sde_name)
    s2 = truth.prior_std(sde_name) ** 2
    z = sde.prior_sampling((20000, 10), generator=gen).reshape(-1).numpy()
    n = z.size
    assert abs(z.mean()) < 4 * math.sqrt(s2 / n)
    assert abs(z.var() - s2) < 4 * s2 * math.sqrt(2.0 / n)
    # and it is Gaussian: Kolmogorov-Smirnov against N(0, s2)
    assert stats.kstest(z[:20000], "norm", args=(0, math.sqrt(s2))).pvalue > 1e-3


# --------------------------------------------------------------------------------------
# discretize: the forward step t - dt -> t is the exact transition
# --------------------------------------------------------------------------------------
def _exact_transition(truth, name, t, dt):
    """(a, G^2): x_t = a x_{t-dt} + G z with a = alpha(t)/alpha(t-dt) and
    G^2 = std(t)^2 - a^2 std(t-dt)^2 (= 1 - alphabar(t)/alphabar(t-dt) for VP,
    std(t)^2 - std(t-dt)^2 for VE)."""
    s = t - dt
    if name == "ve":
        return np.ones_like(t), truth.std(name, t) ** 2 - truth.std(name, s) ** 2
    dla = truth.log_alpha(name, t) - truth.log_alpha(name, s)
    return np.exp(dla), -np.expm1(2 * dla)


@pytest.mark.parametrize("name", ["vp", "cosine", "ddpm_linear", "ddpm_cosine", "ve"])
@pytest.mark.parametrize("dt", [None, 0.005])
def test_discretize_is_exact_transition(name, dt, build_sde, truth, close, gen):
    sde = build_sde(name)
    t = np.array([0.005, 0.01, 0.2, 0.5, 0.75, 0.9, 0.99, 1.0])
    x = torch.randn(len(t), 2, 3, generator=gen)
    f, G = sde.discretize(x, torch.tensor(t), dt=dt)
    a, G2 = _exact_transition(truth, name, t, 1.0 / N_DISCRETE if dt is None else dt)
    assert f.shape == x.shape and G.shape == (len(t),)
    # mean of x_{t-dt} + f + G z given x_{t-dt} = x is x + f = a x
    close(x + f, torch.tensor(a)[:, None, None] * x, 1e-12, 1e-13, f"{name} mean of step")
    close(G ** 2, G2, 1e-9, 1e-15, f"{name} variance of step")


def test_discretize_ddpm_is_algorithm_1(build_sde, truth, close, gen):
    """At index times with dt = 1/N: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z (DDPM)."""
    sde = build_sde("ddpm_linear")
    betas = truth.ddpm_linear_betas(N_DISCRETE)
    idx = np.array([0, 1, 2, 499, 998, 999])
    x = torch.randn(len(idx), 4, generator=gen)
    f, G = sde.discretize(x, torch.tensor((idx + 1) / N_DISCRETE))
    close(x + f, torch.tensor(np.sqrt(1 - betas[idx]))[:, None] * x, 1e-12, 1e-14, "mean")
    close(G, np.sqrt(betas[idx]), 1e-9, 1e-15, "G")


# --------------------------------------------------------------------------------------
# DiscreteVPSDE
# --------------------------------------------------------------------------------------
def _index_time_cumprod_check(sde, betas, close, what):
    N = len(betas)
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    expected = torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), 0)
    close(sde.alphas_cumprod(t), expected, 1e-12, 1e-300, what)
    _, std = sde.marginal_prob(torch.ones(N, 1), t)
    close(std, torch.sqrt(1 - expected), 1e-12, 1e-15, what + " std")


def test_discrete_alphas_cumprod_linear(truth, close):
    betas = truth.ddpm_linear_betas(N_DISCRETE)
    _index_time_cumprod_check(DiscreteVPSDE.linear(N_DISCRETE), betas, close, "linear(1000)")
    _index_time_cumprod_check(DiscreteVPSDE(torch.tensor(betas)), betas, close, "linear betas")
    b2 = truth.ddpm_linear_betas(300, 1e-3, 0.05)
    _index_time_cumprod_check(DiscreteVPSDE.linear(300, 1e-3, 0.05), b2, close, "linear(300)")


def test_discrete_alphas_cumprod_cosine(truth, close):
    betas = truth.ddpm_cosine_betas(N_DISCRETE)
    _index_time_cumprod_check(DiscreteVPSDE.cosine(N_DISCRETE), betas, close, "cosine(1000)")


def test_discrete_alphas_cumprod_arbitrary_schedule(rng, close):
    """Any betas in (0, 1), not monotone: still alphabar_i at t_i, and alpha(0) = 1."""
    betas = rng.uniform(1e-4, 0.3, size=57)
    sde = DiscreteVPSDE(torch.tensor(betas))
    assert sde.N == 57 and sde.T == 1.0
    _index_time_cumprod_check(sde, betas, close, "random betas")
    close(sde.alphas_cumprod(torch.zeros(1)), [1.0], 0, 1e-15, "alphabar(0)")
    # between knots the interpolated alphabar stays between its neighbours (monotone)
    t = torch.linspace(0, 1, 57 * 16 + 1)
    ab = sde.alphas_cumprod(t)
    assert (ab[1:] <= ab[:-1] * (1 + 1e-15)).all()
    assert (sde.beta(t) >= 0).all()


@pytest.mark.parametrize("N", [10, 1000, 4000])
def test_index_time_round_trip(N):
    sde = DiscreteVPSDE.linear(N, 1e-4, 0.02)
    i = torch.arange(N)
    t = sde.index_to_time(i)
    assert (t.double() - (i.double() + 1) / N).abs().max() <= 1e-15
    back = sde.time_to_index(t)
    assert back.dtype == torch.long
    assert torch.equal(back, i)
    # rounding, never truncation: nudged times (and float32 times) come back to i
    assert torch.equal(sde.time_to_index((t - 0.3 / N).clamp(min=0.0)), i)
    assert torch.equal(sde.time_to_index((t + 0.3 / N).clamp(max=1.0)), i)
    assert torch.equal(sde.time_to_index(t.float()), i)
    for j in (0, N // 3, N - 1):
        assert int(sde.time_to_index((j + 1) / N)) == j


def test_discrete_linear_converges_to_vpsde_at_first_order():
    """DDPM linear(N, 0.1/N, 20/N) -> VPSDE(0.1, 20): max |diff| of (alpha, std) ~ C/N."""
    vp = VPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.arange(1, 251, dtype=torch.float64) / 250  # index times of every N below
    Ns = np.array([250, 500, 1000, 2000, 4000])
    errs = []
    for N in Ns:
        d = DiscreteVPSDE.linear(N, 0.1 / N, 20.0 / N)
        ad, sd_ = d.marginal_coeffs(t)
        ac, sc = vp.marginal_coeffs(t)
        errs.append(max((ad - ac).abs().max().item(), (sd_ - sc).abs().max().item()))
    errs = np.array(errs)
    slope = np.polyfit(np.log(Ns), np.log(errs), 1)[0]
    assert abs(-slope - 1.0) < 0.2, f"errors {errs}, slope {slope}"


def test_discrete_between_knots_is_continuous_and_consistent(build_sde, close):
    """Interpolated alphabar: continuous at knots, and beta = -d/dt log alphabar."""
    sde = build_sde("ddpm_linear")
    t = torch.tensor([0.0005, 0.0123, 0.3337, 0.87654])
    h = 1e-6
    la = lambda s: torch.log(sde.alphas_cumprod(s))  # noqa: E731
    fd = -(la(t + h) - la(t - h)) / (2 * h)
    close(sde.beta(t), fd, 1e-6, 1e-8, "beta vs finite difference")
    knots = torch.tensor([0.1, 0.5, 0.9])
    e = 1e-10
    close(sde.alphas_cumprod(knots + e), sde.alphas_cumprod(knots - e), 1e-8, 0,
          "alphabar continuity at knots")


def test_sde_registry_covers_every_schedule():
    """One table names every concrete SDE class (checkpoints) and its command-line short
    name; build_sde gives the documented defaults."""
    import scoresde.sdes as sdes
    from scoresde.sdes import SDE, SDE_TABLE, SDES, SHORT_NAMES, build_sde

    concrete = {obj for obj in vars(sdes).values() if isinstance(obj, type)
                and issubclass(obj, SDE) and not getattr(obj, "__abstractmethods__", None)}
    assert set(SDES.values()) == concrete
    assert list(SHORT_NAMES) == ["vp", "subvp", "ve", "cosine", "ddpm"]
    assert len({e.cls for e in SDE_TABLE}) == len(SDE_TABLE)
    assert build_sde("vp").config() == VPSDE(0.1, 20.0).config()
    assert torch.equal(build_sde("ddpm").betas, DiscreteVPSDE.linear(1000).betas)
    assert build_sde("ve", sigma_max=3.0).config()["sigma_max"] == 3.0
    with pytest.raises(TypeError, match="sigma_max"):
        build_sde("ve")
    with pytest.raises(ValueError, match="'vpx'.*vp, subvp"):
        build_sde("vpx")


def test_half_log_snr_is_half_the_log_snr(build_sde, sde_name):
    """lambda(t) = log(alpha/std) (DPM-Solver's variable) is log_snr / 2, computed from the
    marginal coefficients exactly as torch.log(alpha / std)."""
    sde = build_sde(sde_name)
    t = torch.tensor([1e-3, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    lam = sde.half_log_snr(t)
    alpha, std = sde.marginal_coeffs(t)
    assert torch.equal(lam, torch.log(alpha / std))
    assert torch.allclose(2.0 * lam, sde.log_snr(t), rtol=1e-12, atol=1e-12)
    assert sde.half_log_snr(0.5).shape == (1,)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.half_log_snr(1.5)


def test_discrete_betas_in_any_natural_form_give_the_same_schedule(truth):
    """A list, a tuple, a NumPy array, a list of 0-d tensors and a float32 tensor all give
    the float64 betas of Ho et al.'s linear schedule (converted once, by as_real_tensor)."""
    betas = truth.ddpm_linear_betas(50)
    forms = [betas.tolist(), tuple(betas.tolist()), betas, [torch.tensor(b) for b in betas],
             torch.tensor(betas)]
    for form in forms:
        sde = DiscreteVPSDE(form)
        assert sde.betas.dtype == torch.float64 and sde.N == 50
        assert torch.equal(sde.betas, torch.from_numpy(betas)), type(form)
    np.testing.assert_allclose(DiscreteVPSDE(torch.tensor(betas, dtype=torch.float32)).betas,
                               betas.astype(np.float32), rtol=0, atol=0)

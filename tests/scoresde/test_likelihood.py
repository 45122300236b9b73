"""log_likelihood / encode / decode against closed-form densities (issue #4).

Truth: for Gaussian data N(mu, Sigma), x_t ~ N(alpha mu, alpha^2 Sigma + std^2 I) with alpha,
std from the papers' formulas in conftest.ClosedForm, evaluated here with scipy; a Gaussian
mixture's marginal is the mixture of those. The ODE ends at T on the prior, which is not
exactly p_T, so we compare logp - prior_logp(z) + log p_T(z) (the exact marginal at T in
place of the prior) with the closed form: that isolates the ODE and trace error.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import scoresde as sd
import solvers
from scoresde.likelihood import (decode, encode,
                                 log_likelihood)

EPS = 1e-5


def random_gaussian(D: int, seed: int):
    """A mean and an anisotropic covariance with random eigenvectors, eigenvalues in [0.05, 2]."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    lam = 0.05 + 1.95 * torch.rand(D, generator=g)
    cov = (q * lam) @ q.T
    return torch.randn(D, generator=g), 0.5 * (cov + cov.T), g


def gaussian_logpdf(truth, name, mu, cov, x, t):
    """log N(x; alpha(t) mu, alpha(t)^2 Sigma + std(t)^2 I) by scipy, [n] numpy."""
    a, s = float(truth.alpha(name, t)), float(truth.std(name, t))
    c = a ** 2 * cov.numpy() + s ** 2 * np.eye(len(mu))
    return np.atleast_1d(multivariate_normal(mean=a * mu.numpy(), cov=c).logpdf(x.numpy()))


def ode_error(res, exact_logp_T, closed_form):
    """Per-sample |logp - prior(z) + log p_T(z) - closed form| and the prior mismatch."""
    corrected = (res.logp - res.prior_logp).numpy() + exact_logp_T
    return np.abs(corrected - closed_form), np.abs(exact_logp_T - res.prior_logp.numpy())


# -- accuracy against closed forms -----------------------------------------------------------
@pytest.mark.parametrize("D", [2, 5, 20])
def test_exact_trace_gaussian_matches_closed_form(continuous_name, D, build_sde, truth):
    sde = build_sde(continuous_name)
    mu, cov, g = random_gaussian(D, seed=D)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(6, generator=g)
    truth_eps = gaussian_logpdf(truth, continuous_name, mu, cov, x, EPS)
    for tol, bound in ((1e-6, 1e-4), (1e-5, 1e-3)):
        res = log_likelihood(oracle.score, sde, x, rtol=tol, atol=tol, eps=EPS)
        err, mismatch = ode_error(res, gaussian_logpdf(truth, continuous_name, mu, cov,
                                                       res.z, sde.T), truth_eps)
        print(f"{continuous_name} D={D} tol={tol:g}: max |err|/D = {err.max() / D:.2e}, "
              f"prior mismatch/D = {mismatch.max() / D:.2e}, nfe = {res.nfe}")
        assert (err / D < bound).all(), (tol, err / D)
        assert res.logp.shape == (6,) and res.z.shape == x.shape
        torch.testing.assert_close(res.logp, res.prior_logp + res.delta_logp)
        assert res.stderr is None and res.nfe == res.stats["nfe"] > 0


def test_prior_mismatch_is_what_the_prior_costs(build_sde, truth):
    """logp itself (with the prior) is off from the closed form by prior(z) - log p_T(z) only."""
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(5, seed=3)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(4, generator=g)
    res = log_likelihood(oracle.score, sde, x, rtol=1e-7, atol=1e-7)
    exact_T = gaussian_logpdf(truth, "vp", mu, cov, res.z, 1.0)
    raw_err = res.logp.numpy() - gaussian_logpdf(truth, "vp", mu, cov, x, EPS)
    np.testing.assert_allclose(raw_err, res.prior_logp.numpy() - exact_T, atol=1e-4)
    # VP at T = 1: alpha(1) = 6.7e-3, so the prior is close to p_T, not equal
    assert np.abs(raw_err).max() > 1e-4


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_gaussian_mixture_2d(name, build_sde, truth):
    sde = build_sde(name)
    weights = torch.tensor([0.5, 0.3, 0.2])
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -2.0]])
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, -0.05], [-0.05, 0.4]],
                         [[0.5, 0.2], [0.2, 0.3]]])
    mix = sd.GaussianMixture(weights, means, covs, sde=sde)
    x = mix.sample(8, generator=torch.Generator().manual_seed(7))

    def mix_logpdf(y, t):
        return logsumexp(np.stack([math.log(w) + gaussian_logpdf(truth, name, m, c, y, t)
                                   for w, m, c in zip(weights.tolist(), means, covs)]), axis=0)

    for tol, bound in ((1e-6, 1e-4), (1e-5, 1e-3)):
        res = log_likelihood(mix.score, sde, x, rtol=tol, atol=tol)
        err, mismatch = ode_error(res, mix_logpdf(res.z, sde.T), mix_logpdf(x, EPS))
        print(f"mixture {name} tol={tol:g}: max |err|/D = {err.max() / 2:.2e}, "
              f"prior mismatch/D = {mismatch.max() / 2:.2e}, nfe = {res.nfe}")
        assert (err / 2 < bound).all(), err


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_per_sample_error_control_mixture(name, build_sde, truth):
    """per_sample=True: each sample meets the tolerance against the closed form, agrees with
    the batch-wide solve to the tolerance, and the samples take their own step counts (the
    image-shaped path reshapes the rows in flight)."""
    sde = build_sde(name)
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.0], [0.5, -2.0]], dtype=torch.float64)
    covs = torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, -0.05], [-0.05, 0.4]],
                         [[0.5, 0.2], [0.2, 0.3]]], dtype=torch.float64)
    mix = sd.GaussianMixture(weights, means, covs, sde=sde)
    x = mix.sample(8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def mix_logpdf(y, t):
        return logsumexp(np.stack([math.log(w) + gaussian_logpdf(truth, name, m, c, y, t)
                                   for w, m, c in zip(weights.tolist(), means, covs)]), axis=0)

    def score(y, t):  # [n, 1, 2] image-shaped rows
        return mix.score(y.reshape(y.shape[0], 2), t).reshape(y.shape)

    tol = 1e-6
    res = log_likelihood(score, sde, x[:, None, :], rtol=tol, atol=tol, per_sample=True)
    err, _ = ode_error(res, mix_logpdf(res.z.reshape(8, 2), sde.T), mix_logpdf(x, EPS))
    assert (err / 2 < 1e-4).all(), err
    glob = log_likelihood(score, sde, x[:, None, :], rtol=tol, atol=tol)
    torch.testing.assert_close(res.logp, glob.logp, rtol=0, atol=2e-4)
    nfe = res.stats["nfe_per_sample"]
    assert nfe.shape == (8,) and int(nfe.max()) == res.nfe
    assert res.stats["rows_evaluated"] == int(nfe.sum())
    assert int(nfe.min()) < int(nfe.max())            # the samples did not share their steps
    # batch_size splits: per-sample statistics concatenated, in batch order
    parts = log_likelihood(score, sde, x[:, None, :], rtol=tol, atol=tol, per_sample=True,
                           batch_size=3)
    assert parts.stats["nfe_per_sample"].shape == (8,)
    torch.testing.assert_close(parts.logp, res.logp, rtol=0, atol=1e-12)


def test_per_sample_hutchinson_keeps_each_samples_probes(build_sde, truth):
    """per_sample=True with Hutchinson: on Gaussian data the field is linear, so a probe's
    estimate eps^T (int dv/dx dt) eps is known from the exact trace's integrand; with
    per-sample seeded probes the per-sample solve agrees with the batch-wide one (the same
    probes) to the tolerance, and a sample's result does not depend on the batch it is in
    (leaving the batch early keeps its own probes)."""
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(3, seed=4)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(6, generator=g)
    x[0] = mu + 6.0 * torch.sqrt(torch.diagonal(cov))    # an outlier: its own step count
    tol = 1e-8
    kw = dict(trace="hutchinson", n_probes=2, seed=5, rtol=tol, atol=tol)
    ps = log_likelihood(oracle.score, sde, x, per_sample=True, **kw)
    glob = log_likelihood(oracle.score, sde, x, **kw)
    torch.testing.assert_close(ps.logp_per_probe, glob.logp_per_probe, rtol=0, atol=1e-5)
    nfe = ps.stats["nfe_per_sample"]
    assert int(nfe.min()) < int(nfe.max())
    alone = log_likelihood(oracle.score, sde, x[3:5], per_sample=True, sample_offset=3, **kw)
    torch.testing.assert_close(alone.logp_per_probe, ps.logp_per_probe[3:5], rtol=0,
                               atol=1e-12)
    # each probe's estimate differs from the exact log-density (the estimator's noise), and
    # their mean over many probes approaches it
    exact = log_likelihood(oracle.score, sde, x, per_sample=True, rtol=tol, atol=tol)
    many = log_likelihood(oracle.score, sde, x, per_sample=True, trace="hutchinson",
                          n_probes=400, seed=6, rtol=1e-6, atol=1e-6)
    assert (many.logp - exact.logp).abs().max() < 4 * many.stderr.max()


def test_per_sample_step_budget_names_the_option(build_sde):
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(2, seed=4)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    with pytest.raises(solvers.MaxStepsError, match=r"per_sample=True\).*max_steps=2"):
        log_likelihood(oracle.score, sde, oracle.sample(3, generator=g), rtol=1e-9,
                       atol=1e-9, max_steps=2, per_sample=True)


def test_discrete_vpsde_through_its_continuous_interpolation(build_sde, truth):
    """A DiscreteVPSDE's likelihood uses the PCHIP-interpolated schedule; with the exact score
    of that schedule the ODE is exact, here checked at an index time eps = t_0 = 1/N."""
    sde = build_sde("ddpm_linear")
    eps = 1.0 / sde.N
    mu, cov, g = random_gaussian(3, seed=11)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(4, generator=g)
    res = log_likelihood(oracle.score, sde, x, rtol=1e-6, atol=1e-6, eps=eps)
    exact_T = gaussian_logpdf(truth, "ddpm_linear", mu, cov, res.z, 1.0)
    err, _ = ode_error(res, exact_T, gaussian_logpdf(truth, "ddpm_linear", mu, cov, x, eps))
    assert (err / 3 < 1e-4).all(), err

    # An epsilon network trained on integer steps: with "fractional_index" it sees the exact
    # time and matches; with "index" the field is piecewise constant in the network's time
    # input, and the likelihood is an approximation.
    def eps_net(y, i):
        t = (i.to(y.dtype) + 1.0) / sde.N
        return -sde.marginal_coeffs(t)[1][:, None] * oracle.score(y, t)

    errors = {}
    for time_input in ("fractional_index", "index"):
        model = sd.ScoreModel(eps_net, sde, prediction="epsilon", time_input=time_input)
        r = log_likelihood(model, sde, x, rtol=1e-6, atol=1e-6, eps=eps)
        errors[time_input] = np.abs(r.logp.numpy() - res.logp.numpy()).max() / 3
    print(f"DiscreteVPSDE eps-net, |logp - exact-score logp|/D: {errors}")
    assert errors["fractional_index"] < 1e-5
    assert 1e-5 < errors["index"] < 0.05


# -- Hutchinson ------------------------------------------------------------------------------
@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_mean_within_three_standard_errors(probe, build_sde):
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(4, seed=5)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(3, generator=g)
    kw = dict(rtol=1e-5, atol=1e-5)
    exact = log_likelihood(oracle.score, sde, x, **kw)
    hutch = log_likelihood(oracle.score, sde, x, trace="hutchinson", probe=probe, n_probes=400,
                           generator=torch.Generator().manual_seed(1), **kw)
    z = (hutch.logp - exact.logp) / hutch.stderr
    print(f"{probe}: exact {exact.logp.tolist()}, hutchinson {hutch.logp.tolist()}, "
          f"stderr {hutch.stderr.tolist()}, z {z.tolist()}")
    assert (z.abs() < 3).all()
    assert (hutch.stderr > 0).all() and hutch.logp_per_probe.shape == (3, 400)
    torch.testing.assert_close(hutch.logp, hutch.logp_per_probe.mean(1))
    # the trajectory does not depend on the probes: the same latent, up to the tolerance
    torch.testing.assert_close(hutch.z, exact.z, rtol=0, atol=1e-3)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_standard_errors_are_calibrated(probe, build_sde):
    """200 independent seeds as a batch of 200 identical x's (the per-sample states are
    independent); z = (estimate - exact) / stderr should have standard deviation ~ 1
    (Student t with n_probes - 1 = 63 degrees of freedom: sqrt(63/61) = 1.016).

    The per-probe estimates eps^T M eps are skewed quadratic forms, so the t-statistic is
    heavy-tailed for few probes in few dimensions (D = 3 with 16 probes gives z std 1.1-1.5);
    docs/likelihood.md tabulates this. D = 8 with 64 probes is in the regime where it holds."""
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(8, seed=2)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(1, generator=g)
    kw = dict(rtol=1e-4, atol=1e-4)
    exact = log_likelihood(oracle.score, sde, x, **kw).logp
    hutch = log_likelihood(oracle.score, sde, x.expand(200, 8), trace="hutchinson", probe=probe,
                           n_probes=64, generator=torch.Generator().manual_seed(3), **kw)
    z = (hutch.logp - exact) / hutch.stderr
    print(f"{probe}: z mean {z.mean().item():.3f}, z std {z.std().item():.3f}, "
          f"mean stderr {hutch.stderr.mean().item():.3g}")
    assert 0.8 < z.std().item() < 1.2
    assert abs(z.mean().item()) < 3 * 1.2 / math.sqrt(200)


def test_hutchinson_single_probe_has_no_stderr_and_is_reproducible(build_sde):
    sde = build_sde("subvp")
    mu, cov, g = random_gaussian(3, seed=4)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(2, generator=g)
    runs = [log_likelihood(oracle.score, sde, x, trace="hutchinson", rtol=1e-4, atol=1e-4,
                           generator=torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(runs[0].logp, runs[1].logp)
    assert torch.isnan(runs[0].stderr).all()


# -- latents ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_encode_then_decode_returns_x(name, build_sde):
    sde = build_sde(name)
    mu, cov, g = random_gaussian(4, seed=6)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(5, generator=g)
    z = encode(oracle.score, sde, x, rtol=1e-9, atol=1e-9)
    back = decode(oracle.score, sde, z, rtol=1e-9, atol=1e-9)
    err = (back - x).abs().max().item()
    print(f"{name}: max |decode(encode(x)) - x| = {err:.2e}")
    assert err < 1e-5
    # the latent is the one the likelihood solve ends at
    res = log_likelihood(oracle.score, sde, x, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(res.z, z, rtol=1e-6, atol=1e-6)


# -- work per evaluation ---------------------------------------------------------------------
class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts its calls (vmappable, so torch.func can use it)."""
    generate_vmap_rule = True
    calls = 0

    @staticmethod
    def forward(x):
        return x.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        _CountBackward.calls += 1
        return grad


class _CountingNet(torch.nn.Module):
    def __init__(self, D: int):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(D, 16)
        self.out = torch.nn.Linear(16, D)
        self.forwards = 0
        self.register_forward_hook(lambda *args: setattr(self, "forwards", self.forwards + 1))

    def forward(self, x, t):
        h = _CountBackward.apply(x)
        return self.out(torch.tanh(self.hidden(h) + t[:, None]))


@pytest.mark.parametrize("kw, backward_per_nfe", [
    (dict(trace="hutchinson"), 1),                   # one forward + one backward
    (dict(trace="hutchinson", n_probes=4), 1),       # one batched backward for all probes
    (dict(trace="exact"), 1),                        # D = 4 basis vectors in one vmapped chunk
    (dict(trace="exact", chunk_size=3), 2),          # ceil(4 / 3) chunks
])
def test_network_calls_per_evaluation(kw, backward_per_nfe, build_sde):
    sde = build_sde("vp")
    net = _CountingNet(4)
    model = sd.ScoreModel(net, sde, prediction="epsilon", time_input="t")
    _CountBackward.calls = 0
    res = log_likelihood(model, sde, torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
                         rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(1), **kw)
    assert res.nfe == res.stats["nfe"] > 0
    assert net.forwards == res.nfe
    assert _CountBackward.calls == backward_per_nfe * res.nfe
    # no gradient leaks to the parameters or out of the result
    assert all(p.grad is None for p in net.parameters())
    assert not res.logp.requires_grad and not res.z.requires_grad


# -- batch, dtype, shapes, gradients ---------------------------------------------------------
def test_samples_are_independent_of_the_batch(build_sde):
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(3, seed=8)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(4, generator=g)
    together = log_likelihood(oracle.score, sde, x, rtol=1e-7, atol=1e-7).logp
    alone = torch.cat([log_likelihood(oracle.score, sde, x[i:i + 1], rtol=1e-7, atol=1e-7).logp
                       for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)  # shared steps: tol-level
    same = log_likelihood(oracle.score, sde, x[:1].expand(4, 3), rtol=1e-5, atol=1e-5).logp
    assert torch.equal(same, same[:1].expand(4))  # identical rows give identical results


def test_image_shaped_state_chunks_and_float32(build_sde, truth):
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(12, seed=10)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    flat = oracle.sample(3, generator=g)
    x = flat.reshape(3, 1, 3, 4)

    def score(y, t):  # an image-shaped score built on the flat oracle
        return oracle.score(y.reshape(y.shape[0], -1), t).reshape(y.shape)

    results = [log_likelihood(score, sde, x, rtol=1e-5, atol=1e-5, chunk_size=c)
               for c in (1, 5, None)]
    for r in results[1:]:
        torch.testing.assert_close(r.logp, results[0].logp, rtol=0, atol=1e-10)
    assert results[0].stats["chunk_size"] == 1 and results[2].stats["chunk_size"] == 12
    assert results[0].z.shape == x.shape
    exact_T = gaussian_logpdf(truth, "vp", mu, cov, results[0].z.reshape(3, -1), 1.0)
    err, _ = ode_error(results[0], exact_T, gaussian_logpdf(truth, "vp", mu, cov, flat, EPS))
    assert (err / 12 < 1e-4).all()

    r32 = log_likelihood(score, sde, x.float(), rtol=1e-4, atol=1e-4)
    assert r32.logp.dtype == torch.float32
    torch.testing.assert_close(r32.logp.double(), results[0].logp, rtol=0, atol=1e-3 * 12)


def test_gradients_neither_needed_nor_leaked(build_sde):
    sde = build_sde("vp")
    mu, cov, g = random_gaussian(3, seed=12)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(2, generator=g).requires_grad_(True)
    for trace in ("exact", "hutchinson"):
        with torch.no_grad():
            res = log_likelihood(oracle.score, sde, x, trace=trace, rtol=1e-4, atol=1e-4,
                                 generator=torch.Generator().manual_seed(0))
        ref = log_likelihood(oracle.score, sde, x, trace=trace, rtol=1e-4, atol=1e-4,
                             generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(res.logp, ref.logp, rtol=0, atol=0)
        for t in (res.logp, res.z, ref.logp, ref.z, ref.prior_logp, ref.delta_logp):
            assert not t.requires_grad
    assert x.grad is None


# -- failures --------------------------------------------------------------------------------
class _OpaqueOp(torch.autograd.Function):
    """-x, with a backward that goes through numpy (as a custom op calling host code would):
    fine for autograd, but it cannot be batched (vmap has no rule for the host round trip),
    so the exact trace falls back to one backward pass per basis vector."""

    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(-grad.detach().numpy())


def test_exact_trace_of_a_score_whose_backward_cannot_be_batched(build_sde):
    sde = build_sde("vp")

    def score(x, t):
        return _OpaqueOp.apply(x)

    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(RuntimeError):  # the premise: autograd cannot batch its backward
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(score(xg, None), xg, grad_outputs=torch.ones(2, *x.shape,
                            dtype=x.dtype), is_grads_batched=True)
    # score = -x is the score of N(0, I) at every t: div v = D (beta/2 (-1) + beta/2) = 0,
    # so the result is the prior's density of z = x, by either trace.
    for kw in (dict(trace="exact"), dict(trace="exact", chunk_size=2),
               dict(trace="hutchinson", n_probes=2, generator=torch.Generator().manual_seed(0))):
        res = log_likelihood(score, sde, x, **kw)
        torch.testing.assert_close(res.delta_logp, torch.zeros(2, dtype=x.dtype), rtol=0,
                                   atol=1e-12)
        torch.testing.assert_close(res.z, x, rtol=0, atol=1e-9)


def test_exact_divergence_fallback_equals_batched_backward():
    """The per-basis-vector fallback gives the batched backward's numbers (a random
    two-layer field in D = 5, float64), and both equal the Jacobian's trace."""
    from scoresde.likelihood import exact_divergence
    g = torch.Generator().manual_seed(3)
    w1, w2 = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g,
                                                                             dtype=torch.float64)

    def smooth(t, x):
        return torch.tanh(x @ w1.T + t) @ w2.T

    def opaque(t, x):
        return _OpaqueOp.apply(-smooth(t, x))

    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda y: smooth(t, y[None])[0], row)
                       for row in x])
    want = torch.diagonal(jac, dim1=1, dim2=2).sum(1)
    for chunk in (None, 1, 2):
        v, div = exact_divergence(smooth, t, x, chunk)
        torch.testing.assert_close(div, want, rtol=1e-14, atol=1e-14)
        v2, div2 = exact_divergence(opaque, t, x, chunk)
        torch.testing.assert_close(div2, want, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(v, smooth(t, x), rtol=0, atol=0)


def test_step_budget_is_reported(build_sde):
    sde = build_sde("vp")
    oracle = sd.GaussianData(torch.zeros(2), torch.eye(2) * 0.1, sde=sde)
    with pytest.raises(solvers.MaxStepsError, match="max_steps=3"):
        log_likelihood(oracle.score, sde, torch.ones(1, 2), rtol=1e-9, atol=1e-9, max_steps=3)


def _setup():
    sde = sd.VPSDE()
    return sde, sd.GaussianData(torch.zeros(2), torch.eye(2), sde=sde).score, torch.zeros(3, 2)


def test_bad_trace_name():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"trace='hutch'.*'exact', 'hutchinson'"):
        log_likelihood(score, sde, x, trace="hutch")


def test_bad_probe_name():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"probe='normal'.*'rademacher', 'gaussian'"):
        log_likelihood(score, sde, x, trace="hutchinson", probe="normal")


@pytest.mark.parametrize("rtol", [0.0, -1e-5])
def test_nonpositive_rtol(rtol):
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"rtol must be > 0"):
        log_likelihood(score, sde, x, rtol=rtol)


def test_nonpositive_atol():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"atol must be > 0"):
        log_likelihood(score, sde, x, atol=0.0)


def test_n_probes_below_one():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"n_probes must be an integer >= 1, got 0"):
        log_likelihood(score, sde, x, trace="hutchinson", n_probes=0)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 2.0])
def test_eps_outside_open_interval(eps):
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"eps must lie in the open interval \(0, T\) = \(0, 1\)"):
        log_likelihood(score, sde, x, eps=eps)


def test_x_without_batch_dimension():
    sde, score, _ = _setup()
    with pytest.raises(ValueError, match=r"x must have shape \[batch, \*dims\].*got shape \(2,\)"):
        log_likelihood(score, sde, torch.zeros(2))


def test_x_with_nan():
    sde, score, x = _setup()
    x = x.clone()
    x[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x must be finite, but x\[1\] contains NaN"):
        log_likelihood(score, sde, x)


def test_integer_x():
    sde, score, _ = _setup()
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor"):
        log_likelihood(score, sde, torch.zeros(3, 2, dtype=torch.long))


def test_bad_chunk_size():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"chunk_size must be an integer >= 1, got 0"):
        log_likelihood(score, sde, x, chunk_size=0)


def test_bad_method_name():
    sde, score, x = _setup()
    with pytest.raises(ValueError, match=r"unknown adaptive ODE method 'rk99'"):
        log_likelihood(score, sde, x, method="rk99")


def test_decode_checks_z():
    sde, score, _ = _setup()
    with pytest.raises(ValueError, match=r"z must be finite"):
        decode(score, sde, torch.full((1, 2), float("inf")))


# -- heavier variants ------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dopri8", "bosh3", "RK45", "DOP853"])
def test_other_methods_match_closed_form(method, build_sde, truth):
    sde = build_sde("subvp")
    mu, cov, g = random_gaussian(5, seed=13)
    oracle = sd.GaussianData(mu, cov, sde=sde)
    x = oracle.sample(4, generator=g)
    res = log_likelihood(oracle.score, sde, x, method=method, rtol=1e-6, atol=1e-6)
    err, _ = ode_error(res, gaussian_logpdf(truth, "subvp", mu, cov, res.z, 1.0),
                       gaussian_logpdf(truth, "subvp", mu, cov, x, EPS))
    print(f"{method}: max |err|/D = {err.max() / 5:.2e}, nfe = {res.nfe}")
    assert (err / 5 < 1e-4).all()


class _EigenGaussianScore:
    """The exact score of N(mu, Q diag(lam) Q^T) data under ``sde``, by matmuls only:
    s(x, t) = -Q [(Q^T (x - alpha mu)) / (alpha^2 lam + std^2)].

    The oracle's Cholesky solves are exact but slow under torch.func.vmap in high D (the
    batching rule copies the D x D factor for every basis vector); this form vmaps cheaply,
    like a neural network does."""

    def __init__(self, mu, q, lam, sde):
        self.mu, self.q, self.lam, self.sde = mu, q, lam, sde

    def __call__(self, x, t):
        alpha, std = self.sde._marginal_coeffs(t)
        y = (x - alpha[:, None] * self.mu) @ self.q
        return -(y / (alpha[:, None] ** 2 * self.lam + std[:, None] ** 2)) @ self.q.T


def _high_dim_check(D, chunk_size, tol, truth, build_sde):
    sde = build_sde("vp")
    g = torch.Generator().manual_seed(D)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g))
    lam = 0.05 + 1.95 * torch.rand(D, generator=g)
    mu = torch.randn(D, generator=g)
    cov = (q * lam) @ q.T
    cov = 0.5 * (cov + cov.T)
    x = mu + (torch.randn(2, D, generator=g) * lam.sqrt()) @ q.T
    score = _EigenGaussianScore(mu, q, lam, sde)
    res = log_likelihood(score, sde, x, rtol=tol, atol=tol, chunk_size=chunk_size)
    err, mismatch = ode_error(res, gaussian_logpdf(truth, "vp", mu, cov, res.z, 1.0),
                              gaussian_logpdf(truth, "vp", mu, cov, x, EPS))
    print(f"D={D}, chunk_size={chunk_size}, tol={tol:g}: max |err|/D = {err.max() / D:.2e}, "
          f"prior mismatch/D = {mismatch.max() / D:.2e}, nfe = {res.nfe}")
    assert res.stats["chunk_size"] == chunk_size
    assert (err / D < 1e-4).all()


def test_exact_trace_in_chunks_in_hundreds_of_dimensions(build_sde, truth):
    _high_dim_check(256, 64, 1e-5, truth, build_sde)


@pytest.mark.slow
def test_exact_trace_in_thousands_of_dimensions(build_sde, truth):
    _high_dim_check(2048, 128, 1e-5, truth, build_sde)


def test_data_and_network_dtype_mismatch_is_named():
    # float32 data into a float64 network: one message naming both, not the solver's
    sde = sd.VPSDE()
    model = sd.ScoreModel(sd.MLP(2, hidden=8, depth=1).double(), sde)
    x = torch.zeros(4, 2, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"x is torch.float32 on cpu but the score network's "
                                         r"parameters are torch.float64 on cpu"):
        sd.log_likelihood(model, sde, x)
    ll = sd.log_likelihood(model, sde, x.double(), rtol=1e-3, atol=1e-3)
    assert torch.isfinite(ll.logp).all()

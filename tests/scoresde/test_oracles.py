"""Closed-form oracles (scoresde.oracles) checked against scipy, autograd and quadrature.

For data x_0 ~ sum_k w_k N(mu_k, Sigma_k) and x_t | x_0 ~ N(alpha x_0, std^2 I), the
marginal is sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + std^2 I). alpha and std come from
the closed forms in conftest (not from scoresde); the discrete schedules are checked at
their index times t_i = (i + 1)/1000, where alphabar is DDPM's cumulative product.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from scipy.special import logsumexp

from scoresde.oracles import GaussianData, GaussianMixture

DIMS = [1, 2, 5]
# index times of N = 1000 (so every schedule has a closed form there), in (0, 1]
T_ORACLE = np.array([0.05, 0.123, 0.3, 0.5, 0.77, 0.9, 1.0])


def _gaussian_params(rng, D):
    mu = rng.normal(size=D) * 1.5
    A = rng.normal(size=(D, D))
    cov = A @ A.T / D + 0.3 * np.eye(D)
    return mu, cov


def _mixture_params(rng, D, K=3):
    w = np.array([0.2, 0.5, 0.3])[:K]
    w = w / w.sum()
    mus = rng.normal(size=(K, D)) * 2.0
    covs = []
    for _ in range(K):
        A = rng.normal(size=(D, D))
        covs.append(A @ A.T / D * 0.5 + 0.2 * np.eye(D))
    return w, mus, np.array(covs)


def _t(x):
    return torch.as_tensor(x, dtype=torch.float64)


def _marginal_mixture_logpdf(x, w, mus, covs, alpha, std):
    """log sum_k w_k N(x_n; alpha_n mu_k, alpha_n^2 Sigma_k + std_n^2 I), row by row (scipy)."""
    D = mus.shape[1]
    out = []
    for n in range(x.shape[0]):
        comps = [math.log(w[k]) + stats.multivariate_normal(
            mean=alpha[n] * mus[k], cov=alpha[n] ** 2 * covs[k] + std[n] ** 2 * np.eye(D)
        ).logpdf(x[n]) for k in range(len(w))]
        out.append(logsumexp(comps))
    return np.array(out)


def _points(rng, n, D, scale=2.0):
    return rng.normal(size=(n, D)) * scale


# --------------------------------------------------------------------------------------
# GaussianData
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", DIMS)
def test_gaussian_data_log_prob_is_data_density(D, rng, close):
    mu, cov = _gaussian_params(rng, D)
    oracle = GaussianData(_t(mu), _t(cov))
    x = _points(rng, 9, D)
    expected = stats.multivariate_normal(mean=mu, cov=cov).logpdf(x)
    close(oracle.log_prob(_t(x)), np.atleast_1d(expected), 1e-12, 1e-12, "log p_0")


@pytest.mark.parametrize("D", DIMS)
def test_gaussian_data_marginal_log_prob_matches_scipy(sde_name, build_sde, truth, close, rng, D):
    """log p_t(x) = log N(x; alpha mu, alpha^2 Sigma + std^2 I), one t per row."""
    sde = build_sde(sde_name)
    mu, cov = _gaussian_params(rng, D)
    oracle = GaussianData(_t(mu), _t(cov), sde=sde)
    x = _points(rng, len(T_ORACLE), D)
    alpha, std = truth.alpha(sde_name, T_ORACLE), truth.std(sde_name, T_ORACLE)
    expected = _marginal_mixture_logpdf(x, [1.0], mu[None], cov[None], alpha, std)
    close(oracle.log_prob(_t(x), _t(T_ORACLE)), expected, 1e-11, 1e-11, f"{sde_name} log p_t")
    # one float time for the whole batch
    a1, s1 = truth.alpha(sde_name, 0.3), truth.std(sde_name, 0.3)
    expected1 = stats.multivariate_normal(mean=a1 * mu, cov=a1 ** 2 * cov + s1 ** 2 * np.eye(D)
                                          ).logpdf(x)
    close(oracle.log_prob(_t(x), 0.3), np.atleast_1d(expected1), 1e-11, 1e-11,
          f"{sde_name} log p_t, float t")


@pytest.mark.parametrize("D", DIMS)
def test_gaussian_data_score_closed_form(sde_name, build_sde, truth, close, rng, D):
    """grad log N(x; m, C) = -C^{-1} (x - m)."""
    sde = build_sde(sde_name)
    mu, cov = _gaussian_params(rng, D)
    oracle = GaussianData(_t(mu), _t(cov), sde=sde)
    x = _points(rng, len(T_ORACLE), D)
    alpha, std = truth.alpha(sde_name, T_ORACLE), truth.std(sde_name, T_ORACLE)
    expected = np.stack([
        -np.linalg.solve(alpha[n] ** 2 * cov + std[n] ** 2 * np.eye(D), x[n] - alpha[n] * mu)
        for n in range(len(T_ORACLE))])
    score = oracle.score(_t(x), _t(T_ORACLE))
    assert score.shape == (len(T_ORACLE), D)
    close(score, expected, 1e-10, 1e-10, f"{sde_name} score")


# --------------------------------------------------------------------------------------
# score == autograd of log_prob, for every SDE (any t, also between DDPM index times)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gaussian", "mixture"])
@pytest.mark.parametrize("D", DIMS)
def test_score_is_gradient_of_log_prob(sde_name, build_sde, close, rng, D, kind):
    sde = build_sde(sde_name)
    if kind == "gaussian":
        mu, cov = _gaussian_params(rng, D)
        oracle = GaussianData(_t(mu), _t(cov), sde=sde)
    else:
        w, mus, covs = _mixture_params(rng, D)
        oracle = GaussianMixture(_t(w), _t(mus), _t(covs), sde=sde)
    t = _t([0.02, 0.0505, 0.1, 0.2371, 0.5, 0.6666, 0.9, 0.99, 1.0])
    x = _t(_points(rng, len(t), D)).requires_grad_(True)
    logp = oracle.log_prob(x, t)
    assert logp.shape == (len(t),)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    score = oracle.score(x.detach(), t)
    close(score, grad, 1e-8, 1e-8, f"{sde_name} {kind} D={D} score vs autograd")
    # a float time equals the [batch] tensor of that time
    s1 = oracle.score(x.detach(), 0.4)
    s2 = oracle.score(x.detach(), torch.full((len(t),), 0.4))
    close(s1, s2, 1e-14, 1e-14, "float t")


# --------------------------------------------------------------------------------------
# GaussianMixture densities
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("D", DIMS)
def test_mixture_log_prob_matches_scipy(sde_name, build_sde, truth, close, rng, D):
    sde = build_sde(sde_name)
    w, mus, covs = _mixture_params(rng, D)
    oracle = GaussianMixture(_t(w), _t(mus), _t(covs), sde=sde)
    x = _points(rng, len(T_ORACLE), D)
    # data density (t = None)
    ones, zeros = np.ones(len(x)), np.zeros(len(x))
    close(oracle.log_prob(_t(x)), _marginal_mixture_logpdf(x, w, mus, covs, ones, zeros),
          1e-11, 1e-11, "mixture log p_0")
    alpha, std = truth.alpha(sde_name, T_ORACLE), truth.std(sde_name, T_ORACLE)
    close(oracle.log_prob(_t(x), _t(T_ORACLE)),
          _marginal_mixture_logpdf(x, w, mus, covs, alpha, std), 1e-11, 1e-11,
          f"{sde_name} mixture log p_t")


def _npdf(y, m, s):
    return math.exp(-0.5 * ((y - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def _convolved_density_1d(x, w, mus, sds, alpha, std):
    """p_t(x) = int p_0(y) N(x; alpha y, std^2) dy by adaptive quadrature (scipy.integrate.quad)."""
    def integrand(y):
        p0 = sum(wk * _npdf(y, mk, sk) for wk, mk, sk in zip(w, mus, sds))
        return p0 * _npdf(x, alpha * y, std)

    # As a function of y the kernel is centred at c = x/alpha with width s = std/alpha;
    # outside 40 widths of either factor the integrand is below exp(-800): integrate over
    # the intersection, cut at the centres and at 1, 3, 8 widths so quad sees every bump.
    c, s = x / alpha, std / alpha
    lo = max(c - 40 * s, min(mus) - 40 * max(sds))
    hi = min(c + 40 * s, max(mus) + 40 * max(sds))
    assert lo < hi
    cuts = {c + k * s for k in (-8, -3, -1, 0, 1, 3, 8)}
    cuts |= {m + k * sd for m, sd in zip(mus, sds) for k in (-8, -3, -1, 0, 1, 3, 8)}
    edges = [lo] + sorted(p for p in cuts if lo < p < hi) + [hi]
    val = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        v, err = integrate.quad(integrand, a, b, limit=200, epsabs=0, epsrel=1e-13)
        val += v
    return val


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 1.0])
def test_mixture_1d_log_prob_is_numerical_convolution(sde_name, build_sde, truth, close, t):
    sde = build_sde(sde_name)
    w, mus, sds = [0.25, 0.45, 0.3], [-2.0, 0.5, 3.0], [0.4, 0.8, 0.3]
    oracle = GaussianMixture(_t(w), _t(mus)[:, None], _t(np.array(sds) ** 2)[:, None, None],
                             sde=sde)
    alpha, std = float(truth.alpha(sde_name, t)), float(truth.std(sde_name, t))
    x = np.array([-3.1, -1.0, 0.0, 0.7, 2.2, 3.5]) * max(alpha, std) * 1.2
    expected = np.log([_convolved_density_1d(xi, w, mus, sds, alpha, std) for xi in x])
    close(oracle.log_prob(_t(x)[:, None], t), expected, 0, 1e-8,
          f"{sde_name} t={t} mixture log p_t vs quadrature")


def test_mixture_1d_data_density(close):
    w, mus, sds = [0.25, 0.45, 0.3], [-2.0, 0.5, 3.0], [0.4, 0.8, 0.3]
    oracle = GaussianMixture(_t(w), _t(mus)[:, None], _t(np.array(sds) ** 2)[:, None, None])
    x = np.linspace(-4, 5, 19)
    expected = np.log(sum(wk * stats.norm.pdf(x, mk, sk) for wk, mk, sk in zip(w, mus, sds)))
    close(oracle.log_prob(_t(x)[:, None]), expected, 1e-12, 1e-12, "1-D mixture log p_0")
    # and it is a normalised density
    total, _ = integrate.quad(lambda y: math.exp(oracle.log_prob(_t([[y]])).item()),
                              -10, 10, points=mus, limit=200)
    assert abs(total - 1.0) < 1e-9


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------
def _check_moments(x, mean, cov, k=4.0):
    """Sample mean and covariance within k standard errors (SEs estimated from the sample)."""
    n, D = x.shape
    m = x.mean(0)
    se_m = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(m - mean) < k * se_m), (m, mean, se_m)
    xc = x - mean
    prods = xc[:, :, None] * xc[:, None, :]
    c = prods.mean(0)
    se_c = prods.std(0) / math.sqrt(n)
    assert np.all(np.abs(c - cov) < k * se_c), (c, cov, se_c)


def test_gaussian_data_sample_moments(rng, gen):
    mu, cov = _gaussian_params(rng, 3)
    x = GaussianData(_t(mu), _t(cov)).sample(40000, generator=gen)
    assert x.shape == (40000, 3) and x.dtype == torch.float64
    _check_moments(x.numpy(), mu, cov)


@pytest.mark.parametrize("D", [1, 2])
def test_mixture_sample_moments(rng, gen, D):
    w, mus, covs = _mixture_params(rng, D)
    x = GaussianMixture(_t(w), _t(mus), _t(covs)).sample(40000, generator=gen)
    assert x.shape == (40000, D)
    mean = w @ mus
    second = sum(w[k] * (covs[k] + np.outer(mus[k], mus[k])) for k in range(len(w)))
    _check_moments(x.numpy(), mean, second - np.outer(mean, mean))


def test_mixture_1d_sample_distribution(gen):
    """Kolmogorov-Smirnov against the mixture CDF sum_k w_k Phi((x - mu_k)/s_k)."""
    w, mus, sds = [0.25, 0.45, 0.3], [-2.0, 0.5, 3.0], [0.4, 0.8, 0.3]
    oracle = GaussianMixture(_t(w), _t(mus)[:, None], _t(np.array(sds) ** 2)[:, None, None])
    x = oracle.sample(20000, generator=gen)[:, 0].numpy()

    def cdf(y):
        return sum(wk * stats.norm.cdf(y, mk, sk) for wk, mk, sk in zip(w, mus, sds))
    assert stats.kstest(x, cdf).pvalue > 1e-3


def test_sample_reproducible(rng):
    w, mus, covs = _mixture_params(rng, 2)
    mix = GaussianMixture(_t(w), _t(mus), _t(covs))
    gauss = GaussianData(_t(mus[0]), _t(covs[0]))
    for oracle in (mix, gauss):
        a = oracle.sample(500, generator=torch.Generator().manual_seed(3))
        b = oracle.sample(500, generator=torch.Generator().manual_seed(3))
        c = oracle.sample(500, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


# --------------------------------------------------------------------------------------
# marginal(t), with_sde
# --------------------------------------------------------------------------------------
def test_marginal_and_with_sde(sde_name, build_sde, truth, close, rng):
    sde = build_sde(sde_name)
    w, mus, covs = _mixture_params(rng, 2)
    mix = GaussianMixture(_t(w), _t(mus), _t(covs)).with_sde(sde)
    gauss = GaussianData(_t(mus[0]), _t(covs[0])).with_sde(sde)
    x = _points(rng, 6, 2)
    t = 0.5
    a, s = float(truth.alpha(sde_name, t)), float(truth.std(sde_name, t))
    m = mix.marginal(t)
    assert isinstance(m, GaussianMixture)
    close(m.log_prob(_t(x)), _marginal_mixture_logpdf(x, w, mus, covs, [a] * 6, [s] * 6),
          1e-11, 1e-11, "mixture.marginal(t).log_prob")
    g = gauss.marginal(t)
    assert isinstance(g, GaussianData)
    expected = stats.multivariate_normal(mean=a * mus[0], cov=a ** 2 * covs[0] + s ** 2 * np.eye(2)
                                         ).logpdf(x)
    close(g.log_prob(_t(x)), expected, 1e-11, 1e-11, "GaussianData.marginal(t).log_prob")
    close(gauss.log_prob(_t(x), t), expected, 1e-11, 1e-11, "with_sde log_prob(x, t)")


# -- what users pass: lists of tensors, nested lists, numpy arrays --------------------------
def test_mixture_parameters_in_any_natural_form_give_the_same_oracle():
    """The README's call (a list of covariance tensors) and nested lists, numpy arrays and
    tensors all build the same mixture, with the same density."""
    import numpy as np
    covs = [torch.eye(2, dtype=torch.float64) * 0.1, torch.eye(2, dtype=torch.float64) * 0.2]
    forms = [
        dict(weights=[0.5, 0.5], means=[[-2.0, 0.0], [2.0, 0.0]], covs=covs),
        dict(weights=np.array([0.5, 0.5]), means=np.array([[-2.0, 0.0], [2.0, 0.0]]),
             covs=np.stack([c.numpy() for c in covs])),
        dict(weights=torch.tensor([0.5, 0.5]), means=[torch.tensor([-2.0, 0.0]),
                                                      torch.tensor([2.0, 0.0])],
             covs=[c.tolist() for c in covs]),
        dict(weights=(0.5, 0.5), means=[np.array([-2.0, 0.0]), [2.0, 0.0]],
             covs=torch.stack(covs)),
    ]
    x = torch.tensor([[0.3, -0.2], [-1.9, 0.1]], dtype=torch.float64)
    logps = [GaussianMixture(**f).log_prob(x) for f in forms]
    for lp in logps[1:]:
        assert torch.equal(lp, logps[0])
    # the density itself, written out: 0.5 N(x; m1, 0.1 I) + 0.5 N(x; m2, 0.2 I)
    def normal(x, m, v):
        return torch.exp(-((x - torch.tensor(m)) ** 2).sum(1) / (2 * v)) / (2 * math.pi * v)
    expected = torch.log(0.5 * normal(x, [-2.0, 0.0], 0.1) + 0.5 * normal(x, [2.0, 0.0], 0.2))
    torch.testing.assert_close(logps[0], expected, rtol=1e-12, atol=1e-12)


def test_malformed_parameters_name_the_argument():
    with pytest.raises(ValueError, match=r"covs must be a rectangular array.*\(2, 2\).*\(3, 3\)"):
        GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [torch.eye(2), torch.eye(3)])
    with pytest.raises(TypeError, match=r"means must be real numbers.*str"):
        GaussianMixture([1.0], "origin", [torch.eye(2)])
    with pytest.raises(TypeError, match=r"cov must be real numbers.*complex"):
        GaussianData(torch.zeros(2), torch.eye(2, dtype=torch.complex128))

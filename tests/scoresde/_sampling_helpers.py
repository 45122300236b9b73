"""Shared helpers of the sampling acceptance tests.

Everything here is written from the mathematics, never from scoresde's samplers:

* the VP-SDE schedule of Song et al. 2021 (App. B) in closed form;
* the exact probability-flow ODE solution for Gaussian data (a linear ODE);
* the exact law of the Euler--Maruyama chain of the reverse SDE for Gaussian data
  (moment recursion: the chain is affine in the state and the noise);
* moment checks with standard errors estimated from the samples;
* a two-sample energy-distance test with a permutation p-value (Szekely & Rizzo 2004);
* a counting wrapper for score functions and a fixed random noise-prediction network.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
from torch import Tensor

SEED = 1234
BETA_MIN, BETA_MAX = 0.1, 20.0

# A 2-D Gaussian mixture with three anisotropic, correlated components.
MIX_WEIGHTS = [0.3, 0.5, 0.2]
MIX_MEANS = [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]]
MIX_COVS = [[[0.30, 0.10], [0.10, 0.20]],
            [[0.20, -0.05], [-0.05, 0.40]],
            [[0.10, 0.00], [0.00, 0.30]]]

# A 2-D anisotropic, correlated Gaussian.
GAUSS_MEAN = [1.0, -0.5]
GAUSS_COV = [[1.0, 0.3], [0.3, 0.2]]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The sampling tests work on tiny tensors ([2000, 2] at most), which gain nothing from
    intra-op threads and slow down badly when the cores are shared; run them on one thread
    (restored afterwards). Modules that import this fixture use it automatically."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# -- the VP-SDE of Song et al. 2021 (eq. 11 and App. B), closed form ------------------------
def vp_log_alpha(t: float, b0: float = BETA_MIN, b1: float = BETA_MAX) -> float:
    """log alpha(t) = -1/2 int_0^t beta(s) ds, beta(s) = b0 + s (b1 - b0)."""
    return -0.25 * t * t * (b1 - b0) - 0.5 * t * b0


def vp_alpha(t: float) -> float:
    return math.exp(vp_log_alpha(t))


def vp_var(t: float) -> float:
    """std(t)^2 = 1 - alpha(t)^2."""
    return -math.expm1(2.0 * vp_log_alpha(t))


def vp_beta(t: float, b0: float = BETA_MIN, b1: float = BETA_MAX) -> float:
    return b0 + t * (b1 - b0)


# -- Gaussian data: the exact probability-flow ODE ---------------------------------------------
def gaussian_pf_ode_exact(mean: Sequence[float], cov, x_T: Tensor, T: float, t: float,
                          alpha: Callable[[float], float] = vp_alpha,
                          var: Callable[[float], float] = vp_var) -> Tensor:
    """The probability-flow ODE dx/dt = f x - g^2/2 score for data N(mu, Sigma), from T to t.

    With Sigma = U diag(lam) U^T, C_k(t) = alpha(t)^2 lam_k + std(t)^2 and
    y = U^T (x - alpha(t) mu), the ODE decouples into dy_k/dt = C_k'(t)/(2 C_k(t)) y_k
    (using C' = 2 f C + g^2 for a linear SDE), so y_k(t) = sqrt(C_k(t)/C_k(T)) y_k(T).
    """
    mu = np.asarray(mean, dtype=np.float64)
    lam, U = np.linalg.eigh(np.asarray(cov, dtype=np.float64))
    c_t = alpha(t) ** 2 * lam + var(t)
    c_T = alpha(T) ** 2 * lam + var(T)
    y = (x_T.detach().cpu().numpy().astype(np.float64) - alpha(T) * mu) @ U
    x_t = alpha(t) * mu + (y * np.sqrt(c_t / c_T)) @ U.T
    return torch.as_tensor(x_t, dtype=x_T.dtype)


def gaussian_marginal_cov(cov, t: float) -> np.ndarray:
    """C(t) = alpha(t)^2 Sigma + std(t)^2 I under the VP-SDE."""
    cov = np.asarray(cov, dtype=np.float64)
    return vp_alpha(t) ** 2 * cov + vp_var(t) * np.eye(cov.shape[0])


def gaussian_score_np(mean, cov, x: np.ndarray, t: float) -> np.ndarray:
    """grad log N(x; alpha mu, C(t)) = -C(t)^{-1} (x - alpha mu) (rows of x)."""
    mu = np.asarray(mean, dtype=np.float64)
    return -np.linalg.solve(gaussian_marginal_cov(cov, t), (x - vp_alpha(t) * mu).T).T


def em_chain_law(mean, cov, ts: Sequence[float], m0: np.ndarray, P0: np.ndarray
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the Euler--Maruyama chain of the reverse VP-SDE
    (Song et al. 2021, eq. 6) with the exact Gaussian score, started from N(m0, P0) at ts[0].

    One step from t to s < t, d = t - s:
        x <- x - d (f(t) x - g(t)^2 score(x, t)) + g(t) sqrt(d) z,  f = -beta/2, g^2 = beta,
    i.e. x <- A x + b + g sqrt(d) z with A = (1 + d beta/2) I - d beta C(t)^{-1} and
    b = d beta alpha(t) C(t)^{-1} mu. The final step adds no noise.
    """
    mu = np.asarray(mean, dtype=np.float64)
    D = mu.shape[0]
    m, P = np.array(m0, dtype=np.float64), np.array(P0, dtype=np.float64)
    n = len(ts) - 1
    for k in range(n):
        t, s = float(ts[k]), float(ts[k + 1])
        d, b = t - s, vp_beta(t)
        Ci = np.linalg.inv(gaussian_marginal_cov(cov, t))
        A = (1.0 + 0.5 * d * b) * np.eye(D) - d * b * Ci
        m = A @ m + d * b * vp_alpha(t) * (Ci @ mu)
        P = A @ P @ A.T + (d * b * np.eye(D) if k < n - 1 else 0.0)
    return m, P


# -- moments with standard errors ----------------------------------------------------------
def moment_report(x: Tensor, mean, cov, k: float = 3.0) -> Tuple[bool, str]:
    """Compare the sample mean and covariance of x [n, D] with (mean, cov) in units of the
    standard errors estimated from the samples: SE(mean_i) = sd_i/sqrt(n) and SE(cov_ij) =
    sd((x_i - m_i)(x_j - m_j))/sqrt(n). Returns (all within k SE, a readable report)."""
    x = x.detach().to(torch.float64)
    n = x.shape[0]
    mean = torch.as_tensor(mean, dtype=torch.float64)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    m = x.mean(0)
    xc = x - m
    S = xc.T @ xc / (n - 1)
    se_m = x.std(0) / math.sqrt(n)
    prods = xc[:, :, None] * xc[:, None, :]
    se_c = prods.std(0) / math.sqrt(n)
    z_m = (m - mean) / se_m
    z_c = (S - cov) / se_c
    ok = bool((z_m.abs() <= k).all() and (z_c.abs() <= k).all())
    report = (f"mean {m.tolist()} vs {mean.tolist()} (z {[round(v, 2) for v in z_m.tolist()]}); "
              f"cov {S.flatten().tolist()} vs {cov.flatten().tolist()} "
              f"(z {[round(v, 2) for v in z_c.flatten().tolist()]})")
    return ok, report


# -- two-sample energy test ----------------------------------------------------------------
def energy_test(x: Tensor, y: Tensor, n_perm: int = 300, seed: int = 0) -> Tuple[float, float]:
    """Energy distance E = 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo 2004) between
    the samples x [n, D] and y [m, D], with the permutation p-value
    (1 + #{E_perm >= E_obs}) / (1 + n_perm). Returns (E_obs, p)."""
    x = x.detach().to(torch.float64)
    y = y.detach().to(torch.float64)
    n, m = x.shape[0], y.shape[0]
    z = torch.cat([x, y])
    dist = torch.cdist(z, z)
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n + m, n_perm + 1, dtype=torch.float64)
    labels[:n, 0] = 1.0
    for j in range(1, n_perm + 1):
        labels[torch.randperm(n + m, generator=g)[:n], j] = 1.0
    # with b = 1 - a: a^T D b = a^T D 1 - a^T D a and b^T D b = 1^T D 1 - 2 a^T D 1 + a^T D a
    a = labels
    da = dist @ a
    aDa = (a * da).sum(0)
    aD1 = dist.sum(0) @ a
    total = dist.sum()
    aDb, bDb = aD1 - aDa, total - 2.0 * aD1 + aDa
    e = 2.0 * aDb / (n * m) - aDa / n ** 2 - bDb / m ** 2
    p = (1.0 + float((e[1:] >= e[0]).sum())) / (1.0 + n_perm)
    return float(e[0]), p


def mixture_moments(weights, means, covs, alpha: float = 1.0, var: float = 0.0
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of sum_k w_k N(alpha mu_k, alpha^2 Sigma_k + var I): the marginal at
    time t of mixture data under x_t = alpha x_0 + std z."""
    w = np.asarray(weights, dtype=np.float64)
    mu = alpha * np.asarray(means, dtype=np.float64)
    cov = alpha ** 2 * np.asarray(covs, dtype=np.float64) + var * np.eye(mu.shape[1])
    mean = w @ mu
    second = np.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :])
    return mean, second - np.outer(mean, mean)


# -- score wrappers and a fixed random network -------------------------------------------------
class CountingScore:
    """Wrap a score function; count its calls and record the times it was asked for."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn
        self.calls = 0
        self.times: List[Tensor] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        self.times.append(t.detach().clone())
        return self.fn(x, t)


class RandomEpsNet:
    """A fixed random nonlinear function eps(x, i) of the state and the integer timestep,
    standing in for a trained noise-prediction network. Records what it receives."""

    def __init__(self, dim: int, seed: int = 7, hidden: int = 16):
        g = torch.Generator().manual_seed(seed)
        kw = dict(generator=g, dtype=torch.float64)
        self.w1 = torch.randn(dim, hidden, **kw) / math.sqrt(dim)
        self.w2 = torch.randn(hidden, dim, **kw) / math.sqrt(hidden)
        self.freq = torch.rand(hidden, **kw) * 0.02
        self.phase = torch.rand(hidden, **kw) * 2 * math.pi
        self.t_inputs: List[Tensor] = []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.t_inputs.append(t.detach().clone())
        tf = t.to(torch.float64)[:, None]
        h = torch.tanh(x @ self.w1.to(x) + torch.sin(tf * self.freq + self.phase).to(x))
        return 0.5 * (h @ self.w2.to(x)) + 0.8 * x * torch.sqrt(tf / 1000.0 + 0.01).to(x)


def fit_slope(steps: Sequence[int], errors: Sequence[float]) -> float:
    """Least-squares slope of log(error) against log(steps), negated: the order p in
    error ~ C steps^-p."""
    return -float(np.polyfit(np.log(np.asarray(steps, dtype=np.float64)),
                             np.log(np.asarray(errors, dtype=np.float64)), 1)[0])

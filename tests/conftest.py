"""Shared test set-up: float64 by default, seeded generators, the SDEs under test and
their closed-form truth.

The closed forms below are written from the papers (Song et al. 2021, App. B; Ho et al.
2020; Nichol & Dhariwal 2021, eq. 17), in numpy, and never call scoresde: tests compare the
implementation against them.
"""
from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np
import pytest
import torch

# `pytest` (unlike `python -m pytest`) puts tests/ first on sys.path, where the test folder
# tests/scoresde/ would shadow the installed package as an empty namespace package; put the
# repository root in front so that `import scoresde` is always the real package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)

torch.set_default_dtype(torch.float64)

SEED = 20240611

# Parameters of the SDEs under test.
BETA_MIN, BETA_MAX = 0.1, 20.0
SIGMA_MIN, SIGMA_MAX = 0.01, 50.0
COS_S, COS_BETA_MAX = 0.008, 999.0
N_DISCRETE = 1000

SDE_NAMES = ("vp", "subvp", "ve", "cosine", "ddpm_linear", "ddpm_cosine")
CONTINUOUS_NAMES = ("vp", "subvp", "ve", "cosine")
DISCRETE_NAMES = ("ddpm_linear", "ddpm_cosine")
VP_TYPE_NAMES = ("vp", "cosine", "ddpm_linear", "ddpm_cosine")


@pytest.fixture(autouse=True)
def _float64_default():
    """Every test runs with torch's default dtype float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU torch generator (fresh for each test)."""
    return torch.Generator().manual_seed(SEED)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator (fresh for each test)."""
    return np.random.default_rng(SEED)


@functools.lru_cache(maxsize=None)
def _build_sde(name: str):
    import scoresde as sd  # imported lazily so that tests/solvers never depends on it

    if name == "vp":
        return sd.VPSDE(beta_min=BETA_MIN, beta_max=BETA_MAX)
    if name == "subvp":
        return sd.SubVPSDE(beta_min=BETA_MIN, beta_max=BETA_MAX)
    if name == "ve":
        return sd.VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    if name == "cosine":
        return sd.CosineVPSDE(s=COS_S)
    if name == "ddpm_linear":
        return sd.DiscreteVPSDE.linear(N_DISCRETE)
    if name == "ddpm_cosine":
        return sd.DiscreteVPSDE.cosine(N_DISCRETE)
    raise KeyError(name)


@pytest.fixture
def build_sde():
    """build_sde(name) -> the (cached) scoresde SDE called ``name`` in SDE_NAMES."""
    return _build_sde


@pytest.fixture(params=SDE_NAMES)
def sde_name(request) -> str:
    return request.param


@pytest.fixture(params=CONTINUOUS_NAMES)
def continuous_name(request) -> str:
    return request.param


@pytest.fixture(params=DISCRETE_NAMES)
def discrete_name(request) -> str:
    return request.param


@pytest.fixture(params=VP_TYPE_NAMES)
def vp_name(request) -> str:
    return request.param


# --------------------------------------------------------------------------------------
# Closed-form truth (numpy, float64)
# --------------------------------------------------------------------------------------
def ddpm_linear_betas(N: int, beta_start=None, beta_end=None) -> np.ndarray:
    """Ho et al. 2020: betas = linspace(beta_start, beta_end, N); defaults 0.1/N, 20/N."""
    beta_start = 0.1 / N if beta_start is None else beta_start
    beta_end = 20.0 / N if beta_end is None else beta_end
    return np.linspace(beta_start, beta_end, N, dtype=np.float64)


def ddpm_cosine_betas(N: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: beta_i = min(1 - abar((i+1)/N)/abar(i/N), 0.999)."""
    def h(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.array([min(1.0 - h((i + 1) / N) / h(i / N), max_beta) for i in range(N)])


class ClosedForm:
    """alpha(t), std(t), beta(t), f(t), g(t) of each SDE under test, from the papers.

    For the discrete schedules the values are known exactly only at index times
    t_i = (i + 1)/N (and t = 0); asking at any other time is an error of the test.
    """

    BETA_MIN, BETA_MAX = BETA_MIN, BETA_MAX
    SIGMA_MIN, SIGMA_MAX = SIGMA_MIN, SIGMA_MAX
    COS_S, COS_BETA_MAX = COS_S, COS_BETA_MAX
    N = N_DISCRETE
    ddpm_linear_betas = staticmethod(ddpm_linear_betas)
    ddpm_cosine_betas = staticmethod(ddpm_cosine_betas)

    @staticmethod
    def discrete_betas(name: str, N: int = N_DISCRETE) -> np.ndarray:
        if name == "ddpm_linear":
            return ddpm_linear_betas(N)
        if name == "ddpm_cosine":
            return ddpm_cosine_betas(N)
        raise KeyError(name)

    @staticmethod
    def index_of(t, N: int = N_DISCRETE) -> np.ndarray:
        """i + 1 for an index time t_i (0 for t = 0)."""
        t = np.asarray(t, dtype=np.float64)
        k = np.rint(t * N).astype(np.int64)
        assert np.allclose(k, t * N, rtol=0, atol=1e-9), "not an index time"
        return k

    @staticmethod
    def cosine_clip_time(s: float = COS_S, beta_max: float = COS_BETA_MAX) -> float:
        # beta(t) = pi/(1+s) tan(pi/2 (t+s)/(1+s)) = beta_max
        return (1 + s) * 2 / math.pi * math.atan(beta_max * (1 + s) / math.pi) - s

    @staticmethod
    def cosine_log_alphabar(t, s: float = COS_S, beta_max: float = COS_BETA_MAX):
        t = np.asarray(t, dtype=np.float64)
        tc = ClosedForm.cosine_clip_time(s, beta_max)

        def la(u):
            return 2 * np.log(np.cos((u + s) / (1 + s) * np.pi / 2)) \
                - 2 * np.log(np.cos(s / (1 + s) * np.pi / 2))
        inside = la(np.minimum(t, tc))
        return np.where(t <= tc, inside, la(tc) - beta_max * (t - tc))

    @staticmethod
    def log_alpha(name: str, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if name in ("vp", "subvp"):
            # -1/2 int_0^t beta, beta(s) = b0 + s (b1 - b0)
            return -0.25 * t ** 2 * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN
        if name == "ve":
            return np.zeros_like(t)
        if name == "cosine":
            return 0.5 * ClosedForm.cosine_log_alphabar(t)
        if name in DISCRETE_NAMES:
            betas = ClosedForm.discrete_betas(name)
            log_abar = np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
            return 0.5 * log_abar[ClosedForm.index_of(t)]
        raise KeyError(name)

    @staticmethod
    def alpha(name: str, t) -> np.ndarray:
        return np.exp(ClosedForm.log_alpha(name, t))

    @staticmethod
    def std(name: str, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if name == "ve":
            return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t
        la = ClosedForm.log_alpha(name, t)
        if name == "subvp":
            return -np.expm1(2 * la)          # 1 - alpha^2
        return np.sqrt(-np.expm1(2 * la))     # sqrt(1 - alpha^2)

    @staticmethod
    def beta(name: str, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if name in ("vp", "subvp"):
            return BETA_MIN + t * (BETA_MAX - BETA_MIN)
        if name == "cosine":
            u = (t + COS_S) / (1 + COS_S) * np.pi / 2
            return np.minimum(np.pi / (1 + COS_S) * np.tan(np.minimum(u, np.pi / 2 - 1e-9)),
                              COS_BETA_MAX)
        raise KeyError(name)

    @staticmethod
    def drift_coef(name: str, t) -> np.ndarray:
        if name == "ve":
            return np.zeros_like(np.asarray(t, dtype=np.float64))
        return -0.5 * ClosedForm.beta(name, t)

    @staticmethod
    def diffusion(name: str, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        if name == "ve":
            return ClosedForm.std(name, t) * math.sqrt(2 * math.log(SIGMA_MAX / SIGMA_MIN))
        if name == "subvp":
            B = -2 * ClosedForm.log_alpha(name, t)           # int_0^t beta
            return np.sqrt(ClosedForm.beta(name, t) * -np.expm1(-2 * B))
        return np.sqrt(ClosedForm.beta(name, t))

    @staticmethod
    def prior_std(name: str) -> float:
        return SIGMA_MAX if name == "ve" else 1.0


@pytest.fixture
def truth():
    return ClosedForm


def assert_close(actual, expected, rtol, atol, what=""):
    """|actual - expected| <= atol + rtol |expected| elementwise, with a readable report."""
    a = np.asarray(actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else actual,
                   dtype=np.float64)
    e = np.asarray(expected.detach().cpu().numpy() if isinstance(expected, torch.Tensor)
                   else expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    err = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    bad = ~(err <= tol)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err - tol, -np.inf)), a.shape)
        raise AssertionError(
            f"{what}: {bad.sum()} of {a.size} entries off; worst at {i}: got {a[i]!r}, "
            f"expected {e[i]!r} (|diff| {err[i]:.3e} > tol {tol[i]:.3e}); "
            f"max |diff| {err.max():.3e}")


@pytest.fixture
def close():
    """close(actual, expected, rtol, atol, what) asserts elementwise closeness."""
    return assert_close


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests run thousands of tiny tensor ops, for which torch's intra-op thread pool only
    adds overhead (5-20x on a busy 2-core machine); one thread for the session, restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

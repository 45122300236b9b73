"""Time grids for fixed-step samplers, from T down to the end time.

    uniform    t_k = T + (eps - T) k/n                       (Song et al. 2021)
    quadratic  t_k = eps + (T - eps) (1 - k/n)^2             (dense near eps; Song, Meng & Ermon 2021, App. D.1)
    logsnr     log_snr(t_k) uniform in k between log_snr(T) and log_snr(eps), log_snr = log(alpha^2/std^2)
               = 2 lambda (so lambda = log(alpha/std) is uniform too; Lu et al. 2022, Sec. 3.3)
    karras     std(t_k)/alpha(t_k) = (s_max^(1/rho) + k/n (s_min^(1/rho) - s_max^(1/rho)))^rho,
               rho = 7 (Karras et al. 2022, eq. 5)

For a DiscreteVPSDE the DDPM samplers use index times instead: ``index_grid``.
"""
from __future__ import annotations

import math
from typing import Union

import torch
from torch import Tensor

from ._validation import TimeLike, check_choice, check_int, check_real
from .sdes import VESDE, VPSDE, DiscreteVPSDE, SDE

GRIDS = ("uniform", "quadratic", "logsnr", "karras")


def _invert_monotone(fn, targets: Tensor, lo: float, hi: float, increasing: bool,
                     iters: int = 100) -> Tensor:
    """Solve fn(t) = target for t in [lo, hi] by bisection (fn monotone); float64.

    The iteration is a function of (a, b) alone, so once an iteration leaves every bracket
    as it was (the brackets have shrunk to adjacent floats) the remaining ones would too:
    it stops there, with the same result as running all ``iters`` (about 60 instead of 100
    evaluations of fn on [1e-12, 1])."""
    a = torch.full_like(targets, lo)
    b = torch.full_like(targets, hi)
    for _ in range(iters):
        m = 0.5 * (a + b)
        below = fn(m) < targets
        go_right = below if increasing else ~below
        a_next = torch.where(go_right, m, a)
        b_next = torch.where(go_right, b, m)
        if torch.equal(a_next, a) and torch.equal(b_next, b):
            break
        a, b = a_next, b_next
    return 0.5 * (a + b)


def _scalar(t: float) -> Tensor:
    return torch.tensor([t], dtype=torch.float64)


def noise_ratio(sde: SDE, t: Tensor) -> Tensor:
    """std(t)/alpha(t): EDM's sigma (Karras et al. 2022, Sec. 2), increasing in t."""
    return _noise_ratio(sde, sde.time(t))


def _noise_ratio(sde: SDE, t: Tensor) -> Tensor:
    """:func:`noise_ratio` for a validated [n] time tensor (no check: the bisections)."""
    alpha, std = sde._marginal_coeffs(t)
    return std / alpha


def sigma_from_time(sde: SDE, t: TimeLike) -> Tensor:
    """k-diffusion's / EDM's sigma = std(t)/alpha(t) at times t (Karras et al. 2022, Sec. 2:
    x~ = x_t/alpha = x_0 + sigma z), [batch], increasing in t."""
    return noise_ratio(sde, t)


def time_from_sigma(sde: SDE, sigma: Union[Tensor, float]) -> Tensor:
    """The time t with std(t)/alpha(t) = sigma, shaped, typed and placed like ``sigma``.

    Closed form for the VESDE (sigma = sigma_min (sigma_max/sigma_min)^t, Song et al. 2021,
    eq. 30) and the linear VPSDE (alphabar = 1/(1 + sigma^2) = exp(-(b0 t + (b1 - b0) t^2/2)),
    solved as t = -2 l / (b0 + sqrt(b0^2 - 2 (b1 - b0) l)), l = log alphabar, without
    cancellation); bisection to float64 precision for the others. sigma must lie in
    [sigma(0), sigma(T)] (to 1e-6 relative, which lets a float32-rounded sigma(T) through;
    it is clamped), else a ValueError naming both ends.
    """
    like = sigma if isinstance(sigma, Tensor) else torch.as_tensor(sigma, dtype=torch.float64)
    if like.is_complex() or not like.is_floating_point():
        raise TypeError(f"sigma must be a floating-point tensor or a number, got dtype "
                        f"{like.dtype}")
    s = like.detach().to(device="cpu", dtype=torch.float64).reshape(-1)
    ends = noise_ratio(sde, torch.tensor([0.0, sde.T], dtype=torch.float64))
    lo, hi = float(ends[0]), float(ends[1])
    bad = ~((s >= lo * (1 - 1e-6)) & (s <= hi * (1 + 1e-6)))
    if bad.any():
        raise ValueError(f"sigma must lie in [sigma(0), sigma(T)] = [{lo:.6g}, {hi:.6g}] for "
                         f"{type(sde).__name__} (sigma = std/alpha), got "
                         f"{s[bad][0].item():.6g}; choose sigma_min and sigma_max in that range")
    s = s.clamp(lo, hi)
    if isinstance(sde, VESDE):
        t = torch.log(s / sde.sigma_min) / math.log(sde.sigma_max / sde.sigma_min)
    elif isinstance(sde, VPSDE):
        b0, db = sde.beta_min, sde.beta_max - sde.beta_min
        la = -torch.log1p(s ** 2)
        t = -2.0 * la / (b0 + torch.sqrt(b0 ** 2 - 2.0 * db * la))
    else:
        t = torch.where(s > lo, time_from_noise_ratio(sde, s, t_min=0.0), torch.zeros_like(s))
    return t.clamp(0.0, sde.T).reshape(like.shape).to(like)


def time_from_log_snr(sde: SDE, lam: Tensor, t_min: float = 1e-12) -> Tensor:
    """t with sde.log_snr(t) = lam (float64 [n]), by bisection on [t_min, T]."""
    return _invert_monotone(sde._log_snr, lam.to(torch.float64), t_min, sde.T, increasing=False)


def time_from_noise_ratio(sde: SDE, sigma: Tensor, t_min: float = 1e-12) -> Tensor:
    """t with std(t)/alpha(t) = sigma (float64 [n]), by bisection on [t_min, T]."""
    return _invert_monotone(lambda t: _noise_ratio(sde, t), sigma.to(torch.float64), t_min,
                            sde.T, increasing=True)


def time_grid(sde: SDE, steps: int, eps: float, kind: str = "uniform",
              rho: float = 7.0) -> Tensor:
    """A float64 grid [steps + 1] from t_0 = T down to t_steps = eps (both included)."""
    steps = check_int("steps", steps, minimum=1)
    eps = check_real("eps", eps, nonnegative=True)
    if not eps < sde.T:
        raise ValueError(f"eps must be < T = {sde.T}, got {eps}")
    check_choice("grid", kind, GRIDS)
    T = sde.T
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    lo = max(eps, 1e-12)
    if kind == "uniform":
        ts = T + (eps - T) * u
    elif kind == "quadratic":
        ts = eps + (T - eps) * (1.0 - u) ** 2
    elif kind == "logsnr":
        lam_T, lam_eps = sde.log_snr(_scalar(T)), sde.log_snr(_scalar(lo))
        ts = time_from_log_snr(sde, lam_T + u * (lam_eps - lam_T), lo)
    else:
        rho = check_real("rho", rho, positive=True)
        s_max, s_min = noise_ratio(sde, _scalar(T)), noise_ratio(sde, _scalar(lo))
        sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        ts = time_from_noise_ratio(sde, sig, lo)
    ts[0], ts[-1] = T, eps
    return ts


def index_grid(sde: DiscreteVPSDE, steps: int, kind: str = "uniform") -> Tensor:
    """DDPM/DDIM grid: ``steps`` distinct index times from t_{N-1} = T down to t_0, then 0.

    Indices are round(linspace(N-1, 0, steps)) ("uniform") or N-1 - round((N-1) u^2)
    reversed ("quadratic", dense near 0). Returns a float64 tensor [steps + 1] whose last
    entry is 0: the final update produces x_0 (DDPM Algorithm 2, DDIM eq. 12 with alphabar_0 = 1).
    """
    steps = check_int("steps", steps, minimum=1)
    if steps > sde.N:
        raise ValueError(f"steps must be <= N = {sde.N} for a DiscreteVPSDE, got {steps}")
    check_choice("grid", kind, ("uniform", "quadratic"))
    u = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    if kind == "uniform":
        idx = torch.round((sde.N - 1) * (1.0 - u))
    else:
        idx = torch.round((sde.N - 1) * (1.0 - u) ** 2)
    idx = torch.unique(idx.long())  # ascending, distinct
    if idx.numel() != steps:
        raise ValueError(f"grid={kind!r} with steps={steps} gives repeated indices for "
                         f"N = {sde.N}; use fewer steps or grid='uniform'")
    ts = sde.index_to_time(idx.flip(0))
    return torch.cat([ts, ts.new_zeros(1)])

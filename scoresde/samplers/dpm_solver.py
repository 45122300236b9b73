"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): exponential integrators
for the probability-flow ODE in the half log-SNR lambda = log(alpha/std).

With x_t = alpha_t x_0 + std_t eps, the PF-ODE's linear part is solved exactly and only the
network term is approximated by a Taylor expansion in lambda. For a step from s down to t,
h = lambda_t - lambda_s > 0, and eps_s = eps(x_s, s), x0_s = x0(x_s, s):

  DPM-Solver-1     x_t = (alpha_t/alpha_s) x_s - std_t (e^h - 1) eps_s           (Lu 2022a, eq. 3.7)
  DPM-Solver++(1)  x_t = (std_t/std_s) x_s - alpha_t (e^-h - 1) x0_s             (Lu 2022b, eq. 9)

both equal to DDIM with eta = 0. Higher orders are in the functions below. The formulas
use only alpha and std, so they apply to every SDE here, including a DiscreteVPSDE (whose
network then receives the rounded or fractional index of each intermediate time).
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
from torch import Tensor

from .._shapes import batch_time, batch_view, scalar_time
from ..score import ScoreFn, call_score
from ..sdes import SDE


class _Model:
    """eps- and x0-predictions of a score at a time, with alpha, std and lambda, on x's dtype.

    Coefficients are computed once per time (not per sample) and reused: ``eps`` and ``x0``
    take the step's alpha and std, and the multistep solver keeps those of t_{i+1} for the
    next step, whose start time it is.
    """

    def __init__(self, sde: SDE, score: ScoreFn):
        self.sde, self.score = sde, score

    def coeffs(self, t: Tensor, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        alpha, std = self.sde._marginal_coeffs(scalar_time(batch_time(t, x)))
        return batch_view(alpha, x), batch_view(std, x), batch_view(torch.log(alpha / std), x)

    def eps(self, x: Tensor, t: Tensor, std: Tensor) -> Tensor:
        return -std * call_score(self.score, x, batch_time(t, x))

    def x0(self, x: Tensor, t: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
        return (x + std ** 2 * call_score(self.score, x, batch_time(t, x))) / alpha


def singlestep_step(sde: SDE, score: ScoreFn, order: int, inner: Tensor) -> Callable:
    """A solvers step for singlestep DPM-Solver-``order`` (Lu 2022a, Alg. 1, 4, 5).

    ``inner`` [n_steps, order - 1] holds the intermediate times s_1 (and s_2) of each step,
    at lambda_s + r h with r = 1/2 (order 2) or r = 1/3, 2/3 (order 3), precomputed.
    """
    model = _Model(sde, score)
    count = [0]
    start: List[Tuple[Tensor, Tensor, Tensor]] = []  # coefficients of the next step's start

    def step(x: Tensor, s: Tensor, t: Tensor, noise) -> Tensor:
        i = count[0]
        count[0] += 1
        a_s, sd_s, lam_s = start.pop() if start else model.coeffs(s, x)
        a_t, sd_t, lam_t = model.coeffs(t, x)
        start.append((a_t, sd_t, lam_t))
        h = lam_t - lam_s
        e_s = model.eps(x, s, sd_s)
        if order == 1:  # eq. 3.7
            return a_t / a_s * x - sd_t * torch.expm1(h) * e_s
        if order == 2:  # DPM-Solver-2, Alg. 4 with r1 = 1/2
            r1 = 0.5
            s1 = inner[i, 0]
            a1, sd1, _ = model.coeffs(s1, x)
            u = a1 / a_s * x - sd1 * torch.expm1(r1 * h) * e_s
            d = model.eps(u, s1, sd1) - e_s
            return a_t / a_s * x - sd_t * torch.expm1(h) * e_s - sd_t / (2 * r1) * torch.expm1(h) * d
        # DPM-Solver-3, Alg. 5 with r1 = 1/3, r2 = 2/3
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        s1, s2 = inner[i, 0], inner[i, 1]
        a1, sd1, _ = model.coeffs(s1, x)
        a2, sd2, _ = model.coeffs(s2, x)
        u1 = a1 / a_s * x - sd1 * torch.expm1(r1 * h) * e_s
        d1 = model.eps(u1, s1, sd1) - e_s
        u2 = (a2 / a_s * x - sd2 * torch.expm1(r2 * h) * e_s
              - sd2 * r2 / r1 * (torch.expm1(r2 * h) / (r2 * h) - 1.0) * d1)
        d2 = model.eps(u2, s2, sd2) - e_s
        return (a_t / a_s * x - sd_t * torch.expm1(h) * e_s
                - sd_t / r2 * (torch.expm1(h) / h - 1.0) * d2)

    return step


def inner_times(sde: SDE, ts: Tensor, order: int) -> Tensor:
    """Intermediate times [len(ts) - 1, order - 1] of singlestep DPM-Solver at lambda_s + r h."""
    from ..grids import time_from_log_snr
    if order == 1:
        return ts.new_zeros(len(ts) - 1, 0)
    rs = [0.5] if order == 2 else [1.0 / 3.0, 2.0 / 3.0]
    lam = 0.5 * sde.log_snr(ts.to(torch.float64).clamp(min=1e-12))
    h = lam[1:] - lam[:-1]
    targets = torch.stack([lam[:-1] + r * h for r in rs], -1)
    return time_from_log_snr(sde, 2.0 * targets.reshape(-1)).reshape(targets.shape).to(ts)


def multistep_step(sde: SDE, score: ScoreFn, order: int, n_steps: int, data_prediction: bool,
                   lower_order_final: bool = True) -> Callable:
    """A solvers step for multistep DPM-Solver (Lu 2022b, Alg. 2 / App. B) or DPM-Solver++.

    Step i uses order min(order, i + 1) (warm-up from the stored history) and, with
    ``lower_order_final``, min(order, n_steps - i) near the end, which keeps few-step
    sampling stable (Lu 2022b, Sec. 5). One network evaluation per step.
    """
    model = _Model(sde, score)
    hist: List[Tuple[Tensor, Tensor]] = []  # (lambda, model output) at previous grid times
    count = [0]
    start: List[Tuple[Tensor, Tensor, Tensor]] = []  # coefficients of the next step's start

    def step(x: Tensor, s: Tensor, t: Tensor, noise) -> Tensor:
        i = count[0]
        count[0] += 1
        k = min(order, i + 1)
        if lower_order_final:
            k = min(k, n_steps - i)
        a_s, sd_s, lam_s = start.pop() if start else model.coeffs(s, x)
        a_t, sd_t, lam_t = model.coeffs(t, x)
        start.append((a_t, sd_t, lam_t))
        m0 = model.x0(x, s, a_s, sd_s) if data_prediction else model.eps(x, s, sd_s)
        hist.append((lam_s, m0))
        del hist[:-3]
        h = lam_t - lam_s
        # Backward differences in lambda with r_j = (past step j)/h:
        #   D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1) ~ h m'  and  D2 ~ h^2 m''  (to O(h^3)).
        # The exact step's Taylor terms are alpha_t h^(k+1) phi_(k+1)(-h) m^(k) with
        # phi_(k+1)(z) = int_0^1 e^((1-u) z) u^k / k! du, i.e. phi_2 D1 and phi_3 D2 below
        # (Lu 2022b, eq. 8 expanded). Note: the reference implementations (dpm-solver,
        # diffusers, k-diffusion) use D2 = (D1_0 - D1_1)/(r0 + r1) ~ h^2 m''/2, half the
        # weight phi_3 needs, which leaves an O(h^3) local error: their 3M converges at
        # order 2 (fitted slopes 1.4 for ++ and 2.2 for noise prediction on the quadratic
        # grid in tests/scoresde/test_fewstep_samplers.py; about 3 with the factor 2 here).
        if k >= 2:
            lam1, m1 = hist[-2]
            r0 = (lam_s - lam1) / h
            d1_0 = (m0 - m1) / r0
        if k == 3:
            lam2, m2 = hist[-3]
            r1 = (lam1 - lam2) / h
            d1_1 = (m1 - m2) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
        if data_prediction:
            # DPM-Solver++: x_t = (std_t/std_s) x - alpha_t (e^-h - 1) x0 + corrections
            phi1 = torch.expm1(-h)
            out = sd_t / sd_s * x - a_t * phi1 * m0
            if k == 2:    # 2M (Lu 2022b, Alg. 2): D = x0_s + (x0_s - x0_prev)/(2 r0)
                out = out - 0.5 * a_t * phi1 * d1_0
            elif k == 3:  # 3M (Lu 2022b, App. B, third-order multistep)
                out = out + a_t * (phi1 / h + 1.0) * d1 - a_t * ((phi1 + h) / h ** 2 - 0.5) * d2
            return out
        # DPM-Solver (noise prediction): x_t = (alpha_t/alpha_s) x - std_t (e^h - 1) eps + ...
        phi1 = torch.expm1(h)
        out = a_t / a_s * x - sd_t * phi1 * m0
        if k == 2:        # multistep DPM-Solver-2 (Lu 2022b, App. B)
            out = out - 0.5 * sd_t * phi1 * d1_0
        elif k == 3:      # multistep DPM-Solver-3
            out = out - sd_t * (phi1 / h - 1.0) * d1 - sd_t * ((phi1 - h) / h ** 2 - 0.5) * d2
        return out

    return step

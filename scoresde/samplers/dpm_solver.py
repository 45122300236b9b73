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

from typing import Callable, Dict, List

import torch
from torch import Tensor

from solvers import Update

from ..grids import time_from_log_snr
from ..score import ScoreFn, call_score, eps_from_score, x0_from_score
from ..sdes import SDE
from .grid import Grid

#: Intermediate points of singlestep DPM-Solver-k, as fractions r of the step in lambda
#: (Lu 2022a, Alg. 4 with r1 = 1/2; Alg. 5 with r1 = 1/3, r2 = 2/3).
_INNER_R = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}


def singlestep_orders(steps: int, order: int) -> List[int]:
    """The order of each singlestep interval for ``steps`` network evaluations: as many
    steps of ``order`` as fit, then one step of the remainder (DPM-Solver's own API counts
    steps in evaluations too; its reference code lowers the last two orders instead)."""
    return [order] * (steps // order) + ([steps % order] if steps % order else [])


def inner_grid(sde: SDE, ts: Tensor, orders: List[int], like: Tensor) -> Grid:
    """The intermediate times of every singlestep interval, [n_steps * 2] (two slots per
    interval, the unused ones at the interval's start), at lambda_s + r h, with coefficients."""
    lam = 0.5 * sde.log_snr(ts.to(torch.float64).clamp(min=1e-12))
    h = lam[1:] - lam[:-1]
    inner = ts[:-1].to(torch.float64)[:, None].repeat(1, 2)
    for k in set(orders) - {1}:
        rows = torch.tensor([o == k for o in orders])
        targets = torch.stack([lam[:-1] + r * h for r in _INNER_R[k]], -1)
        times = time_from_log_snr(sde, 2.0 * targets.reshape(-1)).reshape(targets.shape)
        inner[rows, :k - 1] = times[rows]
    return Grid.build(sde, inner.reshape(-1), like)


def singlestep_step(sde: SDE, score: ScoreFn, grid: Grid, orders: List[int],
                    inner: Grid) -> Callable:
    """A solvers step for singlestep DPM-Solver (Lu 2022a, Alg. 1, 4, 5): interval i uses
    ``orders[i]`` evaluations, at t_i and at the intermediate times ``inner`` (2i, 2i + 1)."""
    def eps(x: Tensor, g: Grid, j: int, std: Tensor) -> Tensor:
        return eps_from_score(call_score(score, x, g.time(j, x)), std)

    def step(i: int, x: Tensor, s: Tensor, t: Tensor, noise) -> Update:
        order = orders[i]
        a_s, sd_s, lam_s = grid.at(i, x)
        a_t, sd_t, lam_t = grid.at(i + 1, x)
        h = lam_t - lam_s
        e_s = eps(x, grid, i, sd_s)
        if order == 1:  # eq. 3.7
            return Update(a_t / a_s * x - sd_t * torch.expm1(h) * e_s)
        if order == 2:  # DPM-Solver-2, Alg. 4 with r1 = 1/2
            r1 = 0.5
            a1, sd1, _ = inner.at(2 * i, x)
            u = a1 / a_s * x - sd1 * torch.expm1(r1 * h) * e_s
            d = eps(u, inner, 2 * i, sd1) - e_s
            return Update(a_t / a_s * x - sd_t * torch.expm1(h) * e_s
                          - sd_t / (2 * r1) * torch.expm1(h) * d)
        # DPM-Solver-3, Alg. 5 with r1 = 1/3, r2 = 2/3
        r1, r2 = _INNER_R[3]
        a1, sd1, _ = inner.at(2 * i, x)
        a2, sd2, _ = inner.at(2 * i + 1, x)
        u1 = a1 / a_s * x - sd1 * torch.expm1(r1 * h) * e_s
        d1 = eps(u1, inner, 2 * i, sd1) - e_s
        u2 = (a2 / a_s * x - sd2 * torch.expm1(r2 * h) * e_s
              - sd2 * r2 / r1 * (torch.expm1(r2 * h) / (r2 * h) - 1.0) * d1)
        d2 = eps(u2, inner, 2 * i + 1, sd2) - e_s
        return Update(a_t / a_s * x - sd_t * torch.expm1(h) * e_s
                      - sd_t / r2 * (torch.expm1(h) / h - 1.0) * d2)

    return step


def multistep_step(sde: SDE, score: ScoreFn, grid: Grid, order: int, data_prediction: bool,
                   lower_order_final: bool = True) -> Callable:
    """A solvers step for multistep DPM-Solver (Lu 2022b, Alg. 2 / App. B) or DPM-Solver++.

    Step i uses order min(order, i + 1) (warm-up from the stored history) and, with
    ``lower_order_final``, min(order, n_steps - i) near the end, which keeps few-step
    sampling stable (Lu 2022b, Sec. 5). One network evaluation per step; the model outputs
    of the last three grid times are kept, by step index.
    """
    n_steps = len(grid) - 1
    outputs: Dict[int, Tensor] = {}  # step index -> model output at t_i

    def step(i: int, x: Tensor, s: Tensor, t: Tensor, noise) -> Update:
        k = min(order, i + 1)
        if lower_order_final:
            k = min(k, n_steps - i)
        a_s, sd_s, lam_s = grid.at(i, x)
        a_t, sd_t, lam_t = grid.at(i + 1, x)
        sc = call_score(score, x, grid.time(i, x))
        m0 = x0_from_score(x, sc, a_s, sd_s) if data_prediction else eps_from_score(sc, sd_s)
        outputs[i] = m0
        outputs.pop(i - 3, None)
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
            lam1, m1 = grid.at(i - 1, x)[2], outputs[i - 1]
            r0 = (lam_s - lam1) / h
            d1_0 = (m0 - m1) / r0
        if k == 3:
            lam2, m2 = grid.at(i - 2, x)[2], outputs[i - 2]
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
            return Update(out)
        # DPM-Solver (noise prediction): x_t = (alpha_t/alpha_s) x - std_t (e^h - 1) eps + ...
        phi1 = torch.expm1(h)
        out = a_t / a_s * x - sd_t * phi1 * m0
        if k == 2:        # multistep DPM-Solver-2 (Lu 2022b, App. B)
            out = out - 0.5 * sd_t * phi1 * d1_0
        elif k == 3:      # multistep DPM-Solver-3
            out = out - sd_t * (phi1 / h - 1.0) * d1 - sd_t * ((phi1 - h) / h ** 2 - 0.5) * d2
        return Update(out)

    return step

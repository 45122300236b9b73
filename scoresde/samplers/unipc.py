"""UniPC (Zhao et al. 2023, "UniPC: a unified predictor-corrector framework for fast
sampling of diffusion models"): multistep DPM-Solver++ with a corrector that costs no
network evaluation. Data prediction, B(h) = e^h - 1 (the "bh2" variant of the authors'
code, ``multistep_uni_pc_bh_update``).

With m_j = x0(x_j, t_j), lambda = log(alpha/std), a step from s = t_i to t = t_{i+1},
h = lambda_t - lambda_s > 0, the previous outputs m_{i-j} at r_j = (lambda_{i-j} - lambda_s)/h
(< 0) and their differences D_j = (m_{i-j} - m_i)/r_j:

  base    x~_t = (std_t/std_s) x_s - alpha_t (e^-h - 1) m_i                 (DPM-Solver++(1))
  UniP-p  x_t  = x~_t - alpha_t B(h) sum_{j<p} a_j D_j                       (Zhao et al., Sec. 3.2)
  UniC-p  x^c_t = x~_t - alpha_t B(h) (sum_{j<p} a^c_j D_j + a^c_p (m_t - m_i))   (Sec. 3.1)

where m_t = x0(x_t, t) is the evaluation the next step makes anyway, so the corrected
x^c_t (order p + 1) is free. The weights solve R_p a = g_p (Zhao et al., Alg. 1/2: rows
R_p[k] = (r_1^k, ..., r_{p-1}^k, 1^k), k = 0..p-1; g_p[k] = (k+1)! h~ phi_{k+2}(h~) / B(h)
with h~ = -h, phi_{k+1}(z) = (e^z - sum_{j<=k} z^j/j!)/z^(k+1)); the predictor uses the
leading (p-1) x (p-1) block. As in the authors' code, UniP-2 uses a_1 = 1/2 (it is then
DPM-Solver++(2M)) and UniC-1 uses a^c_1 = 1/2. The last step is not corrected (no
evaluation follows it).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import torch
from torch import Tensor

from solvers import Update

from ..score import ScoreFn, call_score, x0_from_score
from ..sdes import SDE
from .grid import Grid


def step_orders(n_steps: int, order: int, lower_order_final: bool) -> List[int]:
    """The order p of each step: warm-up min(order, i + 1), and with ``lower_order_final``
    min(order, n_steps - i) over the last steps (as DPM-Solver++ and the UniPC code)."""
    return [min(order, i + 1, n_steps - i if lower_order_final else order)
            for i in range(n_steps)]


def weights(h: float, rks: List[float], corrector: bool) -> List[float]:
    """a (UniP-p, p = len(rks) + 1) or a^c (UniC-p) for the step h and the past r_j (float64)."""
    p = len(rks) + 1
    hh = -h
    b_h = math.expm1(hh)                       # B(h) = e^h - 1 of the data-prediction step
    g, hphi, fact = [], math.expm1(hh) / hh - 1.0, 1.0     # hphi = h~ phi_2(h~)
    for k in range(1, p + 1):
        g.append(hphi * fact / b_h)
        fact *= k + 1
        hphi = hphi / hh - 1.0 / fact          # h~ phi_{k+2}(h~)
    if corrector:
        if p == 1:
            return [0.5]
        R = torch.tensor([[r ** k for r in rks + [1.0]] for k in range(p)], dtype=torch.float64)
        return torch.linalg.solve(R, torch.tensor(g, dtype=torch.float64)).tolist()
    if p == 1:
        return []
    if p == 2:
        return [0.5]
    R = torch.tensor([[r ** k for r in rks] for k in range(p - 1)], dtype=torch.float64)
    return torch.linalg.solve(R, torch.tensor(g[:-1], dtype=torch.float64)).tolist()


def unipc_step(sde: SDE, score: ScoreFn, grid: Grid, order: int,
               lower_order_final: bool = True) -> Callable:
    """A solvers step for UniPC with data prediction (module docstring).

    The loop's state after step i is the predictor's x_{i+1}; step i + 1 evaluates the
    model there, corrects x_{i+1} with it (UniC) and predicts from the corrected state
    (UniP). The corrected states and the model outputs are kept by step index; the weights
    are computed once, in float64, from the grid's lambda.
    """
    n_steps = len(grid) - 1
    orders = step_orders(n_steps, order, lower_order_final)
    lam = sde._half_log_snr(grid.ts.to(torch.float64)).tolist()
    hs = [lam[i + 1] - lam[i] for i in range(n_steps)]
    rks = [[(lam[i - j] - lam[i]) / hs[i] for j in range(1, orders[i])] for i in range(n_steps)]
    pred = [weights(hs[i], rks[i], False) for i in range(n_steps)]
    corr = [weights(hs[i], rks[i], True) for i in range(n_steps)]
    outputs: Dict[int, Tensor] = {}   # step index -> m_i
    bases: Dict[int, Tensor] = {}     # step index -> the corrected x_i the step started from

    def update(i: int, x: Tensor, m_next: Optional[Tensor]) -> Tensor:
        """From x at t_i to t_{i+1}: UniP (m_next None) or UniC with m_next = m_{i+1}."""
        _, sd_s, lam_s = grid.at(i, x)
        a_t, sd_t, lam_t = grid.at(i + 1, x)
        b_h = torch.expm1(-(lam_t - lam_s))    # B(h) = e^-h - 1 = the DPM-Solver++(1) weight
        m = outputs[i]
        res = sum(a * (outputs[i - j] - m) / rks[i][j - 1]
                  for j, a in enumerate(pred[i] if m_next is None else corr[i][:-1], 1))
        if m_next is not None:
            res = res + corr[i][-1] * (m_next - m)
        return sd_t / sd_s * x - a_t * b_h * (m + res)

    def step(i: int, x: Tensor, s: Tensor, t: Tensor, noise) -> Update:
        a_s, sd_s, _ = grid.at(i, x)
        m = x0_from_score(x, call_score(score, x, grid.time(i, x)), a_s, sd_s)
        if i > 0:  # UniC-p of the previous step, with the model output just made
            x = update(i - 1, bases.pop(i - 1), m)
        outputs[i] = m
        outputs.pop(i - order, None)
        bases[i] = x
        return Update(update(i, x, None))

    return step

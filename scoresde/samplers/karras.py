"""The Heun sampler of Karras et al. 2022 ("Elucidating the design space", EDM), Alg. 1 and 2.

EDM writes the PF-ODE in sigma = std/alpha and the scaled state x~ = x/alpha:

    dx~/dsigma = (x~ - D(x~; sigma)) / sigma,    D = the denoiser (x0 prediction),

which holds for every SDE here (for the VESDE alpha = 1 and sigma = std). A step from
sigma_i to sigma_{i+1} is Heun's method in sigma (Alg. 1, lines 4-8); with churn
(Alg. 2) the state is first pushed up to sigma_hat = sigma_i (1 + gamma_i) by fresh noise.
The final step to sigma = 0 is a single Euler step, i.e. x = D(x~; sigma_{N-1}).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from solvers import Update

from ..score import ScoreFn, call_score, x0_from_score
from ..sdes import SDE
from .grid import Grid


def churn_gammas(sigmas: Tensor, s_churn: float, s_tmin: float, s_tmax: float) -> Tensor:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) for sigma_i in [S_tmin, S_tmax], else 0 (Alg. 2, line 3)."""
    n = len(sigmas)
    g = min(s_churn / n, math.sqrt(2.0) - 1.0)
    inside = (sigmas >= s_tmin) & (sigmas <= s_tmax)
    return torch.where(inside, torch.full_like(sigmas, g), torch.zeros_like(sigmas))


def heun_step(sde: SDE, score: ScoreFn, grid: Grid, churned: Grid, churn: Sequence[bool],
              s_noise: float) -> Callable:
    """A solvers step for one Heun step of EDM from grid time t_i to t_{i+1} (both > 0).

    ``churned`` holds the churned times t_hat_i = t(sigma_i (1 + gamma_i)) with their
    coefficients; ``churn[i]`` says whether t_hat_i > t_i in the state's dtype (known up
    front, so no step waits for the device). Where it is False no noise is drawn
    (deterministic Alg. 1).
    """
    def coeffs(g: Grid, i: int, x: Tensor):
        alpha, std, _ = g.at(i, x)
        return alpha, std / alpha, std

    def denoise(xs: Tensor, g: Grid, i: int, alpha: Tensor, std: Tensor) -> Tensor:
        # D(x~; sigma) = x0(x = alpha x~), Tweedie's formula
        x = alpha * xs
        return x0_from_score(x, call_score(score, x, g.time(i, x)), alpha, std)

    def step(i: int, x: Tensor, t0: Tensor, t1: Tensor, noise) -> Update:
        g0, j = grid, i
        a0, sig0, sd0 = coeffs(grid, i, x)
        xs = x / a0
        if churn[i]:  # sigma_hat^2 - sigma_i^2 of fresh variance (Alg. 2, line 5)
            a_hat, sig_hat, sd_hat = coeffs(churned, i, x)
            xs = xs + torch.sqrt(sig_hat ** 2 - sig0 ** 2) * s_noise * noise.draw(x)
            g0, a0, sig0, sd0 = churned, a_hat, sig_hat, sd_hat
        a1, sig1, sd1 = coeffs(grid, i + 1, x)
        d0 = (xs - denoise(xs, g0, j, a0, sd0)) / sig0             # Alg. 1, line 4
        xs1 = xs + (sig1 - sig0) * d0                              # line 5
        d1 = (xs1 - denoise(xs1, grid, i + 1, a1, sd1)) / sig1     # line 7
        return Update(a1 * (xs + (sig1 - sig0) * 0.5 * (d0 + d1)))  # line 8

    return step

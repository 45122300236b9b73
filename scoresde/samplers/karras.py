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
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from .._shapes import batch_time, batch_view, scalar_time
from ..score import ScoreFn, call_score
from ..sdes import SDE


def churn_gammas(sigmas: Tensor, s_churn: float, s_tmin: float, s_tmax: float) -> Tensor:
    """gamma_i = min(S_churn / N, sqrt(2) - 1) for sigma_i in [S_tmin, S_tmax], else 0 (Alg. 2, line 3)."""
    n = len(sigmas)
    g = min(s_churn / n, math.sqrt(2.0) - 1.0)
    inside = (sigmas >= s_tmin) & (sigmas <= s_tmax)
    return torch.where(inside, torch.full_like(sigmas, g), torch.zeros_like(sigmas))


def heun_step(sde: SDE, score: ScoreFn, t_hat: Tensor, s_noise: float,
              churn: Optional[Sequence[bool]] = None) -> Callable:
    """A solvers step for one Heun step of EDM from grid time t_i to t_{i+1} (both > 0).

    ``t_hat`` [n_steps] holds the churned times t(sigma_i (1 + gamma_i)); where it equals
    t_i no noise is drawn (deterministic Alg. 1). ``churn[i]`` (optional) says whether
    t_hat[i] > t_i in the state's dtype, known up front; without it the step compares
    on the device, which waits for it at every step.
    """
    count = [0]
    start: list = []  # coefficients of t_{i+1}, the next step's start time

    def coeffs(t: Tensor, x: Tensor):
        alpha, std = sde._marginal_coeffs(scalar_time(batch_time(t, x)))
        return batch_view(alpha, x), batch_view(std / alpha, x), batch_view(std ** 2, x)

    def denoise(xs: Tensor, t: Tensor, alpha: Tensor, std2: Tensor) -> Tensor:
        # D(x~; sigma) = x0(x = alpha x~) = (x + std^2 score)/alpha
        x = alpha * xs
        return (x + std2 * call_score(score, x, batch_time(t, x))) / alpha

    def step(x: Tensor, t0: Tensor, t1: Tensor, noise) -> Tensor:
        i = count[0]
        count[0] += 1
        a0, sig0, v0 = start.pop() if start else coeffs(t0, x)
        xs = x / a0
        # churn: sigma_hat^2 - sigma_i^2 of fresh variance (Alg. 2, line 5)
        if churn[i] if churn is not None else bool(t_hat[i].to(t0) > t0):
            th = t_hat[i].to(t0)
            a_hat, sig_hat, v_hat = coeffs(th, x)
            xs = xs + torch.sqrt(sig_hat ** 2 - sig0 ** 2) * s_noise * noise.draw(x)
            t0, a0, sig0, v0 = th, a_hat, sig_hat, v_hat
        a1, sig1, v1 = coeffs(t1, x)
        start.append((a1, sig1, v1))
        d0 = (xs - denoise(xs, t0, a0, v0)) / sig0                 # Alg. 1, line 4
        xs1 = xs + (sig1 - sig0) * d0                              # line 5
        d1 = (xs1 - denoise(xs1, t1, a1, v1)) / sig1               # line 7
        return a1 * (xs + (sig1 - sig0) * 0.5 * (d0 + d1))         # line 8

    return step

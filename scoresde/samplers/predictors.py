"""One-step updates of the reverse-time samplers, from grid time t_i down to t_{i+1}.

Every predictor is ``predictor(sde, score, grid, i, x) -> Update(mean, noise_scale)``: the
next state is mean + noise_scale * z with z ~ N(0, I) drawn by the loop, which also drops
the noise of the final update (DDPM Algorithm 2's z = 0 at the last step; score_sde's
noise removal). ``noise_scale=None`` marks a deterministic update. x is [batch, *dims];
the score receives [batch] times.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from solvers import Update

from .._shapes import batch_view
from ..score import ScoreFn, call_score, eps_from_score, x0_from_eps
from ..sdes import SDE, VESDE, VPTypeSDE
from .grid import Grid


def euler_maruyama(sde: SDE, score: ScoreFn, grid: Grid, i: int, x: Tensor) -> Update:
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6; Kloeden & Platen 1992, 9.1)."""
    t, s = grid.t[i:i + 1], grid.t[i + 1:i + 2]
    dt = batch_view(s - t, x)  # negative: time runs backwards
    f, g = sde.coefficients(t)
    drift = batch_view(f, x) * x - batch_view(g ** 2, x) * call_score(score, x, grid.time(i, x))
    return Update(x + drift * dt, batch_view(g, x) * torch.sqrt(-dt))


def reverse_diffusion(sde: SDE, score: ScoreFn, grid: Grid, i: int, x: Tensor) -> Update:
    """Reverse diffusion: x_s = x_t - f_t + G_t^2 score + G_t z (Song et al. 2021, App. E,
    eq. 46), with (f_t, G_t) the forward SDE's exact transition from s to t."""
    t = grid.t[i:i + 1]
    f, G = sde._discretize(x, t, t - grid.t[i + 1:i + 2])
    G = batch_view(G, x)
    return Update(x - f + G ** 2 * call_score(score, x, grid.time(i, x)), G)


def ancestral(sde: SDE, score: ScoreFn, grid: Grid, i: int, x: Tensor) -> Update:
    """Ancestral sampling (Song et al. 2021, App. F): DDPM's step for VP, eq. 47 for VE.

    VP: beta = 1 - alphabar_t/alphabar_s, x_s = (x_t + beta score)/sqrt(1 - beta) + sqrt(beta) z,
    which with score = -eps/sqrt(1 - alphabar_t) is Ho et al. 2020, Algorithm 2 (sigma^2 = beta),
    and across skipped steps the DDPM posterior with that beta.
    VE: x_s = x_t + (sigma_t^2 - sigma_s^2) score + sqrt((sigma_t^2 - sigma_s^2) sigma_s^2/sigma_t^2) z.
    """
    sc = call_score(score, x, grid.time(i, x))
    t, s = grid.t[i:i + 1], grid.t[i + 1:i + 2]
    if isinstance(sde, VPTypeSDE):
        la = grid.log_alpha        # log alpha at every grid time, computed once per solve
        beta = batch_view(-torch.expm1(2.0 * (la[i:i + 1] - la[i + 1:i + 2])), x)
        return Update((x + beta * sc) / torch.sqrt(1.0 - beta), torch.sqrt(beta))
    if isinstance(sde, VESDE):
        var_t, var_s = sde.sigma(t) ** 2, sde.sigma(s) ** 2
        dvar = batch_view(var_t - var_s, x)
        return Update(x + dvar * sc, torch.sqrt(dvar * batch_view(var_s / var_t, x)))
    raise TypeError(f"the ancestral sampler is defined for VP-type SDEs and the VESDE "
                    f"(Song et al. 2021, App. F), not {type(sde).__name__}; use "
                    f"'reverse_diffusion' or 'euler_maruyama'")


def no_predictor(sde: SDE, score: ScoreFn, grid: Grid, i: int, x: Tensor) -> Update:
    """The identity: moves time only (corrector-only sampling, Song et al. 2021, Sec. 4.2)."""
    return Update(x)


def ddim(sde: SDE, score: ScoreFn, grid: Grid, i: int, x: Tensor, eta: float = 0.0,
         to: Optional[Tensor] = None) -> Update:
    """DDIM (Song, Meng & Ermon 2021, eq. 12): x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z,

    x0 = (x_t - sqrt(1 - abar_t) eps)/sqrt(abar_t), eps = -sqrt(1 - abar_t) score and
    sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s) (eq. 16).
    eta = 0 is deterministic; eta = 1 is DDPM with the posterior variance beta_tilde.
    The step ends at s = t_{i+1}, or at ``to[i]`` when given (diffusers' DDIMScheduler
    steps to index k - N // steps, which can differ from the next grid index).
    """
    if not isinstance(sde, VPTypeSDE):
        raise TypeError(f"DDIM is defined for VP-type SDEs, not {type(sde).__name__}")
    log_a_t = grid.log_alpha[i:i + 1]
    log_a_s = grid.log_alpha[i + 1:i + 2] if to is None else sde._log_alpha(to[i:i + 1])
    abar_t, abar_s = batch_view(torch.exp(2 * log_a_t), x), batch_view(torch.exp(2 * log_a_s), x)
    std_t = torch.sqrt(1.0 - abar_t)
    eps = eps_from_score(call_score(score, x, grid.time(i, x)), std_t)
    x0 = x0_from_eps(x, eps, torch.sqrt(abar_t), std_t)
    sigma2 = eta ** 2 * (1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s)
    mean = torch.sqrt(abar_s) * x0 + torch.sqrt((1.0 - abar_s - sigma2).clamp(min=0.0)) * eps
    return Update(mean, torch.sqrt(sigma2) if eta > 0 else None)


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_predictor,
}

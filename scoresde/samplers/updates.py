"""One-step updates of the reverse-time samplers, each from time t down to s < t.

Every predictor returns (mean, noise_scale): the next state is mean + noise_scale * z with
z ~ N(0, I) drawn by the caller, or mean alone on the final step (DDPM Algorithm 2's
z = 0 at the last step; score_sde's noise removal) and whenever noise_scale is None
(deterministic updates draw nothing). x is [batch, *dims]; t, s are [batch] tensors;
noise_scale broadcasts against x.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .._shapes import batch_view, scalar_time
from ..score import ScoreFn, call_score
from ..sdes import SDE, VESDE, VPTypeSDE

Update = Tuple[Tensor, Optional[Tensor]]


def euler_maruyama(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, s: Tensor) -> Update:
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6; Kloeden & Platen 1992, 9.1)."""
    tc, sc = scalar_time(t), scalar_time(s)
    dt = batch_view(sc - tc, x)  # negative: time runs backwards
    f, g = sde.coefficients(tc)
    drift = batch_view(f, x) * x - batch_view(g ** 2, x) * call_score(score, x, t)
    return x + drift * dt, batch_view(g, x) * torch.sqrt(-dt)


def reverse_diffusion(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, s: Tensor) -> Update:
    """Reverse diffusion: x_s = x_t - f_t + G_t^2 score + G_t z (Song et al. 2021, App. E, eq. 46)."""
    f, G = sde.discretize(x, t, dt=t - s)
    G = batch_view(G, x)
    return x - f + G ** 2 * call_score(score, x, t), G


def ancestral(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, s: Tensor) -> Update:
    """Ancestral sampling (Song et al. 2021, App. F): DDPM's step for VP, eq. 47 for VE.

    VP: beta = 1 - alphabar_t/alphabar_s, x_s = (x_t + beta score)/sqrt(1 - beta) + sqrt(beta) z,
    which with score = -eps/sqrt(1 - alphabar_t) is Ho et al. 2020, Algorithm 2 (sigma^2 = beta),
    and across skipped steps the DDPM posterior with that beta.
    VE: x_s = x_t + (sigma_t^2 - sigma_s^2) score + sqrt((sigma_t^2 - sigma_s^2) sigma_s^2/sigma_t^2) z.
    """
    sc = call_score(score, x, t)
    t, s = scalar_time(t), scalar_time(s)
    if isinstance(sde, VPTypeSDE):
        beta = batch_view(-torch.expm1(2.0 * (sde._log_alpha(t) - sde._log_alpha(s))), x)
        return (x + beta * sc) / torch.sqrt(1.0 - beta), torch.sqrt(beta)
    if isinstance(sde, VESDE):
        var_t, var_s = sde.sigma(t) ** 2, sde.sigma(s) ** 2
        dvar = batch_view(var_t - var_s, x)
        return x + dvar * sc, torch.sqrt(dvar * batch_view(var_s / var_t, x))
    raise TypeError(f"the ancestral sampler is defined for VP-type SDEs and the VESDE "
                    f"(Song et al. 2021, App. F), not {type(sde).__name__}; use "
                    f"'reverse_diffusion' or 'euler_maruyama'")


def no_predictor(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, s: Tensor) -> Update:
    """The identity: moves time only (corrector-only sampling, Song et al. 2021, Sec. 4.2)."""
    return x, None


def ddim(sde: VPTypeSDE, score: ScoreFn, x: Tensor, t: Tensor, s: Tensor,
         eta: float = 0.0) -> Update:
    """DDIM (Song, Meng & Ermon 2021, eq. 12): x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z,

    x0 = (x_t - sqrt(1 - abar_t) eps)/sqrt(abar_t), eps = -sqrt(1 - abar_t) score and
    sigma = eta sqrt((1 - abar_s)/(1 - abar_t)) sqrt(1 - abar_t/abar_s) (eq. 16).
    eta = 0 is deterministic; eta = 1 is DDPM with the posterior variance beta_tilde.
    """
    if not isinstance(sde, VPTypeSDE):
        raise TypeError(f"DDIM is defined for VP-type SDEs, not {type(sde).__name__}")
    log_a_t, log_a_s = sde._log_alpha(scalar_time(t)), sde._log_alpha(scalar_time(s))
    abar_t, abar_s = batch_view(torch.exp(2 * log_a_t), x), batch_view(torch.exp(2 * log_a_s), x)
    std_t = torch.sqrt(1.0 - abar_t)
    eps = -std_t * call_score(score, x, t)
    x0 = (x - std_t * eps) / torch.sqrt(abar_t)
    sigma2 = eta ** 2 * (1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s)
    mean = torch.sqrt(abar_s) * x0 + torch.sqrt((1.0 - abar_s - sigma2).clamp(min=0.0)) * eps
    return mean, (torch.sqrt(sigma2) if eta > 0 else None)


PREDICTORS = {
    "euler_maruyama": euler_maruyama,
    "reverse_diffusion": reverse_diffusion,
    "ancestral": ancestral,
    "none": no_predictor,
}

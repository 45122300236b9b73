"""Corrector steps: Langevin MCMC at a fixed time t with the score of the marginal p_t.

Each corrector draws one z ~ N(0, I) per iteration and returns the new state.
As in score_sde, the Langevin step uses norms averaged over the batch. Per-sample norms
would make each sample's step depend on its own noise draw and score, which biases the
stationary variance by about 4/d in d dimensions (docs/solvers.md) and gives heavy tails
in low dimension where |score| can be near zero.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .._shapes import batch_view
from ..score import ScoreFn, call_score
from ..sdes import SDE

Draw = Callable[[Tensor], Tensor]


def _langevin_alpha(sde: SDE, t: Tensor) -> Tensor:
    """alpha_i of Song et al. 2021, Alg. 5: 1 - beta_i for the step of length T/N ending at t
    (= (alpha(t)/alpha(t - T/N))^2; 1 for the VESDE, Alg. 4)."""
    s = (t - sde.T / sde.N).clamp(min=0.0)
    return (sde._marginal_coeffs(t)[0] / sde._marginal_coeffs(s)[0]) ** 2


def _batch_norm(v: Tensor) -> Tensor:
    """Mean over the batch of the per-sample Euclidean norm (score_sde's LangevinCorrector)."""
    return v.reshape(v.shape[0], -1).norm(dim=-1).mean()


def langevin(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, snr: float, draw: Draw) -> Tensor:
    """Langevin corrector (Song et al. 2021, Alg. 4 and 5): step = 2 alpha (snr |z| / |score|)^2,
    x <- x + step score + sqrt(2 step) z."""
    grad = call_score(score, x, t)
    z = draw(x)
    step = 2.0 * _langevin_alpha(sde, t) * (snr * _batch_norm(z) / _batch_norm(grad)) ** 2
    step = batch_view(step, x)
    return x + step * grad + torch.sqrt(2.0 * step) * z


def annealed_langevin(sde: SDE, score: ScoreFn, x: Tensor, t: Tensor, snr: float,
                      draw: Draw) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, in score_sde's form):
    step = 2 alpha (snr std(t))^2, x <- x + step score + sqrt(2 step) z."""
    grad = call_score(score, x, t)
    z = draw(x)
    std = sde._marginal_coeffs(t)[1]
    step = batch_view(2.0 * _langevin_alpha(sde, t) * (snr * std) ** 2, x)
    return x + step * grad + torch.sqrt(2.0 * step) * z


CORRECTORS = {"langevin": langevin, "ald": annealed_langevin, "none": None}

"""Corrector moves: Langevin MCMC at a fixed time t with the score of the marginal p_t.

Both correctors make the Langevin move of ``solvers.pc`` (x + e score + sqrt(2 e) z, one
z ~ N(0, I) per move); they differ in the step size e:

  langevin  e = 2 alpha (snr ||z|| / ||score||)^2      (Song et al. 2021, Alg. 4 and 5)
  ald       e = 2 alpha (snr std(t))^2                 (Song & Ermon 2019, Alg. 1, as score_sde)

with alpha = 1 - beta_i for VP (Alg. 5) and 1 for VE (Alg. 4). A corrector is built per
solve as ``make(sde, score, snr, norm) -> solvers corrector(x, t, noise)``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from torch import Tensor

import solvers
from solvers.pc import Corrector

from .._shapes import batch_time, batch_view
from ..score import ScoreFn, call_score
from ..sdes import SDE


def _langevin_alpha(sde: SDE, t: Tensor) -> Tensor:
    """alpha_i of Song et al. 2021, Alg. 5: 1 - beta_i for the step of length T/N ending at t
    (= (alpha(t)/alpha(t - T/N))^2; 1 for the VESDE, Alg. 4)."""
    s = (t - sde.T / sde.N).clamp(min=0.0)
    return (sde._marginal_coeffs(t)[0] / sde._marginal_coeffs(s)[0]) ** 2


def langevin(sde: SDE, score: ScoreFn, snr: float, norm: str) -> Corrector:
    """Langevin corrector (Song et al. 2021, Alg. 4 and 5) with norms per sample or over
    the batch (``solvers.langevin_corrector``; score_sde uses ``norm="batch"``)."""
    return solvers.langevin_corrector(
        lambda x, t: call_score(score, x, batch_time(t, x)), snr,
        alpha_fn=lambda t: _langevin_alpha(sde, t.reshape(1)), norm=norm)


def annealed_langevin(sde: SDE, score: ScoreFn, snr: float, norm: str) -> Corrector:
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1, in score_sde's form):
    e = 2 alpha (snr std(t))^2, the same for every sample (``norm`` does not apply)."""
    def corrector(x: Tensor, t: Tensor, noise: Optional[solvers.Noise]) -> Tensor:
        grad = call_score(score, x, batch_time(t, x))
        z = noise.draw(x)
        t1 = t.reshape(1)
        std = sde._marginal_coeffs(t1)[1]
        step = batch_view(2.0 * _langevin_alpha(sde, t1) * (snr * std) ** 2, x)
        return solvers.langevin_move(x, grad, z, step)

    return corrector


CORRECTORS: Dict[str, Optional[Callable[[SDE, ScoreFn, float, str], Corrector]]] = {
    "langevin": langevin, "ald": annealed_langevin, "none": None}

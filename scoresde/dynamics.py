"""The reverse-time SDE and the probability-flow ODE of a forward SDE and a score.

For the forward SDE dx = f(t) x dt + g(t) dw and a score s(x, t) ~ grad log p_t(x):

    reverse SDE       dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw_bar   (Song et al. 2021, eq. 6)
    probability flow  dx/dt = f(t) x - g(t)^2 s(x, t) / 2                (Song et al. 2021, eq. 13)

Both are handed to ``solvers`` as functions of (t, x) with t a 0-d tensor, which we
broadcast to the [batch] time the score expects. Time runs from T down to the end time.
"""
from __future__ import annotations

from typing import Callable, Tuple

from torch import Tensor

from ._shapes import batch_time, batch_view, scalar_time
from .score import FirstCallChecked, ScoreFn, call_score
from .sdes import SDE


def reverse_sde(sde: SDE, score: ScoreFn) -> Tuple[Callable, Callable]:
    """(drift, diffusion) of the reverse-time SDE as functions of (t, x).

    drift(t, x) = f(t) x - g(t)^2 s(x, t) is shaped like x; diffusion(t, x) = g(t) is
    shaped [batch, 1, ...] so that it broadcasts against x (diagonal noise). The score's
    first output is checked in full (``FirstCallChecked``).
    """
    score = FirstCallChecked(score)

    def drift(t: Tensor, x: Tensor) -> Tensor:
        tb = batch_time(t, x)
        f, g = sde.coefficients(scalar_time(tb))
        return batch_view(f, x) * x - batch_view(g ** 2, x) * call_score(score, x, tb)

    def diffusion(t: Tensor, x: Tensor) -> Tensor:
        g = sde.coefficients(scalar_time(batch_time(t, x)))[1]
        return batch_view(g, x).expand(x.shape[0], *([1] * (x.dim() - 1)))

    return drift, diffusion


def probability_flow(sde: SDE, score: ScoreFn) -> Callable[[Tensor, Tensor], Tensor]:
    """The probability-flow ODE vector field v(t, x) = f(t) x - g(t)^2 s(x, t) / 2 (the
    score's first output checked in full, ``FirstCallChecked``)."""
    score = FirstCallChecked(score)

    def field(t: Tensor, x: Tensor) -> Tensor:
        tb = batch_time(t, x)
        f, g = sde.coefficients(scalar_time(tb))
        return batch_view(f, x) * x - 0.5 * batch_view(g ** 2, x) * call_score(score, x, tb)

    return field

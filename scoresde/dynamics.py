"""The reverse-time SDE and the probability-flow ODE of a forward SDE and a score.

For the forward SDE dx = f(t) x dt + g(t) dw and a score s(x, t) ~ grad log p_t(x):

    reverse SDE       dx = [f(t) x - g(t)^2 s(x, t)] dt + g(t) dw_bar   (Song et al. 2021, eq. 6)
    probability flow  dx/dt = f(t) x - g(t)^2 s(x, t) / 2                (Song et al. 2021, eq. 13)

Both are handed to ``solvers`` as functions of (t, x) with t a 0-d tensor, which we
broadcast to the [batch] time the score expects. Time runs from T down to the end time.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch
from torch import Tensor

import solvers

from ._validation import _describe, batch_view, first_nonfinite
from .sdes import SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def batch_time(t: Tensor, x: Tensor) -> Tensor:
    """A 0-d (or [batch]) solver time as a [batch] tensor of x's dtype and device."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t


def scalar_time(t: Tensor) -> Tensor:
    """A [batch] time that is one value expanded over the batch (as ``batch_time`` makes it),
    as a [1] tensor: coefficients alpha(t), beta(t), ... are then computed once instead of
    once per sample (the same values; they broadcast against x through ``batch_view``)."""
    return t[:1] if t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0 else t


def call_score(score: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """Evaluate score(x, t) with t a [batch] tensor and check the result's shape."""
    s = score(x, t)
    if not isinstance(s, Tensor):
        raise TypeError(f"score(x, t) must return a tensor shaped like x {tuple(x.shape)}, got "
                        f"{_describe(s)} of type {type(s).__name__}")
    if s.shape != x.shape:
        raise ValueError(f"score(x, t) must return a tensor shaped like x {tuple(x.shape)}, "
                         f"got shape {tuple(s.shape)}")
    return s


class NonFiniteScoreError(solvers.NonFiniteStateError, ValueError):
    """The score returned NaN or inf at its first call, at the initial point of a solve.

    A ``solvers.NonFiniteStateError`` (step 0, at the time of the call; named by the entry
    point like any solver failure) and a ``ValueError``: the score given is not usable.
    """


class FirstCallChecked:
    """A score whose first output is checked in full: a floating tensor shaped like x with
    finite entries, else an error naming the score, what it returned and what is expected.

    Later outputs pass unchecked here (``call_score`` checks their shape; the solvers check
    the state for NaN/inf after every step): the finiteness check costs a host sync, which
    is paid once per solve, not once per step.
    """

    def __init__(self, score: ScoreFn):
        self.score = score
        self.checked = False

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        s = call_score(self.score, x, t)
        if not self.checked:
            if not s.is_floating_point():
                raise TypeError(f"score(x, t) must return a floating-point tensor like x "
                                f"({x.dtype}), got dtype {s.dtype}")
            found = first_nonfinite(s.detach())
            if found is not None:
                index, value = found
                when = float(t.reshape(-1)[0]) if isinstance(t, Tensor) else float(t)
                raise NonFiniteScoreError(0, when, f"score(x, t) returned {value} (entry "
                                                   f"{list(index)}) at its first call; it must "
                                                   f"return finite values")
            self.checked = True
        return s


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

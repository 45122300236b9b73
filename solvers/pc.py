"""Predictor--corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", Algorithms 1-5).

A predictor is any :data:`~solvers.loop.Step` (e.g. Euler--Maruyama on the reverse-time
SDE); a corrector ``corrector(x, t, noise) -> x`` is an MCMC move leaving the marginal at
time t invariant, applied at the predictor's new time t1 (Algorithm 1: predictor, then
corrector). score_sde's code applies the corrector first, at the current time, then the
predictor; over a whole run that only moves one corrector pass from the last time to the
first.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .loop import Step
from .noise import Noise

#: ``corrector(x, t, noise) -> x`` at a fixed time ``t`` (0-d tensor).
Corrector = Callable[[Tensor, Tensor, Optional[Noise]], Tensor]
#: ``score_fn(x, t) -> grad_x log p_t(x)``, shaped like ``x``; ``t`` a 0-d tensor.
ScoreFn = Callable[[Tensor, Tensor], Tensor]


def predictor_corrector_step(predictor: Step, corrector: Optional[Corrector] = None, n_corrector: int = 1) -> Step:
    """A step ``t0 -> t1``: ``predictor``, then ``n_corrector`` corrector moves at ``t1``.

    Song et al. 2021, Algorithm 1. With ``corrector=None`` (or ``n_corrector=0``) it is the
    predictor alone.
    """
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an int >= 0, got {n_corrector!r}")

    def step(x: Tensor, t0: Tensor, t1: Tensor, noise: Optional[Noise]) -> Tensor:
        x = predictor(x, t0, t1, noise)
        if corrector is not None:
            for _ in range(n_corrector):
                x = corrector(x, t1, noise)
        return x

    return step


def _per_sample_norm(v: Tensor) -> Tensor:
    """``[batch]`` Euclidean norms over all non-batch dimensions."""
    return v.reshape(v.shape[0], -1).norm(dim=1)


def langevin_corrector_step(
    score_fn: ScoreFn,
    snr: float,
    alpha_fn: Optional[Callable[[Tensor], Union[Tensor, float]]] = None,
) -> Corrector:
    """Langevin corrector with a step set by a target signal-to-noise ratio.

    Song et al. 2021, Algorithm 4 (VE, alpha = 1) and Algorithm 5 (VP, alpha_i = 1 - beta_i):
        z ~ N(0, I);  g = score(x, t);  eps = 2 alpha (snr ||z|| / ||g||)^2;
        x <- x + eps g + sqrt(2 eps) z.
    The norms are taken per sample, over all non-batch dimensions. (score_sde averages them
    over the batch instead; per sample, each sample's move depends only on itself, so a
    result does not change with the batch it was drawn in or the batch size.) Because the
    step then depends on the sample's own z and x, the chain's stationary law is biased in
    low dimension d: for a Gaussian target the variance is v (1 + 4/d + snr^2) to first
    order (docs/solvers.md): negligible for images, large for d ~ 10.

    Args:
        score_fn: ``score_fn(x, t)`` with the 0-d time ``t``.
        snr: target signal-to-noise ratio r > 0 (0.16 for CIFAR-10 in the paper).
        alpha_fn: ``alpha_fn(t)`` -> scalar or 0-d tensor; 1 when None.
    """
    if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not snr > 0:
        raise ValueError(f"snr must be a positive number, got {snr!r}")

    def corrector(x: Tensor, t: Tensor, noise: Optional[Noise]) -> Tensor:
        if noise is None:
            raise ValueError("the Langevin corrector needs a noise source, e.g. noise=GaussianNoise(generator)")
        z = noise.draw(x)
        g = score_fn(x, t)
        if g.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(g.shape)} for a state of shape {tuple(x.shape)}")
        alpha = 1.0 if alpha_fn is None else alpha_fn(t)
        ratio = snr * _per_sample_norm(z) / _per_sample_norm(g)
        eps = (2 * alpha * ratio**2).reshape(x.shape[0], *([1] * (x.ndim - 1)))
        return x + eps * g + torch.sqrt(2 * eps) * z

    return corrector

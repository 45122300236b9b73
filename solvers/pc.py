"""Predictor--corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", Algorithms 1-5): the one composition and the one
Langevin corrector, used by ``scoresde.sample(solver="pc")`` and available to any solver.

A predictor is any :data:`~solvers.loop.Step` (e.g. Euler--Maruyama on the reverse-time
SDE); a corrector ``corrector(x, t, noise) -> x`` is an MCMC move that leaves the marginal
at time t invariant. A step from t_i to t_{i+1} corrects at t_i, then predicts (score_sde's
``pc_sampler`` order, shared with its released samples): over a run this is Algorithm 1's
predict-then-correct with the first corrector pass moved from the last time to the first,
and it makes the last update the predictor's noise-free mean.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .loop import Step, Update
from .noise import Noise
from .validation import check_choice, check_int, check_positive

#: ``corrector(x, t, noise) -> x`` at a fixed time ``t`` (0-d tensor).
Corrector = Callable[[Tensor, Tensor, Optional[Noise]], Tensor]
#: ``score_fn(x, t) -> grad_x log p_t(x)``, shaped like ``x``; ``t`` a 0-d tensor.
ScoreFn = Callable[[Tensor, Tensor], Tensor]

#: How the Langevin step size reads ||z|| / ||score||: per sample, or averaged over the batch.
NORMS = ("sample", "batch")


def predictor_corrector_step(predictor: Step, corrector: Optional[Corrector] = None,
                             n_corrector: int = 1) -> Step:
    """A step ``t_i -> t_{i+1}``: ``n_corrector`` corrector moves at ``t_i``, then the
    predictor's update (Song et al. 2021, Alg. 1, in score_sde's order). With
    ``corrector=None`` (or ``n_corrector=0``) it is the predictor alone."""
    n_corrector = check_int("n_corrector", n_corrector, minimum=0)

    def step(i: int, x: Tensor, t0: Tensor, t1: Tensor, noise: Optional[Noise]) -> Update:
        if corrector is not None:
            for _ in range(n_corrector):
                x = corrector(x, t0, noise)
        return predictor(i, x, t0, t1, noise)

    return step


def _norm(v: Tensor, norm: str) -> Tensor:
    """Euclidean norm over the non-batch dimensions: ``[batch]`` ("sample") or its batch
    mean, a 0-d tensor ("batch", score_sde's LangevinCorrector)."""
    per_sample = v.reshape(v.shape[0], -1).norm(dim=-1)
    return per_sample if norm == "sample" else per_sample.mean()


def langevin_move(x: Tensor, score: Tensor, z: Tensor, step_size: Tensor) -> Tensor:
    """One unadjusted Langevin move x + e score + sqrt(2 e) z (Song et al. 2021, Alg. 4/5,
    line 6; Roberts & Tweedie 1996). ``step_size`` e broadcasts against x."""
    return x + step_size * score + torch.sqrt(2.0 * step_size) * z


def langevin_corrector(score_fn: ScoreFn, snr: float,
                       alpha_fn: Optional[Callable[[Tensor], Union[Tensor, float]]] = None,
                       norm: str = "sample") -> Corrector:
    """Langevin corrector with a step set by a target signal-to-noise ratio.

    Song et al. 2021, Algorithm 4 (VE, alpha = 1) and Algorithm 5 (VP, alpha_i = 1 - beta_i):
        g = score(x, t);  z ~ N(0, I);  e = 2 alpha (snr ||z|| / ||g||)^2;  x <- x + e g + sqrt(2 e) z.

    ``norm="sample"``: each sample's own norms, so a sample's move depends only on itself
    (results do not change with the batch), but the step then depends on the sample's own z
    and x, which biases the chain's stationary variance by about v (4/d + snr^2) in d
    dimensions (docs/solvers.md): negligible for images, large for d ~ 10, with heavy tails
    where |score| can be near 0. ``norm="batch"``: norms averaged over the batch, as
    score_sde does (one step size for the batch; the bias vanishes as the batch grows).

    Args:
        score_fn: ``score_fn(x, t)``, t as the loop passes it (a 0-d tensor).
        snr: target signal-to-noise ratio r > 0 (0.16 for CIFAR-10 in the paper).
        alpha_fn: ``alpha_fn(t)`` -> a scalar, 0-d or [batch] tensor; 1 when None.
        norm: "sample" or "batch".
    """
    snr = check_positive("snr", snr)
    norm = check_choice("norm", norm, NORMS)

    def corrector(x: Tensor, t: Tensor, noise: Optional[Noise]) -> Tensor:
        if noise is None:
            raise ValueError("the Langevin corrector needs a noise source, e.g. "
                             "noise=GaussianNoise(generator)")
        g = score_fn(x, t)
        if g.shape != x.shape:
            raise ValueError(f"score_fn returned shape {tuple(g.shape)} for a state of shape "
                             f"{tuple(x.shape)}")
        z = noise.draw(x)
        alpha = 1.0 if alpha_fn is None else alpha_fn(t)
        step = 2.0 * alpha * (snr * _norm(z, norm) / _norm(g, norm)) ** 2
        return langevin_move(x, g, z, step.reshape(-1, *([1] * (x.dim() - 1))))

    return corrector

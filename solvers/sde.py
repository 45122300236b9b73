"""Fixed-step SDE schemes for diagonal noise, in either direction of time.

The SDE is dx = b(t, x) dt + g(t, x) dW with ``drift(t, x) -> b`` shaped like x and
``diffusion(t, x) -> g`` broadcastable to x (a ``[batch]`` tensor is one value per sample).
When time decreases (dt < 0) the same formulas integrate the reverse-time SDE
dx = b dt + g dW-bar with dW-bar a Brownian motion running backwards, whose increments
over a step of length |dt| are N(0, |dt|): this is how score-based samplers are written
(Song et al. 2021, eq. (6)).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from .counting import CountingFunction
from .errors import naming_solver
from .loop import Step, Update, integrate
from .noise import Noise
from .result import Solution
from .validation import TimeLike

Drift = Callable[[Tensor, Tensor], Tensor]
Diffusion = Callable[[Tensor, Tensor], Tensor]


def broadcast_diffusion(g: Tensor, x: Tensor) -> Tensor:
    """Shape a diffusion coefficient for elementwise use with ``x`` (``[batch, *dims]``).

    Accepted: a scalar or 0-d tensor; a ``[batch]`` tensor (one value per sample,
    reshaped to ``[batch, 1, ..., 1]``); anything broadcastable to ``x.shape``.
    """
    g = torch.as_tensor(g, dtype=x.dtype, device=x.device)
    if g.ndim == 1 and x.ndim > 1 and g.shape[0] == x.shape[0]:
        g = g.reshape(g.shape[0], *([1] * (x.ndim - 1)))
    try:
        ok = torch.broadcast_shapes(g.shape, x.shape) == x.shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"the diffusion returned shape {tuple(g.shape)} for a state of shape {tuple(x.shape)}; "
            f"it must be a scalar, [batch] = [{x.shape[0]}], or broadcastable to the state"
        )
    return g


def _check_drift(b: Tensor, x: Tensor) -> Tensor:
    if b.shape != x.shape:
        raise ValueError(f"the drift returned shape {tuple(b.shape)} for a state of shape {tuple(x.shape)}")
    return b


def euler_maruyama_step(drift: Drift, diffusion: Diffusion) -> Step:
    """Euler--Maruyama: mean x + b(t0, x) dt, noise scale g(t0, x) sqrt(|dt|).

    Kloeden & Platen (1992), Numerical Solution of SDEs, Sec. 9.1 (strong order 1/2, 1 for
    additive noise) and Ch. 14 (weak order 1). dt = t1 - t0 may be negative.
    """

    def step(i: int, x: Tensor, t0: Tensor, t1: Tensor, noise: Optional[Noise]) -> Update:
        dt = t1 - t0
        b = _check_drift(drift(t0, x), x)
        g = broadcast_diffusion(diffusion(t0, x), x)
        return Update(x + b * dt, g * dt.abs().sqrt())

    return step


#: Fixed-step SDE schemes: name -> ``scheme(drift, diffusion) -> Step``.
FIXED_SDE_METHODS: Dict[str, Callable[[Drift, Diffusion], Step]] = {
    "euler_maruyama": euler_maruyama_step,
}


def sdeint_fixed(
    drift: Drift,
    diffusion: Diffusion,
    x0: Tensor,
    ts: TimeLike,
    *,
    noise: Noise,
    method: str = "euler_maruyama",
    **loop_kwargs,
) -> Solution:
    """Integrate dx = drift dt + diffusion dW on the grid ``ts`` (decreasing runs backwards).

    Args:
        drift: ``drift(t, x)``, ``t`` a 0-d tensor, result shaped like ``x``.
        diffusion: ``diffusion(t, x)``, see :func:`broadcast_diffusion`.
        x0: ``[batch, *dims]`` state at ``ts[0]``.
        ts: ``[n]`` strictly monotone times.
        noise: one ``noise.draw(x)`` per step, in order (e.g. ``GaussianNoise(generator)``).
        method: a name in :data:`FIXED_SDE_METHODS`.
        **loop_kwargs: ``callback``, ``progress``, ``save_trajectory``, ``desc``.

    Returns:
        :class:`Solution`; ``stats``: ``steps``, ``nfe`` (drift evaluations) and
        ``nfe_diffusion``.
    """
    try:
        scheme = FIXED_SDE_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown fixed-step SDE method {method!r}; valid names: {', '.join(sorted(FIXED_SDE_METHODS))}"
        ) from None
    counted_drift, counted_diffusion = CountingFunction(drift), CountingFunction(diffusion)
    with naming_solver(f"sdeint_fixed(method={method!r})"):
        solution = integrate(scheme(counted_drift, counted_diffusion), x0, ts, noise=noise, **loop_kwargs)
    solution.stats.update(nfe=counted_drift.calls, nfe_diffusion=counted_diffusion.calls)
    return solution

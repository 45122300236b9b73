"""Inpainting / imputation with an unconditional score: the replacement method and RePaint.

``inpaint(score, sde, known, mask, solver=...)`` fills the entries of ``known`` where
``mask == 0`` so that they fit the entries where ``mask == 1``.

Replacement (Song et al. 2021, App. I.2): walk the sampler's grid t_0 = T > ... > t_n = eps;
before the step from t_i, overwrite the known entries with a fresh draw from the forward
marginal of the data, alpha(t_i) y + std(t_i) z, so the state is a sample of p_t(x_k | y)
in the known entries at the time the score sees it; the step then moves every entry and
its unknown part is kept. The result has exactly y in the known entries and the last
step's noise-free mean in the unknown ones. score_sde's ``get_inpaint_update_fn`` re-noises
the data at the step's *start* time after the step has moved the state to t - dt, and its
``x_mean = x * (1 - mask) + masked_data_mean * mask`` takes the unknown part from the
*noisy* x, so the "denoised" output keeps the last step's noise; neither happens here.

RePaint (Lugmayr et al. 2022, Alg. 1 and Sec. 4.2): after a block of ``jumps`` reverse steps
ending at t_i, go back up ``jumps`` steps with the forward transition q(x_{t_{i-j}} | x_{t_i})
(exact for the linear SDEs, ``SDE.discretize``) and redo them; every block but the first
(from T) is done ``resample`` times in all. This harmonizes the unknown part with the
re-noised known part; resample=1 is the replacement method.

Neither is exact for data whose known and unknown parts are correlated: the unknown
entries follow the joint score at a *sampled* x_k, not the conditional score given y.
docs/guidance.md measures their bias against the exact Gaussian posterior
(``GaussianData.condition``).

Solvers: the reverse-SDE updates "euler_maruyama", "reverse_diffusion", "ancestral", the
probability-flow ODE with a fixed-step tableau "ode_euler", "ode_heun", "ode_rk4", ...,
and "ddim" (eta = 0, VP-type SDEs). ``steps`` counts network evaluations of one pass
down the grid; ``nfe`` counts all of them, resampling included.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch
from torch import Tensor

import solvers
from solvers import Update

from ._shapes import batch_view
from ._validation import (_describe, check_choice, check_finite, check_instance, check_int,
                          check_matches_network, check_real, check_score_and_sde, check_state)
from .dynamics import probability_flow
from .grids import GRIDS, time_grid
from .samplers.api import SampleResult
from .samplers.grid import Grid
from .samplers.predictors import PREDICTORS, ddim
from .score import ScoreFn, unchecked
from .sdes import SDE, VESDE, VPTypeSDE

SDE_SOLVERS = ("euler_maruyama", "reverse_diffusion", "ancestral")
ODE_SOLVERS = tuple(f"ode_{m}" for m in solvers.FIXED_ODE_METHODS) + ("ddim",)
INPAINT_SOLVERS = SDE_SOLVERS + ODE_SOLVERS


def repaint_schedule(n: int, jumps: int, resample: int) -> List[int]:
    """The grid indices visited, starting at 0 (t = T) and ending at n (t = eps): down one
    index per reverse step; after a block of ``jumps`` steps ending at index i > jumps
    (every block but the first), back up ``jumps`` indices, ``resample - 1`` times
    (RePaint's ``get_schedule_jump``, Lugmayr et al. 2022, Sec. 4.2, indices reversed)."""
    left = {i: resample - 1 for i in range(n, jumps, -jumps)}
    path, i = [0], 0
    while i < n:
        i += 1
        path.append(i)
        if left.get(i, 0) > 0:
            left[i] -= 1
            for _ in range(jumps):
                i -= 1
                path.append(i)
    return path


def check_mask(mask: Any, known: Tensor) -> Tensor:
    """``mask`` as a 0/1 tensor of known's dtype broadcast to known's shape."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a tensor of 0/1 (1 = known) broadcastable to known "
                        f"{tuple(known.shape)}, got {_describe(mask)} of type "
                        f"{type(mask).__name__}")
    try:
        shape = torch.broadcast_shapes(mask.shape, known.shape)
    except RuntimeError:
        shape = None
    if shape != known.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to known "
                         f"{tuple(known.shape)}; give [*dims] or [batch, *dims] of 0/1")
    m = mask.to(device=known.device)
    bad = ~((m == 0) | (m == 1))
    if bool(bad.any()):
        value = m[bad].reshape(-1)[0].item()
        raise ValueError(f"mask must hold only 0 and 1 (1 = known), got the value {value}")
    return m.to(known.dtype).expand(known.shape)


def inpaint(score: ScoreFn, sde: SDE, known: Tensor, mask: Tensor,
            solver: str = "euler_maruyama", *, steps: int = 1000, eps: float = 1e-3,
            grid: str = "uniform", resample: int = 1, jumps: int = 1,
            generator: Optional[torch.Generator] = None) -> SampleResult:
    """Fill the entries of ``known`` where ``mask == 0`` (the replacement method, or RePaint
    with ``resample > 1``; see the module docstring).

    Args:
        score: s(x, t) -> tensor shaped like x (a ScoreModel or an oracle's ``score``).
        sde: the forward SDE.
        known: [batch, *dims] data; only the entries where mask == 1 are read.
        mask: 0/1 tensor broadcastable to known (1 = known), e.g. [*dims] for one mask.
        solver: one of ``INPAINT_SOLVERS``: a reverse-SDE update or a fixed-step
            probability-flow ODE tableau ("ode_heun", ...) or "ddim".
        steps: network evaluations of one pass down the grid (a multiple of the tableau's
            stages for "ode_*").
        eps: the end time of the grid. grid: "uniform", "quadratic", "logsnr", "karras".
        resample: RePaint's r: every block of ``jumps`` steps (but the first) is done r
            times, going back up with the forward transition in between (1: replacement).
        jumps: RePaint's jump length j (grid steps per block).
        generator: all randomness: the prior, then per reverse step the known part's
            re-noising and the step's noise, per step back up the forward noise.

    Returns:
        SampleResult: x [batch, *dims] (known entries exactly ``known``), nfe (counted),
        stats {"steps": reverse steps, "forward_steps": steps back up, "nfe"}.
    """
    check_score_and_sde(score, sde)
    check_choice("solver", solver, INPAINT_SOLVERS)
    if solver == "ddim" and not isinstance(sde, VPTypeSDE) or solver == "ancestral" \
            and not isinstance(sde, (VPTypeSDE, VESDE)):
        raise TypeError(f"solver {solver!r} is not defined for {type(sde).__name__}; use "
                        f"'euler_maruyama', 'reverse_diffusion' or an 'ode_*' solver")
    check_state("known", known, min_dim=2)
    check_finite("known", known)
    m = check_mask(mask, known)
    check_matches_network("known", known, score)
    steps = check_int("steps", steps, minimum=1)
    eps = check_real("eps", eps, positive=True)
    if not eps < sde.T:
        raise ValueError(f"eps (the end time) must be > 0 and < T = {sde.T:g}, got {eps}")
    check_choice("grid", grid, tuple(GRIDS))
    resample = check_int("resample", resample, minimum=1)
    jumps = check_int("jumps", jumps, minimum=1)
    check_instance("generator", generator, (torch.Generator, type(None)),
                   "a torch.Generator or None")
    stages = solvers.FIXED_ODE_METHODS[solver[4:]].stages if solver.startswith("ode_") else 1
    if steps % stages:
        lo = max(stages, steps - steps % stages)
        raise ValueError(f"steps counts network evaluations and must be a multiple of "
                         f"{stages} for {solver!r}, got {steps}; use {lo} or {lo + stages}")
    n = steps // stages
    if jumps > n:
        raise ValueError(f"jumps must be <= the number of grid steps {n}, got {jumps}")

    counted = solvers.CountingFunction(unchecked(score))
    noise = solvers.GaussianNoise(generator)
    x = sde.prior_sampling(tuple(known.shape), generator=generator, dtype=known.dtype,
                           device=known.device)
    g = Grid.build(sde, time_grid(sde, n, eps, grid), x)
    step = _step(solver, sde, counted, g)
    y = known * m  # the unknown entries of ``known`` are never read
    path = repaint_schedule(n, jumps, resample)
    down = up = 0
    with torch.no_grad(), solvers.naming_solver(f"inpaint(solver={solver!r})"):
        for i, j in zip(path[:-1], path[1:]):
            if j == i + 1:
                x = _replace(x, y, m, g, i, noise)
                upd = step(i, x, g.t[i], g.t[j], noise)
                x = upd.mean
                if upd.noise_scale is not None and j < n:  # no noise on the final step
                    x = x + upd.noise_scale * noise.draw(x)
                down += 1
            else:
                x = _forward(sde, x, g, i, j, noise)
                up += 1
            solvers.check_finite_result(x, step=down + up, t=float(g.ts[j]),
                                        what="the state became NaN/inf")
    x = y + (1.0 - m) * x
    return SampleResult(x=x, nfe=counted.calls,
                        stats={"steps": down, "forward_steps": up, "nfe": counted.calls},
                        ts=g.ts)


def _replace(x: Tensor, y: Tensor, m: Tensor, g: Grid, i: int, noise) -> Tensor:
    """The known entries re-noised from the forward marginal at t_i: alpha_i y + std_i z
    (Song et al. 2021, App. I.2), the unknown ones kept."""
    alpha, std, _ = g.at(i, x)
    return m * (alpha * y + std * noise.draw(x)) + (1.0 - m) * x


def _forward(sde: SDE, x: Tensor, g: Grid, s: int, t: int, noise) -> Tensor:
    """One step back up from t_s to t_t > t_s with the exact forward transition
    x_t = x_s + f + G z (``SDE.discretize``; RePaint's q(x_t | x_{t-1}), Lugmayr et al.
    2022, Alg. 1, line 13)."""
    tt = g.t[t:t + 1]
    f, G = sde._discretize(x, tt, tt - g.t[s:s + 1])
    return x + f + batch_view(G, x) * noise.draw(x)


def _step(solver: str, sde: SDE, score: ScoreFn, g: Grid
          ) -> Callable[[int, Tensor, Tensor, Tensor, Any], Update]:
    """The sampler's update from t_i to t_{i+1}: a registry predictor, DDIM (eta 0) or a
    Runge–Kutta step of the probability-flow ODE."""
    if solver in PREDICTORS:
        update = PREDICTORS[solver]
        return lambda i, x, t0, t1, noise: update(sde, score, g, i, x)
    if solver == "ddim":
        return lambda i, x, t0, t1, noise: ddim(sde, score, g, i, x, eta=0.0)
    return solvers.rk_step(probability_flow(sde, score), solvers.FIXED_ODE_METHODS[solver[4:]])


__all__ = ["inpaint", "repaint_schedule", "check_mask", "INPAINT_SOLVERS"]

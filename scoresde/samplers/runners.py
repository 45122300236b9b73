"""How each family of samplers runs: ``run(ctx, x) -> solvers.Solution``.

A runner turns ``steps`` (network evaluations) into its grid, builds the grid's
coefficients once (:class:`~scoresde.samplers.grid.Grid`), makes a ``solvers`` step
function ``step(i, x, t0, t1, noise) -> Update`` and hands both to the shared loop
(``solvers.integrate``; the loop draws the noise and drops it on the final update) or to
an adaptive solver. Options arrive checked against the registry's schema.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

import solvers
from solvers import Update

from ..dynamics import probability_flow, reverse_sde
from ..grids import index_grid, noise_ratio, time_from_noise_ratio, time_grid
from ..score import ScoreFn, call_score, x0_from_score
from ..sdes import SDE, DiscreteVPSDE
from . import dpm_solver as dpm
from . import karras
from . import unipc as uni
from .correctors import CORRECTORS
from .grid import Grid
from .predictors import PREDICTORS, ddim as ddim_update


@dataclass(frozen=True)
class Context:
    """What a runner needs: the counted score, the SDE, the noise source, the options."""
    score: ScoreFn
    sde: SDE
    noise: Any                      # solvers noise source (draw(like) -> z)
    generator: Optional[torch.Generator]
    loop: Dict[str, Any]            # progress, callback, save_trajectory
    opts: Dict[str, Any]


def grid_steps_for(steps: int, per_step: int, solver: str, why: str) -> int:
    """Grid steps for ``steps`` network evaluations at ``per_step`` each; an error naming
    the nearest valid values when ``steps`` is not a multiple."""
    if per_step < 1:
        raise ValueError(f"solver {solver!r} makes no network evaluation per step ({why}); "
                         f"choose a predictor or a corrector")
    if steps % per_step:
        lo = max(per_step, steps - steps % per_step)
        raise ValueError(f"steps counts network evaluations and must be a multiple of "
                         f"{per_step} for {solver!r} ({why}), got {steps}; use {lo} or "
                         f"{lo + per_step}")
    return steps // per_step


def grid_for(ctx: Context, x: Tensor, intervals: int) -> Grid:
    """The time grid of the options ``eps`` and ``grid`` with ``intervals`` steps from T,
    with its coefficients on x's dtype and device."""
    o = ctx.opts
    return Grid.build(ctx.sde, time_grid(ctx.sde, intervals, o["eps"], o["grid"]), x)


def _predictor_step(ctx: Context, grid: Grid, update: Callable, **kwargs) -> solvers.Step:
    def step(i: int, x: Tensor, t0: Tensor, t1: Tensor, noise) -> Update:
        return update(ctx.sde, ctx.score, grid, i, x, **kwargs)
    return step


def run_on_grid(ctx: Context, step: solvers.Step, x: Tensor, grid: Grid,
                noise: bool = True) -> solvers.Solution:
    """The shared loop over the grid, with the call's progress bar, callback and
    trajectory options; samplers drop the final update's noise."""
    return solvers.integrate(step, x, grid.t, noise=ctx.noise if noise else None,
                             final_noise=False, **ctx.loop)


# -- runners ----------------------------------------------------------------------------
def predictor(name: str) -> Callable[[Context, Tensor], solvers.Solution]:
    """A reverse-SDE predictor alone: one evaluation per grid step."""
    update = PREDICTORS[name]

    def run(ctx: Context, x: Tensor) -> solvers.Solution:
        grid = grid_for(ctx, x, ctx.opts["steps"])
        return run_on_grid(ctx, _predictor_step(ctx, grid, update), x, grid)
    return run


def evaluations_per_grid_step(opts: Dict[str, Any]) -> int:
    """Network evaluations per grid step: 1, or for "pc" the predictor's (0 for "none")
    plus one per corrector move."""
    if "corrector" not in opts:
        return 1
    n_corr = opts["corrector_steps"] if CORRECTORS[opts["corrector"]] is not None else 0
    return int(opts["predictor"] != "none") + n_corr


def pc(ctx: Context, x: Tensor) -> solvers.Solution:
    """Predictor–corrector: corrector moves at t_i, then the predictor (solvers.pc)."""
    o = ctx.opts
    make = CORRECTORS[o["corrector"]]
    n_corr = o["corrector_steps"] if make is not None else 0
    grid = grid_for(ctx, x, grid_steps_for(
        o["steps"], evaluations_per_grid_step(o), "pc",
        f"predictor {o['predictor']!r}, {n_corr} corrector move(s) per grid step"))
    corrector = None if make is None else make(ctx.sde, ctx.score, o["snr"], o["norm"])
    step = solvers.predictor_corrector_step(
        _predictor_step(ctx, grid, PREDICTORS[o["predictor"]]), corrector, n_corr)
    return run_on_grid(ctx, step, x, grid)


def ode_fixed(method: str) -> Callable[[Context, Tensor], solvers.Solution]:
    """The probability-flow ODE with a fixed-step Runge–Kutta tableau."""
    stages = solvers.FIXED_ODE_METHODS[method].stages

    def run(ctx: Context, x: Tensor) -> solvers.Solution:
        grid = grid_for(ctx, x, grid_steps_for(
            ctx.opts["steps"], stages, f"ode_{method}", f"{stages} per {method} step"))
        return solvers.odeint_fixed(probability_flow(ctx.sde, ctx.score), x, grid.t,
                                    method=method, **ctx.loop)
    return run


def ode_adaptive(ctx: Context, x: Tensor) -> solvers.Solution:
    o = ctx.opts
    return solvers.odeint_adaptive(
        probability_flow(ctx.sde, ctx.score), x, ctx.sde.T, o["eps"], method=o["method"],
        rtol=o["rtol"], atol=o["atol"], max_steps=o["max_steps"],
        t_eval=None, progress=ctx.loop["progress"])


def sde_adaptive(ctx: Context, x: Tensor) -> solvers.Solution:
    o = ctx.opts
    drift, diffusion = reverse_sde(ctx.sde, ctx.score)
    # seeded: one Brownian path per sample, keyed by its global index
    entropies = (ctx.noise.entropies(x.shape[0]) if isinstance(ctx.noise, solvers.SeededNoise)
                 else None)
    return solvers.sdeint_torchsde(drift, diffusion, x, ctx.sde.T, o["eps"], method=o["method"],
                                   dt=o["dt"], adaptive=True, rtol=o["rtol"], atol=o["atol"],
                                   max_steps=o["max_steps"], generator=ctx.generator,
                                   entropies=entropies)


def timestep_times(ctx: Context) -> Optional[Tensor]:
    """The times of the option ``timesteps`` (DDPM indices, as diffusers'
    ``scheduler.timesteps``) followed by t = 0, float64; None when not given."""
    steps, sde = ctx.opts.get("timesteps"), ctx.sde
    if steps is None:
        return None
    if not isinstance(sde, DiscreteVPSDE):
        raise TypeError(f"timesteps (DDPM indices) need a DiscreteVPSDE, got "
                        f"{type(sde).__name__}; use steps= and grid= instead")
    if steps[0] >= sde.N:
        raise ValueError(f"timesteps must lie in {{0..{sde.N - 1}}} for this DiscreteVPSDE "
                         f"(N = {sde.N}), got {steps[0]}")
    ts = sde.index_to_time(torch.tensor(steps))
    return torch.cat([ts, ts.new_zeros(1)])


def ddpm(ctx: Context, x: Tensor) -> solvers.Solution:
    """DDPM's Algorithm 2 on index times (all N, ``steps`` of them or ``timesteps``), with
    sigma^2 = beta ("fixed_large") or the posterior variance beta_tilde ("fixed_small", which
    is DDIM's update with eta = 1; Ho et al. 2020, Sec. 3.2)."""
    sde, o = ctx.sde, ctx.opts
    ts = timestep_times(ctx)
    if ts is None:
        ts = index_grid(sde, sde.N if o["steps"] is None else o["steps"], o["grid"])
    grid = Grid.build(sde, ts, x)
    if o["variance"] == "fixed_small":
        step = _predictor_step(ctx, grid, ddim_update, eta=1.0)
    else:
        step = _predictor_step(ctx, grid, PREDICTORS["ancestral"])
    return run_on_grid(ctx, step, x, grid)


def _stride_targets(sde: SDE, ts: Tensor, like: Tensor) -> Tensor:
    """Where diffusers' DDIMScheduler ends each step: index k - N // n from index k of the
    n evaluation times ``ts[:-1]`` (t = 0 below index 0), on ``like``'s dtype and device."""
    k = sde.time_to_index(ts[:-1])
    prev = k - sde.N // k.numel()
    to = torch.where(prev >= 0, sde.index_to_time(prev.clamp(min=0)), torch.zeros_like(ts[:-1]))
    return to.to(like)


def ddim(ctx: Context, x: Tensor) -> solvers.Solution:
    """DDIM: ``steps`` evaluations from T (or at ``timesteps``), the last update ending at t = 0."""
    sde, o = ctx.sde, ctx.opts
    ts = timestep_times(ctx)
    if ts is None and isinstance(sde, DiscreteVPSDE):
        ts = index_grid(sde, o["steps"], o["grid"])
    elif ts is None:  # steps network evaluations from T to eps, then the final update to t = 0
        ts = (torch.tensor([sde.T], dtype=torch.float64) if o["steps"] == 1 else
              time_grid(sde, o["steps"] - 1, o["eps"], o["grid"]))
        ts = torch.cat([ts, ts.new_zeros(1)])
    to = None
    if o["step_to"] == "stride":
        if not isinstance(sde, DiscreteVPSDE):
            raise TypeError(f"step_to='stride' steps on DDPM indices and needs a "
                            f"DiscreteVPSDE, got {type(sde).__name__}; use step_to='next'")
        to = _stride_targets(sde, ts, x)
    grid = Grid.build(sde, ts, x)
    return run_on_grid(ctx, _predictor_step(ctx, grid, ddim_update, eta=o["eta"], to=to),
                       x, grid)


def dpm_solver(data_prediction: bool) -> Callable[[Context, Tensor], solvers.Solution]:
    """DPM-Solver / DPM-Solver++: ``steps`` evaluations, singlestep or multistep."""
    def run(ctx: Context, x: Tensor) -> solvers.Solution:
        o = ctx.opts
        order = o["order"]
        if o["method"] == "singlestep":
            if o.get("timesteps") is not None:
                raise ValueError("timesteps apply to method='multistep' (as diffusers' "
                                 "DPMSolverMultistepScheduler), not 'singlestep'")
            if data_prediction and order > 1:
                raise ValueError("dpm_solver++ is implemented as a multistep method; use "
                                 "method='multistep' or solver='dpm_solver'")
            orders = dpm.singlestep_orders(o["steps"], order)
            grid = grid_for(ctx, x, len(orders))
            step = dpm.singlestep_step(ctx.sde, ctx.score, grid, orders,
                                       dpm.inner_grid(ctx.sde, grid.t, orders, x))
        else:
            ts = timestep_times(ctx)
            grid = grid_for(ctx, x, o["steps"]) if ts is None else Grid.build(ctx.sde, ts, x)
            step = dpm.multistep_step(ctx.sde, ctx.score, grid, order, data_prediction,
                                      o["lower_order_final"])
        return run_on_grid(ctx, step, x, grid, noise=False)
    return run


def unipc(ctx: Context, x: Tensor) -> solvers.Solution:
    """UniPC: ``steps`` evaluations on the grid, a free corrector after every step but the last."""
    o = ctx.opts
    grid = grid_for(ctx, x, o["steps"])
    step = uni.unipc_step(ctx.sde, ctx.score, grid, o["order"], o["lower_order_final"])
    return run_on_grid(ctx, step, x, grid, noise=False)


def heun_karras(ctx: Context, x: Tensor) -> solvers.Solution:
    """EDM's Heun sampler: (steps + 1)/2 noise levels, the last step Tweedie's x0."""
    o, sde = ctx.opts, ctx.sde
    if o["steps"] < 3 or o["steps"] % 2 == 0:
        lo = max(3, (o["steps"] - 1) | 1)
        raise ValueError(f"steps counts network evaluations and must be odd and >= 3 for "
                         f"'heun_karras' (2 per noise level, 1 for the last; >= 2 noise "
                         f"levels), got {o['steps']}; use {lo} or {lo + 2}")
    levels = (o["steps"] + 1) // 2
    # the noise levels from the grid (the last at eps), then the final step to sigma = 0
    ts = time_grid(sde, levels - 1, o["eps"], o["grid"])
    sig = noise_ratio(sde, ts)[:-1]
    gam = karras.churn_gammas(sig, o["s_churn"], o["s_tmin"], o["s_tmax"])
    sig_max = noise_ratio(sde, ts[:1])
    # without churn (the default, S_churn = 0) t_hat = t: no second bisection
    t_hat = ts[:-1] if not bool((gam > 0).any()) else torch.where(
        gam > 0, time_from_noise_ratio(sde, torch.minimum(sig * (1.0 + gam), sig_max)),
        ts[:-1])
    grid, churned = Grid.build(sde, ts, x), Grid.build(sde, t_hat, x)
    churn = (churned.t > grid.t[:-1]).tolist()  # in the state's dtype, as the step compares
    step = karras.heun_step(sde, ctx.score, grid, churned, churn, o["s_noise"])
    sol = run_on_grid(ctx, step, x, grid)
    alpha, std, _ = grid.at(len(grid) - 1, x)  # Tweedie's x0 at the last noise level
    sol.x = x0_from_score(sol.x, call_score(ctx.score, sol.x, grid.time(len(grid) - 1, x)),
                          alpha, std)
    return sol

"""``sample``: one entry point for every sampler, chosen by name per call."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor

import solvers

from .._shapes import batch_time, batch_view
from .._validation import (check_callable, check_choice, check_finite, check_floating_dtype,
                           check_instance, check_int, check_matches_network, check_real,
                           check_shape, check_state, first_float_parameter, same_device)
from ..dynamics import probability_flow, reverse_sde
from ..grids import GRIDS, index_grid, noise_ratio, time_from_noise_ratio, time_grid
from ..score import ScoreFn, call_score, unchecked
from ..sdes import SDE, DiscreteVPSDE, VPTypeSDE
from . import dpm_solver, karras, updates
from .correctors import CORRECTORS


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        x: the samples [batch, *dims] at the end time (after the denoising step if asked).
        nfe: score/network evaluations actually made (counted, not computed).
        stats: solver statistics: steps, and accepted/rejected steps for adaptive solves.
        ts: the times of ``trajectory`` (or of the grid for fixed-step samplers), or None.
        trajectory: [n_times, batch, *dims] states when return_trajectory=True, else None.
    """
    x: Tensor
    nfe: int
    stats: Dict[str, Any] = field(default_factory=dict)
    ts: Optional[Tensor] = None
    trajectory: Optional[Tensor] = None


@dataclass(frozen=True)
class _Context:
    score: ScoreFn           # counted
    sde: SDE
    noise: Any               # solvers noise source (draw(like) -> z)
    generator: Optional[torch.Generator]
    loop: Dict[str, Any]     # progress, callback, save_trajectory
    opts: Dict[str, Any]


# -- runners: one per family of samplers ---------------------------------------------
def _predictor_step(ctx: _Context, update, t_last: float, n_steps: Optional[int] = None,
                    **kwargs):
    """A solvers step (x, t0, t1, noise) -> x running one predictor update.

    The last update (t1 == t_last) returns its mean. Given ``n_steps``, the step counts its
    calls to know the last one instead of reading t1 back from the device at every step.
    """
    count = [0]

    def step(x: Tensor, t0: Tensor, t1: Tensor, noise) -> Tensor:
        mean, scale = update(ctx.sde, ctx.score, x, batch_time(t0, x), batch_time(t1, x), **kwargs)
        count[0] += 1
        last = count[0] == n_steps if n_steps is not None else float(t1) == t_last
        if scale is None or last:
            return mean
        return mean + scale * noise.draw(x)
    return step


def _fixed_grid(ctx: _Context, x: Tensor) -> Tensor:
    return time_grid(ctx.sde, ctx.opts["steps"], ctx.opts["eps"], ctx.opts["grid"]).to(x)


def _run_predictor(name: str):
    update = updates.PREDICTORS[name]

    def run(ctx: _Context, x: Tensor):
        ts = _fixed_grid(ctx, x)
        return solvers.integrate(_predictor_step(ctx, update, ts[-1].item(), len(ts) - 1), x,
                                 ts, noise=ctx.noise, **ctx.loop)
    return run


def _run_pc(ctx: _Context, x: Tensor):
    o = ctx.opts
    check_choice("predictor", o["predictor"], tuple(updates.PREDICTORS))
    check_choice("corrector", o["corrector"], tuple(CORRECTORS))
    snr = check_real("snr", o["snr"], positive=True)
    n_corr = check_int("corrector_steps", o["corrector_steps"], minimum=0)
    corrector = CORRECTORS[o["corrector"]]
    ts = _fixed_grid(ctx, x)
    predict = _predictor_step(ctx, updates.PREDICTORS[o["predictor"]], ts[-1].item(),
                              len(ts) - 1)

    # score_sde's order (pc_sampler): correct at t_i, then predict t_i -> t_{i+1}, so the
    # last update is the predictor's noise-free mean.
    def step(x: Tensor, t0: Tensor, t1: Tensor, noise) -> Tensor:
        if corrector is not None:
            tb = batch_time(t0, x)
            for _ in range(n_corr):
                x = corrector(ctx.sde, ctx.score, x, tb, snr, noise.draw)
        return predict(x, t0, t1, noise)

    return solvers.integrate(step, x, ts, noise=ctx.noise, **ctx.loop)


def _run_ode_fixed(method: str):
    def run(ctx: _Context, x: Tensor):
        ts = _fixed_grid(ctx, x)
        return solvers.odeint_fixed(probability_flow(ctx.sde, ctx.score), x, ts,
                                    method=method, **ctx.loop)
    return run


def _run_ode(ctx: _Context, x: Tensor):
    o = ctx.opts
    eps = check_real("eps", o["eps"], nonnegative=True)
    return solvers.odeint_adaptive(
        probability_flow(ctx.sde, ctx.score), x, ctx.sde.T, eps, method=o["method"],
        rtol=o["rtol"], atol=o["atol"], max_steps=o["max_steps"],
        t_eval=None, progress=ctx.loop["progress"])


def _run_sde_adaptive(ctx: _Context, x: Tensor):
    o = ctx.opts
    eps = check_real("eps", o["eps"], nonnegative=True)
    drift, diffusion = reverse_sde(ctx.sde, ctx.score)
    return solvers.sdeint_torchsde(drift, diffusion, x, ctx.sde.T, eps, method=o["method"],
                                   dt=o["dt"], adaptive=True, rtol=o["rtol"], atol=o["atol"],
                                   max_steps=o["max_steps"], generator=ctx.generator)


def _run_ddpm(ctx: _Context, x: Tensor):
    sde = ctx.sde
    ts = index_grid(sde, sde.N if ctx.opts["steps"] is None else ctx.opts["steps"],
                    ctx.opts["grid"]).to(x)
    step = _predictor_step(ctx, updates.ancestral, ts[-1].item(), len(ts) - 1)
    return solvers.integrate(step, x, ts, noise=ctx.noise, **ctx.loop)


def _run_ddim(ctx: _Context, x: Tensor):
    sde, o = ctx.sde, ctx.opts
    eta = check_real("eta", o["eta"], nonnegative=True)
    if isinstance(sde, DiscreteVPSDE):
        ts = index_grid(sde, o["steps"], o["grid"])
    else:  # steps network evaluations from T to eps, then the final update to t = 0
        steps = check_int("steps", o["steps"], minimum=1)
        ts = (torch.tensor([sde.T], dtype=torch.float64) if steps == 1 else
              time_grid(sde, steps - 1, o["eps"], o["grid"]))
        ts = torch.cat([ts, ts.new_zeros(1)])
    ts = ts.to(x)
    step = _predictor_step(ctx, updates.ddim, ts[-1].item(), len(ts) - 1, eta=eta)
    return solvers.integrate(step, x, ts, noise=ctx.noise, **ctx.loop)


def _run_dpm_solver(data_prediction: bool):
    def run(ctx: _Context, x: Tensor):
        o = ctx.opts
        order = check_int("order", o["order"], minimum=1)
        if order > 3:
            raise ValueError(f"order must be 1, 2 or 3, got {order}")
        method = check_choice("method", o["method"], ("multistep", "singlestep"))
        ts = _fixed_grid(ctx, x)
        if method == "singlestep":
            if data_prediction and order > 1:
                raise ValueError("dpm_solver++ is implemented as a multistep method; use "
                                 "method='multistep' or solver='dpm_solver'")
            step = dpm_solver.singlestep_step(ctx.sde, ctx.score, order,
                                              dpm_solver.inner_times(ctx.sde, ts, order))
        else:
            step = dpm_solver.multistep_step(ctx.sde, ctx.score, order, len(ts) - 1,
                                             data_prediction, bool(o["lower_order_final"]))
        return solvers.integrate(step, x, ts, noise=None, **ctx.loop)
    return run


def _run_heun_karras(ctx: _Context, x: Tensor):
    o = ctx.opts
    steps = check_int("steps", o["steps"], minimum=2)
    for name in ("s_churn", "s_tmin", "s_tmax", "s_noise"):
        check_real(name, o[name], nonnegative=True, finite=(name != "s_tmax"))
    # N sigmas from the grid (the last at eps), then the final Euler step to sigma = 0
    ts = time_grid(ctx.sde, steps - 1, o["eps"], o["grid"])
    sig = noise_ratio(ctx.sde, ts)[:-1]
    gam = karras.churn_gammas(sig, o["s_churn"], o["s_tmin"], o["s_tmax"])
    sig_max = noise_ratio(ctx.sde, ts[:1])
    t_hat = torch.where(gam > 0, time_from_noise_ratio(ctx.sde, torch.minimum(
        sig * (1.0 + gam), sig_max)), ts[:-1])
    ts_x = ts.to(x)
    churn = (t_hat.to(x) > ts_x[:-1]).tolist()  # on the state's dtype, as the step compares
    step = karras.heun_step(ctx.sde, ctx.score, t_hat, float(o["s_noise"]), churn)
    sol = solvers.integrate(step, x, ts_x, noise=ctx.noise, **ctx.loop)
    sol.x = tweedie_denoise(ctx.score, ctx.sde, sol.x, float(ts[-1]))
    return sol


# -- the registry ---------------------------------------------------------------------
@dataclass(frozen=True)
class SolverSpec:
    """A named sampler: how to run it, which options it takes (with defaults), what it is."""
    run: Callable[[_Context, Tensor], Any]
    options: Mapping[str, Any]
    summary: str
    requires: Optional[type] = None   # SDE class it needs, if any


_GRID = {"steps": None, "eps": 1e-3, "grid": "uniform", "denoise": False}
_ADAPTIVE = {"rtol": 1e-5, "atol": 1e-5, "eps": 1e-3, "denoise": False}

SOLVERS: Dict[str, SolverSpec] = {
    "euler_maruyama": SolverSpec(_run_predictor("euler_maruyama"), _GRID,
                                 "Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6)"),
    "reverse_diffusion": SolverSpec(_run_predictor("reverse_diffusion"), _GRID,
                                    "reverse diffusion predictor (Song et al. 2021, App. E)"),
    "ancestral": SolverSpec(_run_predictor("ancestral"), _GRID,
                            "ancestral sampling (Song et al. 2021, App. F; DDPM for VP)"),
    "pc": SolverSpec(_run_pc, {**_GRID, "predictor": "reverse_diffusion",
                               "corrector": "langevin", "snr": 0.16, "corrector_steps": 1},
                     "predictor–corrector (Song et al. 2021, Alg. 1, 4, 5)"),
    "ode": SolverSpec(_run_ode, {**_ADAPTIVE, "method": "dopri5", "max_steps": 10_000},
                      "adaptive probability-flow ODE (Song et al. 2021, eq. 13)"),
    "ode_euler": SolverSpec(_run_ode_fixed("euler"), _GRID, "probability-flow ODE, Euler"),
    "ode_heun": SolverSpec(_run_ode_fixed("heun"), _GRID, "probability-flow ODE, Heun (RK2)"),
    "ode_rk4": SolverSpec(_run_ode_fixed("rk4"), _GRID,
                          "probability-flow ODE, classical Runge–Kutta (RK4)"),
    "sde_adaptive": SolverSpec(_run_sde_adaptive, {"rtol": 1e-3, "atol": 1e-3, "eps": 1e-3,
                                                   "denoise": False, "method": "srk",
                                                   "dt": 1e-2, "max_steps": 100_000},
                               "adaptive reverse-SDE solve by torchsde"),
    "ddpm": SolverSpec(_run_ddpm, {"steps": None, "grid": "uniform"},
                       "DDPM ancestral sampler (Ho et al. 2020, Alg. 2), on all N steps or a subset",
                       requires=DiscreteVPSDE),
    "ddim": SolverSpec(_run_ddim, {"steps": 50, "eta": 0.0, "grid": "uniform", "eps": 1e-3},
                       "DDIM (Song, Meng & Ermon 2021, eq. 12)", requires=VPTypeSDE),
    "dpm_solver": SolverSpec(_run_dpm_solver(False),
                             {**_GRID, "steps": 20, "grid": "logsnr", "order": 3,
                              "method": "singlestep", "lower_order_final": True},
                             "DPM-Solver orders 1-3, singlestep or multistep (Lu et al. 2022a)"),
    "dpm_solver++": SolverSpec(_run_dpm_solver(True),
                               {**_GRID, "steps": 20, "grid": "logsnr", "order": 2,
                                "method": "multistep", "lower_order_final": True},
                               "DPM-Solver++ 1, 2M, 3M (Lu et al. 2022b)"),
    "heun_karras": SolverSpec(_run_heun_karras,
                              {"steps": 18, "eps": 1e-3, "grid": "karras", "s_churn": 0.0,
                               "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0},
                              "Heun sampler of Karras et al. 2022, Alg. 1 (with churn, Alg. 2)"),
}

_DEFAULT_STEPS = {"ode_euler": 100, "ode_heun": 100, "ode_rk4": 100}


def sample(score: ScoreFn, sde: SDE, shape: Sequence[int], solver: str = "pc", *,
           generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None,
           dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None,
           progress: bool = False, callback: Optional[Callable[[int, float, Tensor], None]] = None,
           return_trajectory: bool = False, grad: bool = False,
           batch_size: Optional[int] = None, **options: Any) -> SampleResult:
    """Draw samples by integrating the reverse-time SDE or the probability-flow ODE.

    Args:
        score: s(x, t) -> tensor shaped like x, t a [batch] tensor (e.g. a ScoreModel or
            an oracle's ``score``).
        sde: the forward SDE.
        shape: [batch, *dims] of the samples.
        solver: a name from ``SOLVERS`` (see ``scoresde.samplers.list_solvers()``).
        generator: torch.Generator for all randomness: the prior is drawn first, then one
            standard normal tensor shaped like x per stochastic update, in order.
        x_T: start from this state at t = T instead of a prior draw.
        dtype, device: of the samples (default: those of the network's parameters when
            ``score`` is an nn.Module, else torch's default dtype; the generator's device).
        progress: show a tqdm bar. callback: called as callback(step, t, x) after each
            fixed-grid step (with ``batch_size``, for each chunk in turn).
            return_trajectory: keep every state in ``result.trajectory``.
        grad: record the autograd graph through the whole solve, so that the samples can
            be differentiated with respect to the network's parameters or ``x_T``
            (memory grows with the number of steps; torch backends only, not scipy's
            methods). Default False: no graph is kept across steps and ``result.x`` does
            not require grad, whatever the network's parameters.
        batch_size: solve at most this many samples at a time (default: all at once),
            bounding memory for very large ``shape[0]``. The prior is drawn for the whole
            batch first, so fixed-step deterministic solvers give the samples of one big
            batch: bitwise when the score computes each sample the same way whatever the
            batch (closed-form scores); a network's matrix products may run other BLAS
            kernels at another batch size and differ in the last bits. Stochastic
            solvers draw each chunk's noise from ``generator`` in turn (chunk 1's steps, then chunk 2's, ...): the result equals
            sampling the chunks one after another from ``x_T`` with the same generator,
            not the one-batch run. Adaptive solvers control the error of each chunk
            separately, so their steps (and results, within the tolerance) differ from
            one batch. ``nfe`` and the step counts in ``stats`` are totals over chunks.
        **options: the solver's own options, e.g. steps, eps (end time), grid ("uniform",
            "quadratic", "logsnr", "karras"), denoise (a final Tweedie step
            x0 = (x + std^2 score)/alpha), predictor, corrector, snr, corrector_steps
            ("pc"), method, rtol, atol, max_steps ("ode", "sde_adaptive"), eta ("ddim").
            An option the solver does not take is an error.

    Returns:
        SampleResult with x [batch, *dims], nfe (counted score evaluations), stats.
    """
    check_callable("score", score, "score(x, t)")
    check_instance("sde", sde, SDE, "a scoresde SDE (VPSDE, VESDE, ...)")
    check_choice("solver", solver, tuple(SOLVERS))
    spec = SOLVERS[solver]
    if not isinstance(grad, bool):
        raise TypeError(f"grad must be True or False, got {grad!r}")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to solver {solver!r}; "
                         f"its options are: {', '.join(spec.options) or 'none'}")
    if spec.requires is not None and not isinstance(sde, spec.requires):
        raise TypeError(f"solver {solver!r} needs a {spec.requires.__name__}, got "
                        f"{type(sde).__name__}")
    opts = {**spec.options, **options}
    if "steps" in opts and opts["steps"] is None and solver != "ddpm":
        opts["steps"] = _DEFAULT_STEPS.get(solver, sde.N)
    if "grid" in opts:
        check_choice("grid", opts["grid"], GRIDS)
    method = solvers.ADAPTIVE_ODE_METHODS.get(opts["method"]) if solver == "ode" else None
    if grad and method is not None and method.backend == "scipy":
        raise ValueError(f"grad=True needs a torch solver, but method={opts['method']!r} runs "
                         f"in scipy (NumPy), which cannot carry gradients; use a torchdiffeq "
                         f"method such as method='dopri5'")
    if "eps" in opts:
        eps = check_real("eps", opts["eps"], nonnegative=True)
        if not eps < sde.T:
            raise ValueError(f"eps (the end time) must be >= 0 and < T = {sde.T:g}, got {eps}")
    if "denoise" in opts:
        check_instance("denoise", opts["denoise"], bool, "True or False")
    if callback is not None:
        check_callable("callback", callback, "callback(step, t, x)")
    shape = check_shape("shape", shape)
    if dtype is not None:
        check_floating_dtype("dtype", dtype)
    if generator is not None:
        check_instance("generator", generator, torch.Generator, "a torch.Generator or None")
        where = device if device is not None else x_T.device if isinstance(x_T, Tensor) else None
        if where is not None and not same_device(generator.device, torch.device(where)):
            raise ValueError(f"generator is on {generator.device} but the samples are on "
                             f"{torch.device(where)} (device= or x_T); draw them with a "
                             f"generator on that device: torch.Generator(device="
                             f"{str(torch.device(where))!r})")
    if x_T is not None:
        check_state("x_T", x_T)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must be a tensor of shape {shape}, got shape "
                             f"{tuple(x_T.shape)}")
        check_finite("x_T", x_T)

    # A network's parameters set the default dtype and device of the samples, so that a
    # float64 or CUDA model samples in float64 or on CUDA without extra arguments.
    param = first_float_parameter(score)
    if param is not None and x_T is None:
        dtype = dtype or param.dtype
        device = device or (generator.device if generator is not None else param.device)
    if x_T is None:
        x = sde.prior_sampling(shape, generator=generator, dtype=dtype, device=device)
    else:
        x = x_T.to(dtype=dtype or x_T.dtype, device=device or x_T.device)

    check_matches_network("x_T", x, score)
    counted = solvers.CountingFunction(unchecked(score))
    ctx = _Context(score=counted, sde=sde, noise=solvers.GaussianNoise(generator),
                   generator=generator, opts=opts,
                   loop={"progress": progress, "callback": callback,
                         "save_trajectory": return_trajectory})
    for name, value in (("callback", callback), ("return_trajectory", return_trajectory)):
        if value and solver in ("ode", "sde_adaptive"):
            raise ValueError(f"{name} applies to fixed-grid solvers, not the adaptive "
                             f"{solver!r}; use a fixed-step solver such as 'ode_rk4'")
    # No autograd graph across steps unless asked for: every network evaluation's
    # activations would otherwise live until the end of the solve (a trained network's
    # parameters require grad). A step that needs a gradient takes it locally.
    with torch.set_grad_enabled(grad):
        sols = []
        for chunk in x.split(batch_size or x.shape[0]):
            # Errors name the solver; a final denoising step (Tweedie) is checked like a step.
            with solvers.naming_solver(f"sample(solver={solver!r}" + (
                    f", method={opts['method']!r})" if "method" in opts else ")")):
                sol = spec.run(ctx, chunk)
                if opts.get("denoise"):
                    sol.x = tweedie_denoise(counted, sde, sol.x, float(opts["eps"]))
                solvers.check_finite_result(
                    sol.x, step=sol.stats.get("steps", 0) + 1, t=float(opts.get("eps", 0.0)),
                    what="the final denoising step (Tweedie's formula) returned NaN/inf")
            sols.append(sol)
    return _merge_chunks(sols, counted.calls, return_trajectory)


def _merge_chunks(sols: List[Any], nfe: int, return_trajectory: bool) -> SampleResult:
    """One SampleResult from the solutions of consecutive chunks of the batch: states
    concatenated along the batch (the trajectory along its second axis), work counters
    summed (``solvers.total_stats``), ``nfe`` every evaluation made."""
    x = sols[0].x if len(sols) == 1 else torch.cat([s.x for s in sols])
    stats = {**solvers.total_stats([s.stats for s in sols]), "nfe": nfe}
    trajectory = None
    if return_trajectory:
        trajectory = (sols[0].xs if len(sols) == 1 else torch.cat([s.xs for s in sols], 1))
    return SampleResult(x=x, nfe=nfe, stats=stats, ts=sols[0].ts, trajectory=trajectory)


def tweedie_denoise(score: ScoreFn, sde: SDE, x: Tensor, t: float) -> Tensor:
    """Tweedie's formula E[x_0 | x_t] = (x_t + std^2 score(x_t, t))/alpha (Efron 2011;
    Song et al. 2021, App. G), one score evaluation."""
    tb = sde.time(t, batch=x.shape[0], like=x)
    alpha, std = sde._marginal_coeffs(tb)
    return (x + batch_view(std ** 2, x) * call_score(score, x, tb)) / batch_view(alpha, x)


def list_solvers() -> Dict[str, str]:
    """Solver name -> one-line description with its source."""
    return {name: spec.summary for name, spec in SOLVERS.items()}

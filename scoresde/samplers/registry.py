"""The sampler registry: every named sampler with its option schema.

A :class:`SolverSpec` says how to run a sampler (its runner in ``runners.py``), which
options it takes (an :class:`Option` each: type, range, default, help), whether it is a
fixed-step or an adaptive solver, which grid it walks and how ``steps`` maps onto it.
``sample()`` validates every option from the schema before any work, and the CLI builds
its flags from the same schema.

``steps`` counts network evaluations for every fixed-step sampler (as in DPM-Solver,
diffusers and k-diffusion), so ``result.nfe == steps`` without ``denoise``; where a
sampler makes several evaluations per grid step, ``steps`` must be a multiple of them
(the spec's ``steps_rule`` says so, and ``sample()`` names the nearest valid values).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from solvers import ADAPTIVE_ODE_METHODS, FIXED_ODE_METHODS, TORCHSDE_METHODS
from solvers.pc import NORMS

import numpy as np
import torch

from solvers.validation import _describe, _got, is_integer

from .._validation import check_choice, check_instance, check_int, check_real
from ..grids import GRIDS
from ..sdes import DiscreteVPSDE, VPTypeSDE
from . import runners
from .correctors import CORRECTORS
from .predictors import PREDICTORS


@dataclass(frozen=True)
class Option:
    """One option of a sampler.

    Attributes:
        default: its value when not given (``None``: the sampler's own choice, see help).
        kind: "int", "real", "choice", "bool" or "timesteps" (a strictly decreasing
            sequence of integers >= 0, as diffusers' ``scheduler.timesteps``).
        minimum, maximum: bounds of an "int".
        sign: for a "real": "positive" (> 0), "nonnegative" (>= 0) or "" (any).
        finite: a "real" must be finite (False allows inf, e.g. s_tmax).
        choices: the allowed values of a "choice".
        help: one line for ``list_solvers()`` and the CLI.
        allowed: how an error words the requirement (default: from the bounds).
    """

    default: Any
    kind: str
    help: str
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    sign: str = ""
    finite: bool = True
    choices: Tuple[str, ...] = ()
    allowed: Optional[str] = None

    def check(self, name: str, value: Any) -> Any:
        """``value`` checked against the schema (``None`` passes where it is the default);
        ValueError/TypeError naming the option, the value and what is allowed."""
        if value is None and self.default is None:
            return None
        if self.kind == "int":
            value = check_int(name, value, minimum=self.minimum, allowed=self.allowed)
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"{name} must be {self.allowed or f'an integer in '}"
                                 f"{'' if self.allowed else f'[{self.minimum}, {self.maximum}]'}"
                                 f", got {value}")
            return value
        if self.kind == "real":
            return check_real(name, value, positive=self.sign == "positive",
                              nonnegative=self.sign == "nonnegative", finite=self.finite,
                              allowed=self.allowed)
        if self.kind == "choice":
            return check_choice(name, value, self.choices)
        if self.kind == "timesteps":
            return check_timesteps(name, value)
        return check_instance(name, value, bool, "True or False")


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def check_timesteps(name: str, value: Any) -> Tuple[int, ...]:
    """``value`` (a sequence, 1-D integer tensor or array) as a tuple of ints, checked to be
    non-empty, >= 0 and strictly decreasing, as diffusers' ``scheduler.timesteps``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        integral = (np.issubdtype(value.dtype, np.integer) if isinstance(value, np.ndarray)
                    else value.dtype in _INT_DTYPES)
        if value.ndim != 1 or not integral:
            raise TypeError(f"{name} must be a 1-D sequence of integers, got "
                            f"{type(value).__name__} of dtype {value.dtype} and shape "
                            f"{tuple(value.shape)}")
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(is_integer(v) for v in value):
        raise TypeError(f"{name} must be a sequence of integers (e.g. diffusers' "
                        f"scheduler.timesteps), {_got(value)}")
    steps = tuple(int(v) for v in value)
    if not steps:
        raise ValueError(f"{name} must hold at least one timestep, got an empty sequence")
    if steps[-1] < 0 or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"{name} must be strictly decreasing integers >= 0 (e.g. "
                         f"diffusers' scheduler.timesteps), got {_describe(list(steps))}")
    return steps


@dataclass(frozen=True)
class SolverSpec:
    """A named sampler.

    Attributes:
        run: ``run(ctx, x) -> solvers.Solution`` (``runners.py``).
        options: option name -> :class:`Option`.
        summary: one line with the method's source.
        adaptive: True for error-controlled solvers (no ``steps``; ``rtol``/``atol``).
        grid: "time" (a grid from T to eps, ``grid=``), "index" (DDPM index times on a
            DiscreteVPSDE) or "adaptive" (chosen by the solver).
        steps_rule: what ``steps`` must be, beyond a positive integer ("" if nothing).
        requires: the SDE class the sampler needs, if any.
        default_steps: ``default_steps(sde, opts)``, the evaluations when ``steps`` is
            None (the SDE's N grid steps for the reverse-SDE samplers, as score_sde).
    """

    run: Callable[..., Any]
    options: Mapping[str, Option]
    summary: str
    adaptive: bool = False
    grid: str = "time"
    steps_rule: str = ""
    requires: Optional[type] = None
    default_steps: Optional[Callable[[Any, Dict[str, Any]], int]] = None

    @property
    def defaults(self) -> Dict[str, Any]:
        return {name: opt.default for name, opt in self.options.items()}


def _steps(default: Optional[int], what: str) -> Option:
    return Option(default, "int", f"network evaluations{what}", minimum=1)


EPS = Option(1e-3, "real", "end time of the solve (the score is singular at t = 0)",
             sign="nonnegative")
GRID = Option("uniform", "choice", "time grid: uniform in t, quadratic (dense near eps), "
              "uniform in log-SNR, or Karras et al.'s rho = 7", choices=GRIDS)
DENOISE = Option(False, "bool", "a final Tweedie step x0 = (x + std^2 score)/alpha at eps "
                 "(one more evaluation)")
_POSITIVE = "a positive finite number"
RTOL = Option(1e-5, "real", "relative tolerance", sign="positive", allowed=_POSITIVE)
ATOL = Option(1e-5, "real", "absolute tolerance", sign="positive", allowed=_POSITIVE)
MAX_STEPS = "a positive int"
SDE_STEPS = _steps(None, " (default: N grid steps of the SDE)")
TIMESTEPS = Option(None, "timesteps", "DDPM indices to evaluate the network at, from high "
                   "to low, as diffusers' scheduler.timesteps (a DiscreteVPSDE; replaces "
                   "steps, grid and eps; the last update ends at t = 0)")


def _n_grid_steps(sde, opts: Dict[str, Any]) -> int:
    """The SDE's N grid steps (score_sde's default), in evaluations."""
    return sde.N * runners.evaluations_per_grid_step(opts)


def _fixed(run, summary: str, steps: Option = SDE_STEPS, steps_rule: str = "",
           extra: Optional[Dict[str, Option]] = None, **kw) -> SolverSpec:
    options = {"steps": steps, "eps": EPS, "grid": GRID, "denoise": DENOISE, **(extra or {})}
    return SolverSpec(run, options, summary, steps_rule=steps_rule,
                      default_steps=_n_grid_steps, **kw)


def _ode_fixed(method: str) -> SolverSpec:
    tableau = FIXED_ODE_METHODS[method]
    n = tableau.stages
    rule = f"a multiple of {n} ({n} evaluations per {method} step)" if n > 1 else ""
    return _fixed(runners.ode_fixed(method),
                  f"probability-flow ODE, {method} (order {tableau.order}; {tableau.source})",
                  steps=_steps(100 * n, f" (default {100 * n}: 100 {method} steps)"),
                  steps_rule=rule)


SOLVERS: Dict[str, SolverSpec] = {
    "euler_maruyama": _fixed(runners.predictor("euler_maruyama"),
                             "Euler–Maruyama on the reverse SDE (Song et al. 2021, eq. 6)"),
    "reverse_diffusion": _fixed(runners.predictor("reverse_diffusion"),
                                "reverse diffusion predictor (Song et al. 2021, App. E)"),
    "ancestral": _fixed(runners.predictor("ancestral"),
                        "ancestral sampling (Song et al. 2021, App. F; DDPM for VP)"),
    "pc": _fixed(runners.pc, "predictor–corrector (Song et al. 2021, Alg. 1, 4, 5)",
                 steps=_steps(None, " (default: N grid steps, each a predictor and "
                                    "corrector_steps corrector moves)"),
                 steps_rule="a multiple of the evaluations per grid step: 1 for the "
                            "predictor (0 for 'none') + corrector_steps (0 for 'none')",
                 extra={"predictor": Option("reverse_diffusion", "choice", "predictor",
                                            choices=tuple(PREDICTORS)),
                        "corrector": Option("langevin", "choice", "corrector",
                                            choices=tuple(CORRECTORS)),
                        "snr": Option(0.16, "real", "Langevin signal-to-noise ratio",
                                      sign="positive"),
                        "corrector_steps": Option(1, "int", "corrector moves per grid step",
                                                  minimum=0),
                        "norm": Option("batch", "choice", "Langevin step from norms "
                                       "averaged over the batch (score_sde) or per sample",
                                       choices=NORMS)}),
    "ode": SolverSpec(runners.ode_adaptive,
                      {"rtol": RTOL, "atol": ATOL, "eps": EPS, "denoise": DENOISE,
                       "method": Option("dopri5", "choice", "adaptive method (torchdiffeq "
                                        "or scipy)", choices=tuple(ADAPTIVE_ODE_METHODS)),
                       "max_steps": Option(10_000, "int", "step budget", minimum=1,
                                           allowed=MAX_STEPS)},
                      "adaptive probability-flow ODE (Song et al. 2021, eq. 13)",
                      adaptive=True, grid="adaptive"),
    **{f"ode_{m}": _ode_fixed(m) for m in FIXED_ODE_METHODS},
    "sde_adaptive": SolverSpec(
        runners.sde_adaptive,
        {"rtol": Option(1e-3, "real", "relative tolerance", sign="positive",
                        allowed=_POSITIVE),
         "atol": Option(1e-3, "real", "absolute tolerance", sign="positive",
                        allowed=_POSITIVE),
         "eps": EPS, "denoise": DENOISE,
         "method": Option("srk", "choice", "torchsde method", choices=tuple(TORCHSDE_METHODS)),
         "dt": Option(1e-2, "real", "first step size", sign="positive", allowed=_POSITIVE),
         "max_steps": Option(100_000, "int", "step budget (attempts)", minimum=1,
                             allowed=MAX_STEPS)},
        "adaptive reverse-SDE solve by torchsde", adaptive=True, grid="adaptive"),
    "ddpm": SolverSpec(runners.ddpm,
                       {"steps": _steps(None, " (default: all N index steps)"),
                        "grid": Option("uniform", "choice", "index spacing",
                                       choices=("uniform", "quadratic")),
                        "timesteps": TIMESTEPS,
                        "variance": Option("fixed_large", "choice", "sigma^2 of each step: "
                                           "beta (fixed_large, Alg. 2) or the posterior "
                                           "variance beta_tilde (fixed_small, = DDIM eta 1)",
                                           choices=("fixed_large", "fixed_small"))},
                       "DDPM ancestral sampler (Ho et al. 2020, Alg. 2), on all N steps or a "
                       "subset", grid="index", requires=DiscreteVPSDE,
                       default_steps=lambda sde, opts: sde.N),
    "ddim": SolverSpec(runners.ddim,
                       {"steps": _steps(50, " (default 50)"),
                        "eta": Option(0.0, "real", "0: deterministic DDIM; 1: DDPM's "
                                      "posterior variance", sign="nonnegative"),
                        "grid": GRID, "eps": EPS, "timesteps": TIMESTEPS,
                        "step_to": Option("next", "choice", "where a step on DDPM indices "
                                          "ends: the next index, or k - N // steps as "
                                          "diffusers' DDIMScheduler (docs/interop.md)",
                                          choices=("next", "stride"))},
                       "DDIM (Song, Meng & Ermon 2021, eq. 12)", requires=VPTypeSDE),
    "dpm_solver": _fixed(runners.dpm_solver(False),
                         "DPM-Solver orders 1-3, singlestep or multistep (Lu et al. 2022a)",
                         steps=_steps(20, " (default 20)"),
                         extra={"grid": Option("logsnr", "choice", GRID.help, choices=GRIDS),
                                "order": Option(3, "int", "order", minimum=1, maximum=3,
                                               allowed="1, 2 or 3"),
                                # multistep: 3M beats singlestep-3 (DPM-Solver-fast) at
                                # 10 and 20 NFE on both problems of benchmarks/accuracy.py
                                # (docs/sampling.md, "Few-step solvers"); order 3 for
                                # unconditional sampling as Lu et al. and diffusers advise
                                "method": Option("multistep", "choice", "singlestep or "
                                                 "multistep", choices=("singlestep",
                                                                       "multistep")),
                                "lower_order_final": Option(True, "bool", "lower orders in "
                                                            "the last multistep steps")}),
    # the quadratic grid: half the error of logsnr at 10 and 20 evaluations on both
    # problems of benchmarks/accuracy.py (docs/sampling.md, "Few-step solvers")
    "dpm_solver++": _fixed(runners.dpm_solver(True), "DPM-Solver++ 1, 2M, 3M (Lu et al. 2022b)",
                           steps=_steps(20, " (default 20)"),
                           extra={"grid": Option("quadratic", "choice", GRID.help,
                                                 choices=GRIDS),
                                  "order": Option(2, "int", "order", minimum=1, maximum=3,
                                                 allowed="1, 2 or 3"),
                                  "method": Option("multistep", "choice", "multistep (or "
                                                   "singlestep for order 1)",
                                                   choices=("singlestep", "multistep")),
                                  "lower_order_final": Option(True, "bool", "lower orders in "
                                                              "the last steps"),
                                  "timesteps": TIMESTEPS}),
    "unipc": _fixed(runners.unipc, "UniPC, data prediction, B(h) = e^h - 1: DPM-Solver++ "
                    "multistep with a free corrector (Zhao et al. 2023)",
                    steps=_steps(20, " (default 20)"),
                    extra={"grid": Option("quadratic", "choice", GRID.help,
                                          choices=GRIDS),
                           "order": Option(2, "int", "order p of the predictor (the "
                                           "corrector adds one)", minimum=1, maximum=3,
                                           allowed="1, 2 or 3"),
                           "lower_order_final": Option(True, "bool", "lower orders in the "
                                                       "last steps")}),
    "heun_karras": SolverSpec(
        runners.heun_karras,
        {"steps": _steps(35, " (default 35: 18 noise levels)"), "eps": EPS,
         "grid": Option("karras", "choice", GRID.help, choices=GRIDS),
         "s_churn": Option(0.0, "real", "churn (Karras et al. 2022, Alg. 2)",
                           sign="nonnegative"),
         "s_tmin": Option(0.0, "real", "churn from this sigma", sign="nonnegative"),
         "s_tmax": Option(math.inf, "real", "churn up to this sigma", sign="nonnegative",
                          finite=False),
         "s_noise": Option(1.0, "real", "churn noise scale", sign="nonnegative")},
        "Heun sampler of Karras et al. 2022, Alg. 1 (with churn, Alg. 2)",
        steps_rule="odd and >= 3: 2 evaluations per noise level, 1 for the last"),
}


def list_solvers() -> Dict[str, str]:
    """Solver name -> one-line description with its source."""
    return {name: spec.summary for name, spec in SOLVERS.items()}

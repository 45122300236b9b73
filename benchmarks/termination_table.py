"""Bounded termination: faulty scores under every solver path, and how each solve ends.

    python benchmarks/termination_table.py [--markdown [docs/reliability.md]] [--repeats 3]

Three faulty scores, each run through every sampler of ``scoresde.SOLVERS`` (fixed-step
ones with 10 grid steps; ``ode`` with torchdiffeq's dopri5 and bosh3 and scipy's RK45, Radau,
BDF and LSODA; adaptive ones with ``max_steps=100``) and through ``log_likelihood``
(dopri5 with the exact and the Hutchinson trace, Radau with the exact one):

* ``nan_below``: NaN for t < 0.5, else -x (the exact score of N(0, I) data under a VP-SDE);
* ``blowup``:    1e30 x (the reverse-time flow explodes: the true solution overflows);
* ``stiff``:     -1e6 x (the reverse-time flow decays at a rate 5e5 beta(t), up to 1e7:
  stiff; the true sample is 0 to within ~1e-3).

Every case must end within seconds, either with a ``solvers.SolverError`` naming the
solver, the step and the time, or with a finite result; a finite result is "correct"
when it matches the exact solution (see :func:`correct`). tests/scoresde/test_termination.py
runs the same cases and asserts the expected outcome of each; ``--markdown`` prints the
table of docs/reliability.md (section "Termination") with the times measured in this run,
``--markdown docs/reliability.md`` rewrites it there (between its markers).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import re
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

if __package__ in (None, ""):  # `python benchmarks/termination_table.py`
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

import scoresde as sd  # noqa: E402
import solvers  # noqa: E402

SHAPE = (4, 2)
STEPS = 10          # grid steps of the fixed-step samplers
MAX_STEPS = 100     # adaptive solves
T_NAN = 0.5
BLOWUP, STIFF = 1e30, 1e6
BETA_MIN, BETA_MAX = 0.1, 20.0


# -- faulty scores ---------------------------------------------------------------------
def _col(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def nan_below(x: Tensor, t: Tensor) -> Tensor:
    """NaN for t < 0.5, else -x (exact for N(0, I) data under any VP-SDE)."""
    return torch.where(_col(t, x) < T_NAN, torch.full_like(x, float("nan")), -x)


def blowup(x: Tensor, t: Tensor) -> Tensor:
    return BLOWUP * x


def stiff(x: Tensor, t: Tensor) -> Tensor:
    return -STIFF * x


FAULTS: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "nan_below": nan_below, "blowup": blowup, "stiff": stiff}


# -- solver paths ------------------------------------------------------------------------
def _x_T() -> Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _sampler(solver: str, **options) -> Callable[[Callable], Tensor]:
    def run(score: Callable) -> Tensor:
        sde = (sd.DiscreteVPSDE.linear(N=1000) if solver == "ddpm"
               else sd.VPSDE(beta_min=BETA_MIN, beta_max=BETA_MAX))
        return sd.sample(score, sde, SHAPE, solver=solver, x_T=_x_T(),
                         generator=torch.Generator().manual_seed(1), **options).x
    return run


def _likelihood(**options) -> Callable[[Callable], Tensor]:
    def run(score: Callable) -> Tensor:
        sde = sd.VPSDE(beta_min=BETA_MIN, beta_max=BETA_MAX)
        return sd.log_likelihood(score, sde, _x_T(), max_steps=MAX_STEPS,
                                 generator=torch.Generator().manual_seed(1), **options).logp
    return run


FIXED_STEP = tuple(name for name, spec in sd.samplers.SOLVERS.items() if not spec.adaptive)


def _evaluations(name: str, grid_steps: int) -> int:
    """``steps`` (network evaluations) for ``grid_steps`` steps of a fixed-step sampler:
    its tableau's stages, a predictor and a corrector move for pc, 2 per noise level but the
    last for heun_karras, one for the others."""
    if name.startswith("ode_"):
        return grid_steps * solvers.FIXED_ODE_METHODS[name[4:]].stages
    per_step = {"pc": 2}.get(name, 1)
    return 2 * grid_steps - 1 if name == "heun_karras" else grid_steps * per_step


PATHS: Dict[str, Callable[[Callable], Tensor]] = {
    **{f"sample {name}": _sampler(name, steps=_evaluations(name, STEPS))
       for name in FIXED_STEP},
    **{f"sample ode {m}": _sampler("ode", method=m, max_steps=MAX_STEPS)
       for m in ("dopri5", "bosh3", "RK45", "Radau", "BDF", "LSODA")},
    "sample sde_adaptive": _sampler("sde_adaptive", max_steps=MAX_STEPS),
    "log_likelihood exact": _likelihood(trace="exact"),
    "log_likelihood hutchinson": _likelihood(trace="hutchinson", n_probes=2),
    "log_likelihood exact Radau": _likelihood(trace="exact", method="Radau"),
}

#: the solver name each path's errors must carry (prefix of the message)
SOLVER_NAMES: Dict[str, str] = {
    **{f"sample {name}": f"sample(solver='{name}')" for name in FIXED_STEP},
    "sample dpm_solver": "sample(solver='dpm_solver', method='multistep')",
    "sample dpm_solver++": "sample(solver='dpm_solver++', method='multistep')",
    **{f"sample ode {m}": f"sample(solver='ode', method='{m}')"
       for m in ("dopri5", "bosh3", "RK45", "Radau", "BDF", "LSODA")},
    "sample sde_adaptive": "sample(solver='sde_adaptive', method='srk')",
    "log_likelihood exact": "log_likelihood(method='dopri5', trace='exact')",
    "log_likelihood hutchinson": "log_likelihood(method='dopri5', trace='hutchinson')",
    "log_likelihood exact Radau": "log_likelihood(method='Radau', trace='exact')",
}


# -- outcomes ----------------------------------------------------------------------------
#: how every error message names the step and the time: "step 12 (t=0.0431)" (non-finite
#: state, a backend giving up) or "max_steps=100 was hit at t=0.99" (step budget)
STEP_AND_T = re.compile(r"(?:step (?P<step>\d+) \(t=|(?P<budget>max_steps=\d+) was hit at t=)"
                        r"(?P<t>[-+.\deE]+|nan|inf)")


@dataclass
class Outcome:
    kind: str                   # error class name, "correct", "finite, wrong" or "non-finite result"
    category: str               # kind, with errors as NonFiniteStateError/MaxStepsError/SolverError
    seconds: float
    message: str = ""
    error: Optional[BaseException] = None
    step: Optional[str] = None  # "12", or "max_steps=100", as the message names it
    t: Optional[float] = None   # the time the message names
    max_abs: Optional[float] = None


def correct(fault: str, path: str, result: Tensor) -> bool:
    """Whether a finite ``result`` is the right answer. Only ``stiff`` sampling has one:
    the exact flow and the exact reverse SDE end within ~1e-3 of 0 (the state decays like
    exp(-5e5 int beta) and the SDE's noise leaves a standard deviation ~ (2e6)^-1/2).
    The other faults have no finite answer: a NaN score; a reverse-time flow that
    overflows (``blowup`` sampling, ``stiff`` likelihood); and a likelihood flow decaying
    at a rate ~1e31 (``blowup``) whose steps cannot be resolved in float64 (no method
    finishes it, so no case returns a number to check against its closed form)."""
    return fault == "stiff" and path.startswith("sample") and result.abs().max().item() < 1e-2


def classify(fault: str, path: str) -> Outcome:
    """Run one case and say how it ended (with the time it took to end)."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # faulty scores make torchsde and numpy warn; expected
            warnings.simplefilter("ignore")
            result = PATHS[path](FAULTS[fault])
    except solvers.SolverError as err:
        seconds = time.perf_counter() - start
        found = STEP_AND_T.search(str(err))
        step = None if found is None else found["step"] or found["budget"]
        t = None if found is None else float(found["t"])
        category = next(c.__name__ for c in (solvers.NonFiniteStateError, solvers.MaxStepsError,
                                             solvers.SolverError) if isinstance(err, c))
        return Outcome(type(err).__name__, category, seconds, str(err), err, step, t)
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(result).all()):
        return Outcome("non-finite result", "non-finite result", seconds)
    kind = "correct" if correct(fault, path, result) else "finite, wrong"
    return Outcome(kind, kind, seconds, max_abs=result.abs().max().item())


# -- the table -----------------------------------------------------------------------------
def _cell(o: Outcome) -> str:
    if o.error is None:
        what = o.kind if o.max_abs is None else f"{o.kind}, max abs {o.max_abs:.2g}"
    else:
        step = f"step {o.step}" if o.step and o.step.isdigit() else o.step
        what = f"`{o.kind}` {step}, t={o.t:.6g}" if o.t is not None else f"`{o.kind}`"
    return f"{what}; {o.seconds:.3f} s"


def markdown(outcomes: Dict[Tuple[str, str], Outcome]) -> str:
    """One row per path, one column per fault: how the solve ended and its time to end."""
    lines = ["| path | " + " | ".join(f"`{f}`" for f in FAULTS) + " |",
             "|---|" + "---|" * len(FAULTS)]
    for path in PATHS:
        lines.append(f"| {path} | " + " | ".join(_cell(outcomes[f, path]) for f in FAULTS) + " |")
    return "\n".join(lines)


def measure(fault: str, path: str, repeats: int) -> Outcome:
    """The outcome of ``repeats`` runs of one case (they must agree), with the median time."""
    runs = [classify(fault, path) for _ in range(repeats)]
    same = {(o.kind, o.step, o.t, o.max_abs) for o in runs}
    if len(same) != 1:
        raise RuntimeError(f"{fault} / {path} ended differently in repeated runs: {same}")
    out = runs[0]
    out.seconds = statistics.median(o.seconds for o in runs)
    return out


BEGIN = ("<!-- termination table: generated by `python benchmarks/termination_table.py "
         "--markdown docs/reliability.md`; edit the cases there, not here -->")
END = "<!-- end of the termination table -->"


def block(outcomes: Dict[Tuple[str, str], Outcome], repeats: int) -> str:
    """The generated block of docs/reliability.md: how the run was made, then the table."""
    from benchmarks import _common as C
    total = sum(o.seconds for o in outcomes.values())
    return "\n".join([
        BEGIN, "",
        f"Measured {_dt.date.today().isoformat()} on {C.cpu_model()} ({torch.get_num_threads()} "
        f"torch threads, a machine shared with other work), torch {torch.__version__}, float64, "
        f"commit {C.git_revision()}. Time to end = the median of {repeats} runs after a "
        f"warm-up pass; the {len(outcomes)} cases take {total:.2f} s in all.", "",
        markdown(outcomes), "", END])


def _write_block(path: str, text_block: str) -> None:
    """Replace the text from BEGIN to END in ``path`` with ``text_block``."""
    with open(path) as fh:
        text = fh.read()
    begin, end = text.find(BEGIN.split("`")[0]), text.find(END)
    if begin < 0 or end < 0:
        raise SystemExit(f"{path}: the markers of the termination table are missing")
    with open(path, "w") as fh:
        fh.write(text[:begin] + text_block + text[end + len(END):])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", nargs="?", const="-", metavar="PATH",
                        help="print the table (or rewrite it in PATH, e.g. docs/reliability.md)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median time)")
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)  # as tests/conftest.py does
    for fault in FAULTS:  # warm-up: first calls pay for imports and torch.func set-up
        for path in PATHS:
            classify(fault, path)
    outcomes = {}
    for fault in FAULTS:
        for path in PATHS:
            o = outcomes[fault, path] = measure(fault, path, args.repeats)
            if args.markdown is None:
                print(f"{fault:10s} {path:28s} {o.kind:20s} {o.seconds:7.3f}s  {o.message[:140]}",
                      flush=True)
    text_block = block(outcomes, args.repeats)
    if args.markdown is None or args.markdown == "-":
        print(text_block)
    else:
        _write_block(args.markdown, text_block)
        print(text_block.splitlines()[2])


if __name__ == "__main__":
    main()

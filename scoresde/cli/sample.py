"""``scoresde sample``: draw samples from a trained run with any solver and picture them.

    scoresde sample --run runs/moons --solver pc --steps 500 --num 5000 --out samples.png
    scoresde sample --run runs/digits --class 3 7 --guidance 2.0 --out guided.png
    scoresde sample --diffusers my_pipeline --solver ddim --steps 50 --num 16
    scoresde sample --list-solvers
    torchrun --nproc_per_node=2 -m scoresde.cli -- sample --run runs/moons --num 10000

Sample i depends on (--seed, i) alone and the processes under torchrun solve whole
batches of --batch-size samples, so the samples file is bitwise the same for any number of
processes (docs/distributed.md); rank 0 writes it. ("--" keeps torchrun's own parser from
reading --run and --num as prefixes of its flags.)

With --class (a run trained with --conditional) it samples each class given, guided by
classifier-free guidance of weight --guidance (default 0: the class-conditional model),
and the picture has one grid per class.

With --diffusers (a pipeline or model directory saved by diffusers' save_pretrained,
docs/interop.md) the default solver is the scheduler's own (DDPMScheduler: ddpm,
DDIMScheduler: ddim, DPMSolverMultistepScheduler: dpm_solver++, others: ddim), and ddpm,
ddim and dpm_solver++ run on the scheduler's timesteps for --steps (its timestep_spacing
and steps_offset), with DDIMScheduler's step rule and DDPMScheduler's variance_type,
unless --timesteps, --step-to or --variance say otherwise.

The solver flags (--steps, --rtol, --snr, ...) are generated from the solver registry
``scoresde.samplers.SOLVERS``: one flag per option name (underscores become dashes), typed
after the option's schema; a flag the chosen solver does not take is an error, and a
value outside the schema is one too (checked by ``sample()`` itself).
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import torch

import scoresde as sd
from scoresde.interop.diffusers import TIMESTEP_RULES
from scoresde.samplers import SOLVERS

from .arguments import int_list, integer, nonnegative_int, nonnegative_real, positive_int, real
from .errors import _Fail
from .plots import check_picture_path, plot_images, plot_points
from .runs import check_writable, load_diffusers, load_run, save_tensor

SAMPLE_SUFFIXES = (".npy", ".pt")


@dataclass(frozen=True)
class SolverFlag:
    """A command-line flag for one solver option name.

    Attributes:
        option: the keyword of ``scoresde.sample`` (e.g. "corrector_steps").
        flag: the flag (e.g. "--corrector-steps").
        kind: bool, int, float or str, from the non-None defaults across solvers.
        defaults: solver name -> its default, for the solvers that take the option.
    """

    option: str
    flag: str
    kind: type
    defaults: Dict[str, Any]


_KINDS = {"bool": bool, "int": int, "real": float, "choice": str, "timesteps": tuple}


def solver_flags() -> Dict[str, SolverFlag]:
    """One :class:`SolverFlag` per option name in ``SOLVERS``, in registry order, typed
    after the options' schema (``scoresde.samplers.Option``)."""
    takers: Dict[str, Dict[str, Any]] = {}
    kinds: Dict[str, type] = {}
    for name, spec in SOLVERS.items():
        for option, schema in spec.options.items():
            takers.setdefault(option, {})[name] = schema.default
            kinds[option] = _KINDS[schema.kind]
    return {option: SolverFlag(option, "--" + option.replace("_", "-"), kinds[option],
                               defaults)
            for option, defaults in takers.items()}


_PARSE: Dict[type, Callable[[str], Any]] = {int: integer, float: real, str: str,
                                             tuple: int_list}


def _flag_help(f: SolverFlag) -> str:
    by_default: Dict[str, List[str]] = {}
    for solver, default in f.defaults.items():
        text = "None (the solver's own choice)" if default is None else repr(default)
        by_default.setdefault(text, []).append(solver)
    parts = [f"{d} ({', '.join(s)})" for d, s in by_default.items()]
    return "default " + "; ".join(parts)


_METAVARS = {tuple: "K,K,..."}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sample``: its own flags, then one flag per solver option."""
    p = sub.add_parser("sample", help="sample a trained run with any solver, write a picture",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory written by 'scoresde train'")
    p.add_argument("--diffusers", metavar="DIR",
                   help="a diffusers pipeline or model directory instead of --run")
    p.add_argument("--solver", default=None, choices=tuple(SOLVERS) + ("list",),
                   metavar="NAME", help="solver name (default pc; with --diffusers the "
                                        "scheduler's own); 'list' prints them")
    p.add_argument("--list-solvers", action="store_true",
                   help="print the solvers with their summaries and options, and exit")
    p.add_argument("--num", type=positive_int, default=1000, help="samples (default 1000)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="per-sample seed: sample i depends on (seed, i) alone (default 0)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", default=1000,
                   help="samples per solve (default 1000); under torchrun each process "
                        "solves whole batches, so the samples are bitwise the same for any "
                        "number of processes at the same --batch-size")
    p.add_argument("--out", help="picture to write (default RUN/samples_SOLVER.png): a "
                                 "scatter beside the training data for points, image grids "
                                 "for images")
    p.add_argument("--class", dest="classes", type=nonnegative_int, nargs="+", metavar="C",
                   help="class label(s) to sample (runs trained with --conditional); one "
                        "picture grid per class")
    p.add_argument("--guidance", type=nonnegative_real, metavar="W",
                   help="classifier-free guidance weight w >= 0 with --class (default 0); "
                        "w > 0 counts 2 NFE per guided evaluation")
    p.add_argument("--save-samples", metavar="PATH",
                   help="also write the samples to a .npy or .pt file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group(
        "solver options", "generated from scoresde.samplers.SOLVERS; each applies to the "
                          "solvers named after its defaults; left out, the solver's default "
                          "holds")
    for f in solver_flags().values():
        if f.kind is bool:
            group.add_argument(f.flag, dest=f.option, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=_flag_help(f))
        else:
            group.add_argument(f.flag, dest=f.option, type=_PARSE[f.kind],
                               default=argparse.SUPPRESS,
                               metavar=_METAVARS.get(f.kind, f.kind.__name__.upper()),
                               help=_flag_help(f))
    return p


def format_solvers() -> str:
    """The solver names with their summaries and the flags each one takes."""
    flags = solver_flags()
    width = max(map(len, SOLVERS))
    lines = []
    for name, spec in SOLVERS.items():
        lines.append(f"{name:<{width}}  {spec.summary}")
        opts = ", ".join(_show(flags[o], v) for o, v in spec.defaults.items())
        lines.append(f"{'':<{width}}  options: {opts or 'none'}")
    return "\n".join(lines)


def _show(f: SolverFlag, value: Any) -> str:
    if f.kind is bool:
        return f"--[no-]{f.flag[2:]} ({'on' if value else 'off'})"
    return f.flag if value is None else f"{f.flag} {value}"


def solver_options(args: argparse.Namespace, solver: str) -> Dict[str, Any]:
    """The solver options given on the command line; an error naming the flag, the solver
    and the flags it takes when one does not apply."""
    flags = solver_flags()
    given = {o: getattr(args, o) for o in flags if hasattr(args, o)}
    taken = SOLVERS[solver].options
    wrong = [flags[o].flag for o in given if o not in taken]
    if wrong:
        takes = ", ".join(flags[o].flag for o in taken) or "no options"
        raise _Fail(f"{', '.join(wrong)} {'does' if len(wrong) == 1 else 'do'} not apply to "
                    f"solver {solver!r}; it takes {takes}")
    return given


#: diffusers scheduler class -> our sampler that follows it (docs/interop.md)
SCHEDULER_SOLVERS = {"DDPMScheduler": "ddpm", "DDIMScheduler": "ddim",
                     "DPMSolverMultistepScheduler": "dpm_solver++"}


def diffusers_options(source: Any, solver: str, options: Dict[str, Any]) -> Dict[str, Any]:
    """The options that make ``solver`` follow the diffusers scheduler of ``source``: the
    scheduler's timesteps for ``steps`` (ddpm, ddim, dpm_solver++), DDIMScheduler's step
    rule and DDPMScheduler's variance, where the command line did not set them."""
    config = source.config
    if solver not in TIMESTEP_RULES or "timesteps" in options:
        return options
    steps = (options.pop("steps", None) or SOLVERS[solver].options["steps"].default
             or source.sde.N)
    out = {**options, "timesteps": sd.diffusers_timesteps(config, steps, solver)}
    if solver == "ddim" and config.get("_class_name") == "DDIMScheduler":
        out.setdefault("step_to", "stride")
    if solver == "ddpm" and config.get("variance_type") in ("fixed_small", "fixed_large"):
        out.setdefault("variance", config["variance_type"])
    return out


def run(args: argparse.Namespace) -> None:
    """Load the run, sample, write the picture (and the samples), print NFE and time."""
    if args.list_solvers or args.solver == "list":
        print(format_solvers())
        return
    if (args.run is None) == (args.diffusers is None):
        raise _Fail("give one of --run (a run directory written by 'scoresde train') or "
                    "--diffusers (a diffusers pipeline or model directory)")
    if args.diffusers is not None and args.classes is not None:
        raise _Fail("--class needs a class-conditional run (--run), not --diffusers")
    run_ = load_run(args.run) if args.run is not None else load_diffusers(args.diffusers)
    solver = args.solver
    if solver is None:
        solver = ("pc" if args.run is not None else
                  SCHEDULER_SOLVERS.get(run_.config.get("_class_name"), "ddim"))
    options = solver_options(args, solver)
    out = args.out or os.path.join(args.run or args.diffusers, f"samples_{solver}.png")
    check_picture_path(out)
    if args.save_samples is not None:
        check_writable(args.save_samples, SAMPLE_SUFFIXES, "--save-samples")

    if args.guidance is not None and args.classes is None:
        raise _Fail("--guidance needs --class (the label(s) to guide towards)")

    if args.classes is not None:
        check_classes(run_, args.classes)
    if args.run is not None:
        data = run_.data("train")
        kind, item_shape, reference = data.kind, tuple(data.shape), data.x[:args.num]
    else:
        options = diffusers_options(run_, solver, options)
        kind, item_shape, reference = "images", tuple(run_.sample_shape), None
    shape = (args.num,) + item_shape
    shown = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v!r}"
                      for k, v in options.items())
    panels, samples = [], []
    for c in args.classes or [None]:
        guide = {} if c is None else {"cond": c, "guidance": args.guidance or 0.0}
        t0 = time.perf_counter()
        with torch.no_grad():  # one process, or this rank's share under torchrun
            res = sd.distributed.sample(run_.model, run_.sde, shape[1:], n_total=args.num,
                                        seed=args.seed, solver=solver,
                                        batch_size=args.batch_size, dtype=run_.dtype,
                                        progress=not args.no_progress, **guide, **options)
        seconds = time.perf_counter() - t0
        world = res.stats["world_size"]
        if not sd.distributed.is_main():  # rank 0 prints and writes
            continue
        if world > 1:
            print(f"{world} processes: NFE per process {res.stats['nfe_per_rank']}, samples "
                  f"per process {res.stats['rows_per_rank']}")
        which = "" if c is None else f" of class {c} (guidance {guide['guidance']:g})"
        print(f"sampled {args.num} {kind}{which} of shape {list(item_shape)} with "
              f"{solver}{f' ({shown})' if shown else ''}: NFE {res.nfe}, {seconds:.1f} s")
        panels.append((f"{solver} (NFE {res.nfe})" if c is None
                       else f"class {c}, w {guide['guidance']:g} (NFE {res.nfe})", res.x))
        samples.append(res.x)
    if not sd.distributed.is_main():
        return

    if kind == "points":
        path = plot_points(reference, panels, out)
    else:
        path = plot_images(reference, panels, out)
    print(f"wrote {path}")
    if args.save_samples is not None:
        x = torch.cat(samples)
        save_tensor(x, args.save_samples)
        print(f"wrote {args.save_samples} ({list(x.shape)} {str(x.dtype)[6:]})")


def check_classes(run_, classes: List[int]) -> None:
    """--class labels must be classes of a conditional run."""
    n = getattr(run_.model.net, "num_classes", None)
    if n is None:
        raise _Fail(f"--class needs a class-conditional run (scoresde train --conditional); "
                    f"{run_.directory} is unconditional")
    bad = [c for c in classes if c >= n]
    if bad:
        raise _Fail(f"--class {bad[0]} is not a class of {run_.directory} (labels 0..{n - 1})")

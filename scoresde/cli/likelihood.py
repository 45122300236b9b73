"""``scoresde likelihood``: the negative log-likelihood of a run's data under its model.

    scoresde likelihood --run runs/moons --split test --trace exact --rtol 1e-5 --atol 1e-5
    scoresde likelihood --diffusers my_pipeline --data images.npy

With --diffusers (a pipeline or model directory saved by diffusers' save_pretrained,
docs/interop.md) --data names a .npy or .pt file of images in [-1, 1] ([n, C, H, W]), and
the trace defaults to hutchinson: the exact trace of an image takes D = C x H x W
backward passes per evaluation, and diffusers' UNets cannot batch them (one pass per
basis vector).

Points go through ``scoresde.log_likelihood`` (the probability-flow ODE); images through
``scoresde.bits_per_dim`` (uniformly dequantized 8-bit values, the variational bound).
Prints the mean NLL in nats with its standard error, bits/dim with its standard error, the
NFE, and, for ``gmm`` data, the true entropy on the same points and the gap.
"""
from __future__ import annotations

import argparse
import inspect
import math
import time
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

import scoresde as sd
from scoresde._stats import mean_stderr
from scoresde.likelihood import PROBES, TRACES

from .arguments import integer, positive_int, real
from .errors import _Fail
from .runs import Run, load_diffusers, load_run

# log_likelihood's own defaults, shown in --help and in the output (one source of truth).
LL_DEFAULTS: Dict[str, Any] = {
    k: p.default for k, p in inspect.signature(sd.log_likelihood).parameters.items()
    if p.default is not inspect.Parameter.empty and p.kind is inspect.Parameter.KEYWORD_ONLY}
_LL_FLAGS = {"method": str, "rtol": real, "atol": real, "eps": real, "trace": str,
             "probe": str, "n_probes": integer, "max_steps": integer}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``likelihood`` and its flags."""
    p = sub.add_parser("likelihood", help="NLL (nats) and bits/dim of a run's data set",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory written by 'scoresde train'")
    p.add_argument("--diffusers", metavar="DIR",
                   help="a diffusers pipeline or model directory instead of --run (needs "
                        "--data)")
    p.add_argument("--data", metavar="FILE",
                   help="with --diffusers: a .npy or .pt file of the examples (images in "
                        "[-1, 1])")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="the held-out split of the run's data source, or the training set "
                        "itself (default test)")
    p.add_argument("--n", type=positive_int,
                   help="examples (default: 2000 test points of a 2-D set, all of digits' or "
                        "a file's split; --split train: the whole training set)")
    p.add_argument("--batch-size", type=positive_int,
                   help="examples per ODE solve (default all at once; adaptive steps are "
                        "shared within a solve)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the Hutchinson probes and the dequantization noise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    choices = {"trace": TRACES, "probe": PROBES}
    for name, parse in _LL_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=parse,
                       default=argparse.SUPPRESS, choices=choices.get(name),
                       help=f"log_likelihood's {name} (default {LL_DEFAULTS[name]!r})")
    return p


def run(args: argparse.Namespace) -> None:
    """Compute and print the NLL of the run's data split."""
    kwargs = {k: getattr(args, k) for k in _LL_FLAGS if hasattr(args, k)}
    settings = {**{k: LL_DEFAULTS[k] for k in _LL_FLAGS}, **kwargs}
    if (args.run is None) == (args.diffusers is None):
        raise _Fail("give one of --run (a run directory written by 'scoresde train') or "
                    "--diffusers (a diffusers pipeline or model directory) with --data")
    if (args.data is None) == (args.run is None):
        raise _Fail("--data goes with --diffusers (a .npy or .pt file of the examples); "
                    "--run reads its own data set")
    if args.run is not None:
        run_ = load_run(args.run)
        data = run_.data(args.split, args.n)
    else:  # images: the exact trace would be D backward passes per NFE, Hutchinson by default
        kwargs.setdefault("trace", "hutchinson")
        settings["trace"] = kwargs["trace"]
        run_ = load_diffusers(args.diffusers)
        data = sd.load_dataset(args.data, split="all", n=args.n, seed=args.seed,
                               dtype=run_.dtype)
    split = args.split if args.run is not None else "given"
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    progress = not args.no_progress
    if data.kind == "images":
        nll, bpd, nfe, note = _images(run_, data.x, g, args.batch_size, progress, kwargs)
    else:
        nll, nfe = _points(run_, data.x, g, args.batch_size, progress, kwargs)
        bpd, note = nll / (data.x[0].numel() * math.log(2.0)), None
    seconds = time.perf_counter() - t0

    trace = settings["trace"] + (f", {settings['n_probes']} {settings['probe']} probe(s)"
                                 if settings["trace"] == "hutchinson" else "")
    print(f"{len(data)} {split} {data.kind} of {data.name}; probability-flow ODE "
          f"{settings['method']} rtol {settings['rtol']:g} atol {settings['atol']:g} eps "
          f"{settings['eps']:g}, {trace} trace")
    if note:
        print(note)
    (m, se), (mb, seb) = mean_stderr(nll), mean_stderr(bpd)
    unit = "nats per image (dequantized bound)" if data.kind == "images" else "nats"
    print(f"NLL       {m:.4f} +- {se:.4f} {unit}")
    print(f"bits/dim  {mb:.4f} +- {seb:.4f}")
    print(f"NFE       {nfe}  ({seconds:.1f} s)")
    if data.oracle is not None:
        truth = -data.oracle.log_prob(data.x.to(torch.float64))
        (mt, set_), (mg, seg) = mean_stderr(truth), mean_stderr(nll.to(torch.float64) - truth)
        print(f"true entropy on the same points  {mt:.4f} +- {set_:.4f} nats; gap "
              f"{mg:.4f} +- {seg:.4f}")


def _points(run_: Run, x: Tensor, g: torch.Generator, batch_size: Optional[int],
            progress: bool, kwargs: Dict[str, Any]) -> Tuple[Tensor, int]:
    """-log p(x) [n] and the NFE, by log_likelihood in batches."""
    batch_size = batch_size or len(x)
    nlls, nfe = [], 0
    for start in range(0, len(x), batch_size):
        res = sd.log_likelihood(run_.model, run_.sde, x[start:start + batch_size],
                                generator=g, progress=progress, **kwargs)
        nlls.append(-res.logp)
        nfe += res.nfe
    return torch.cat(nlls), nfe


def _images(run_: Run, x: Tensor, g: torch.Generator, batch_size: Optional[int],
            progress: bool, kwargs: Dict[str, Any]
            ) -> Tuple[Tensor, Tensor, int, Optional[str]]:
    """(NLL bound in nats per image [n], bits/dim [n], NFE, note) by bits_per_dim on the
    images as 8-bit levels."""
    if bool((x < -1.0).any()) or bool((x > 1.0).any()):
        raise _Fail(f"bits/dim needs images in [-1, 1] (8-bit data mapped as x/127.5 - 1); "
                    f"the data range is [{float(x.min()):.4g}, {float(x.max()):.4g}]")
    levels = (x.to(torch.float64) + 1.0) * 127.5
    x8 = levels.round().clamp(0, 255).to(torch.uint8)
    change = float((levels - x8.to(torch.float64)).abs().max()) / 127.5
    note = None
    if change > 1e-6:
        note = (f"note: the images are not 8-bit; rounded to the nearest of 256 levels in "
                f"[-1, 1] (largest change {change:.4f}) for the dequantized bound")
    res = sd.bits_per_dim(run_.model, run_.sde, x8, data_range="[-1,1]", dequantize=True,
                          generator=g, batch_size=batch_size, dtype=run_.dtype,
                          progress=progress, **kwargs)
    nll = res.bpd.to(torch.float64) * (x[0].numel() * math.log(2.0))
    return nll, res.bpd, res.nfe, note

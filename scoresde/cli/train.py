"""``scoresde train``: train a score model on a data set and save the run directory.

    scoresde train --data moons --sde vp --steps 3000 --out runs/moons [--save-every 500]
    scoresde train --data digits --conditional [--p-uncond 0.1] --out runs/digits
    scoresde train --out runs/moons --resume [--steps 6000] [--save-every 500]

The run directory is a checkpoint (``Trainer.save``): weights, EMA, optimizer and generator
state, the training config, and the data set's ``load_dataset`` arguments, which
``scoresde sample`` and ``scoresde likelihood`` use to rebuild the data. It is written at
the end and, with --save-every N, every N steps; each save is crash-safe (a run killed at
any point leaves the previous or the new checkpoint, never a broken one), and --resume
continues from the last one bit-identically.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

import scoresde as sd
from scoresde.checkpoint import has_checkpoint
from scoresde.losses import LOSSES, WEIGHTINGS
from scoresde.sdes import SDE_TABLE, SHORT_NAMES, build_sde
from scoresde.training import LR_SCHEDULES

from .arguments import DTYPES, nonnegative_int, positive_int, positive_real, unit_interval
from .errors import _Fail

NET_NAMES = ("mlp", "unet")

# Defaults of the flags that define a run, per kind of data ("points" / "images").
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "points": {"net": "mlp", "hidden": 128, "depth": 3, "batch_size": 256, "lr": 2e-3,
               "warmup": 100, "ema_decay": 0.995, "lr_schedule": "constant"},
    "images": {"net": "unet", "hidden": 32, "depth": 1, "batch_size": 128, "lr": 1e-3,
               "warmup": 100, "ema_decay": 0.999, "lr_schedule": "constant"},
}
SHARED_DEFAULTS: Dict[str, Any] = {"sde": "vp", "weighting": "none", "conditional": False,
                                   "p_uncond": 0.1,
                                   "importance_sampling": False, "seed": 0, "n": None,
                                   "dtype": "float32", "sigma_max": None, "steps": 3000}
# Flags that define a run: given together with --resume they are an error.
RUN_FLAGS = ("data", "sde", "sigma_max", "net", "hidden", "depth", "batch_size", "lr",
             "warmup", "lr_schedule", "ema_decay", "loss", "weighting", "importance_sampling",
             "seed", "n",
             "dtype", "log_every", "conditional", "p_uncond")
_MAX_PAIRWISE_POINTS = 10_000


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` and its flags (defaults are None here and resolved in ``run``,
    so that --resume can tell which flags were given)."""
    pts, img = DEFAULTS["points"], DEFAULTS["images"]
    p = sub.add_parser("train", help="train a score model and save the run directory",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory to write (or to resume)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (bit-identical to an "
                        "uninterrupted run); only --steps may be given with it")
    p.add_argument("--data", help=f"a data set name ({', '.join(sd.data.DATASETS)}) or a "
                                  f".npy / .pt file path")
    p.add_argument("--n", type=positive_int, help="training examples (default: all of a file "
                                                  "or digits; 10000 for the 2-D sets)")
    p.add_argument("--steps", type=positive_int,
                   help=f"total optimizer steps of the run (default "
                        f"{SHARED_DEFAULTS['steps']}; with --resume: the stored total)")
    p.add_argument("--sde", choices=tuple(SHORT_NAMES),
                   help="forward SDE: " + ", ".join(f"{e.short} = {e.describe()}"
                                                    for e in SDE_TABLE) + " (default vp)")
    p.add_argument("--sigma-max", type=positive_real,
                   help="VE only: sigma_max (default: the largest distance between two "
                        "training examples, Song & Ermon 2020, Technique 1)")
    p.add_argument("--net", choices=NET_NAMES, help="network (default mlp for points, unet "
                                                    "for images)")
    p.add_argument("--hidden", type=positive_int,
                   help=f"MLP width / U-Net base channels (default {pts['hidden']} / "
                        f"{img['hidden']})")
    p.add_argument("--depth", type=positive_int,
                   help=f"MLP residual blocks / U-Net residual blocks per level (default "
                        f"{pts['depth']} / {img['depth']})")
    p.add_argument("--batch-size", type=positive_int,
                   help=f"examples per step (default {pts['batch_size']} points / "
                        f"{img['batch_size']} images)")
    p.add_argument("--lr", type=positive_real,
                   help=f"peak AdamW learning rate (default {pts['lr']:g} / {img['lr']:g})")
    p.add_argument("--warmup", type=nonnegative_int,
                   help=f"linear warm-up steps (default {pts['warmup']})")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                   help="after warm-up: constant, or cosine decay to 0 at the last step "
                        "(default constant)")
    p.add_argument("--ema-decay", type=float,
                   help=f"EMA decay in [0, 1) (default {pts['ema_decay']} / {img['ema_decay']})")
    p.add_argument("--loss", choices=tuple(LOSSES),
                   help="dsm (continuous denoising score matching) or ddpm (Ho et al. eq. 14, "
                        "--sde ddpm only); default ddpm for --sde ddpm, else dsm")
    p.add_argument("--weighting", choices=tuple(WEIGHTINGS),
                   help="dsm weighting: none (eps-MSE) or likelihood (g^2; default none)")
    p.add_argument("--importance-sampling", action="store_true", default=None,
                   help="draw t from the likelihood weighting's density (needs "
                        "--weighting likelihood)")
    p.add_argument("--conditional", action="store_true", default=None,
                   help="class-conditional model on the data's labels (digits), for "
                        "'scoresde sample --class C --guidance W'")
    p.add_argument("--p-uncond", type=unit_interval, metavar="P",
                   help="with --conditional: probability of dropping a label to the null "
                        "token (classifier-free guidance training; default 0.1)")
    p.add_argument("--seed", type=nonnegative_int,
                   help="seeds the data, the network's initialisation and the trainer "
                        "(default 0)")
    p.add_argument("--dtype", choices=tuple(DTYPES), help="network and data dtype (default "
                                                          "float32)")
    p.add_argument("--log-every", type=positive_int,
                   help="steps per loss record and progress-bar update (default "
                        "min(100, --steps))")
    p.add_argument("--save-every", type=positive_int, metavar="N",
                   help="also checkpoint the run directory every N steps (counted from the "
                        "start of the run; crash-safe, --resume continues from the last one); "
                        "default: only at the end. Not stored: give it again with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> None:
    """Train (or resume) and save the run directory; print the time and the final loss."""
    if args.resume:
        trainer = _resume(args)
    else:
        trainer = _new_run(args)
    start = trainer.step
    t0 = time.perf_counter()
    trainer.train(progress=not args.no_progress, directory=args.out,
                  save_every=args.save_every)  # saves at the end, and every --save-every
    seconds = time.perf_counter() - t0
    done = trainer.step - start
    rate = f" ({done / seconds:.1f} steps/s)" if seconds > 0 and done else ""
    print(f"trained {done} steps (to step {trainer.step}) in {seconds:.1f} s{rate}")
    if trainer.history:
        last = trainer.history[-1]
        first = trainer.history[-2]["step"] + 1 if len(trainer.history) > 1 else 1
        print(f"final loss {last['loss']:.4f} (mean over steps {first}-{last['step']})")
    print(f"wrote {args.out}")


def _new_run(args: argparse.Namespace) -> sd.Trainer:
    if args.data is None:
        raise _Fail("--data is required (a data set name or a .npy / .pt path), unless "
                    "--resume continues a run")
    if has_checkpoint(args.out):
        raise _Fail(f"{args.out} already holds a run; use --resume to continue it, or choose "
                    f"another --out")
    o = {k: getattr(args, k) for k in RUN_FLAGS + ("steps",)}
    for k, v in SHARED_DEFAULTS.items():
        o[k] = v if o[k] is None else o[k]
    dtype = DTYPES[o["dtype"]]
    data = sd.load_dataset(o["data"], split="train", n=o["n"], seed=o["seed"], dtype=dtype)
    for k, v in DEFAULTS[data.kind].items():
        o[k] = v if o[k] is None else o[k]
    if o["loss"] is None:
        o["loss"] = "ddpm" if o["sde"] == "ddpm" else "dsm"
    if o["log_every"] is None:
        o["log_every"] = min(100, o["steps"])
    if o["sigma_max"] is not None and o["sde"] != "ve":
        raise _Fail(f"--sigma-max applies to --sde ve only, not --sde {o['sde']}")
    if args.p_uncond is not None and not o["conditional"]:
        raise _Fail("--p-uncond applies to --conditional runs only")
    if o["conditional"] and data.y is None:
        raise _Fail(f"--conditional needs labelled data (digits); {data.name} has no labels")
    classes = int(data.y.max()) + 1 if o["conditional"] else None

    sde = make_sde(o["sde"], data.x, o["sigma_max"])
    with torch.random.fork_rng(devices=[]):  # seeded initialisation; caller's RNG untouched
        torch.manual_seed(o["seed"])
        net = make_net(o["net"], data, o["hidden"], o["depth"], classes).to(dtype)
    config = sd.TrainConfig(
        steps=o["steps"], batch_size=o["batch_size"], lr=o["lr"], warmup=o["warmup"],
        lr_schedule=o["lr_schedule"],
        ema_decay=o["ema_decay"], seed=o["seed"], loss=o["loss"], weighting=o["weighting"],
        importance_sampling=bool(o["importance_sampling"]), log_every=o["log_every"],
        conditional=bool(o["conditional"]), p_uncond=o["p_uncond"])
    trainer = sd.Trainer(net, sde, data, config)
    params = sum(p.numel() for p in net.parameters())
    print(f"data {data.name} ({len(data)} {data.kind} of shape {list(data.shape)}, "
          f"{o['dtype']}); sde {sde!r}; net {type(net).__name__} ({params} parameters); "
          f"loss {o['loss']}" + (f" ({o['weighting']} weighting" + (
              ", importance-sampled t)" if config.importance_sampling else ")")
              if o["loss"] == "dsm" else "")
          + (f"; conditional on {classes} classes, p_uncond {o['p_uncond']:g}"
             if o["conditional"] else ""))
    return trainer


def _resume(args: argparse.Namespace) -> sd.Trainer:
    given = [k for k in RUN_FLAGS if getattr(args, k) is not None]
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise _Fail(f"{flags} cannot be given with --resume: the run's settings are stored in "
                    f"{args.out}; only --steps (the new total) may change")
    trainer = sd.Trainer.load(args.out)
    if args.steps is not None:
        if args.steps < trainer.step:
            raise _Fail(f"--steps {args.steps} is below the step the run has reached "
                        f"({trainer.step}); give the new total number of steps")
        trainer.config = dataclasses.replace(trainer.config, steps=args.steps)
    print(f"resuming {args.out} at step {trainer.step} of {trainer.config.steps}")
    return trainer


def make_sde(name: str, x: Tensor, sigma_max: Optional[float] = None) -> sd.SDE:
    """The forward SDE for ``--sde name``; VE's sigma_max defaults to the largest distance
    between two training examples (Song & Ermon 2020, Technique 1)."""
    if name == "ve":
        return build_sde(name, sigma_max=max_pairwise_distance(x) if sigma_max is None
                         else sigma_max)
    return build_sde(name)


def max_pairwise_distance(x: Tensor, chunk: int = 1000) -> float:
    """The largest Euclidean distance between two rows of x [n, *dims] (the first 10000 rows
    of larger sets), in chunks of ``chunk`` rows."""
    x = x[:_MAX_PAIRWISE_POINTS].reshape(min(len(x), _MAX_PAIRWISE_POINTS), -1).to(torch.float64)
    return max(float(torch.cdist(x[i:i + chunk], x).max()) for i in range(0, len(x), chunk))


def make_net(name: str, data: sd.Dataset, hidden: int, depth: int,
             num_classes: Optional[int] = None) -> nn.Module:
    """``mlp``: MLP(D, hidden, depth) for points [n, D]; ``unet``: UNet(C, base_channels=hidden,
    num_res_blocks=depth) for images [n, C, H, W]; class-conditional with ``num_classes``."""
    if name == "mlp":
        if data.kind != "points":
            raise _Fail(f"--net mlp needs points [n, D]; {data.name} holds images of shape "
                        f"{list(data.shape)}: use --net unet")
        return sd.MLP(dim=data.shape[0], hidden=hidden, depth=depth, num_classes=num_classes)
    if data.kind != "images":
        raise _Fail(f"--net unet needs images [n, C, H, W]; {data.name} holds points of shape "
                    f"{list(data.shape)}: use --net mlp")
    return sd.UNet(in_channels=data.shape[0], base_channels=hidden, num_res_blocks=depth,
                   num_classes=num_classes)

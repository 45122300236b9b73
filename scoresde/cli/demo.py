"""``scoresde demo``: train on the 2-D Gaussian mixture, sample with two solvers, and compare
the test NLL of the probability-flow ODE with the true entropy.

    scoresde demo [--out runs/demo] [--train-steps 2500] [--num 2000] [--test 500] [--seed 0]

Every hyper-parameter of the demo is in ``DEMO_CONFIG`` below (the command-line flags
override the step and sample counts only). The recipe (large batch, lr 5e-3 with cosine
decay, fresh points) comes from the trials in docs/results_gmm.md; run
benchmarks/train_gmm.py for the longer run that gets within 0.01 nats of the entropy.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

import scoresde as sd
from scoresde._stats import mean_stderr

from .arguments import positive_int
from .plots import plot_points

DEMO_CONFIG = {
    "data": "gmm",                                   # the 8-Gaussian mixture (exact density)
    "sde": {"beta_min": 0.1, "beta_max": 20.0},      # VPSDE
    "net": {"hidden": 128, "depth": 3},              # MLP(dim=2, ...)
    "train_n": 200_000,                              # fresh training points
    "train": {"batch_size": 1024, "lr": 5e-3, "warmup": 100, "lr_schedule": "cosine",
              "ema_decay": 0.995, "log_every": 50},  # TrainConfig (steps, seed from flags)
    "train_steps": 2500,                             # --train-steps default
    "num": 2000,                                     # --num default: samples per solver
    "test": 500,                                     # --test default: likelihood points
    "solvers": (("ode", {"rtol": 1e-4, "atol": 1e-4}),
                ("dpm_solver++", {"steps": 20})),
    "likelihood": {"rtol": 1e-5, "atol": 1e-5, "trace": "exact"},
}


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` and its flags."""
    cfg = DEMO_CONFIG
    p = sub.add_parser("demo", help="train on a 2-D Gaussian mixture, sample, and compare the "
                                    "test NLL with the true entropy",
                       description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--train-steps", type=positive_int, default=cfg["train_steps"],
                   help=f"optimizer steps (default {cfg['train_steps']})")
    p.add_argument("--num", type=positive_int, default=cfg["num"],
                   help=f"samples per solver (default {cfg['num']})")
    p.add_argument("--test", type=positive_int, default=cfg["test"],
                   help=f"test points for the likelihood (default {cfg['test']})")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> None:
    """Train, save into ``args.out``, sample with DEMO_CONFIG's solvers, compare the NLL."""
    cfg = DEMO_CONFIG
    torch.manual_seed(args.seed)
    t_start = time.time()
    train = sd.load_dataset(cfg["data"], split="train", n=cfg["train_n"], seed=args.seed)
    test = sd.load_dataset(cfg["data"], split="test", n=args.test, seed=args.seed)
    sde = sd.VPSDE(**cfg["sde"])
    net = sd.MLP(dim=2, **cfg["net"])
    # log_every capped by the steps, so that a short run has a final loss record too
    train_cfg = {**cfg["train"], "log_every": min(cfg["train"]["log_every"], args.train_steps)}
    trainer = sd.Trainer(net, sde, train, sd.TrainConfig(
        steps=args.train_steps, seed=args.seed, **train_cfg))
    trainer.train(progress=True)
    t_train = time.time() - t_start
    os.makedirs(args.out, exist_ok=True)
    trainer.save(os.path.join(args.out, "checkpoint"))
    print(f"trained {args.train_steps} steps in {t_train:.1f} s, final loss "
          f"{trainer.history[-1]['loss']:.4f}")

    model = trainer.ema
    results = {}
    with torch.no_grad():
        for solver, opts in cfg["solvers"]:
            g = torch.Generator().manual_seed(args.seed)
            res = sd.sample(model, sde, (args.num, 2), solver=solver, generator=g, **opts)
            results[solver] = res
            print(f"sampled {args.num} points with {solver}: NFE {res.nfe}")

    ll = sd.log_likelihood(model, sde, test.x, **cfg["likelihood"])
    nll = -ll.logp
    truth = -test.oracle.log_prob(test.x)
    (m, se), (mt, set_), (mg, seg) = mean_stderr(nll), mean_stderr(truth), mean_stderr(nll - truth)
    print(f"test NLL  {m:.4f} +- {se:.4f} nats "
          f"(probability-flow ODE, exact trace, NFE {ll.nfe})")
    print(f"true entropy on the same points  {mt:.4f} +- {set_:.4f} nats; gap {mg:.4f} +- "
          f"{seg:.4f}")
    path = plot_points(train.x[: args.num],
                       [(f"{k} (NFE {v.nfe})", v.x) for k, v in results.items()],
                       os.path.join(args.out, "samples.png"))
    print(f"wrote {path} ({time.time() - t_start:.1f} s in all)")

"""Train on the 2-D Gaussian mixture and compare the test ODE NLL with the true entropy.

    python benchmarks/train_gmm.py [--steps 5000] [--out runs/gmm] [--doc docs/results_gmm.md]

Issue 5's acceptance: a model trained in at most 5 minutes on 2 CPU cores reaches a test
probability-flow-ODE NLL within 0.10 nats of the true entropy, i.e. of the mean -log p of the
same test points under the mixture's exact density (``Dataset.oracle``). The script trains
(timed), evaluates the EMA model's exact-trace ODE NLL on held-out points, and writes the
Markdown page, a figure (data against samples, and the gap during training) and the run's
checkpoint. Every measured number in the page comes from this run; only the notes on how
the recipe was chosen (section "Recipe") are fixed text.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import scoresde as sd  # noqa: E402
from benchmarks._common import machine_rows, md_table, pyplot  # noqa: E402

# The recipe. Why these values: docs/results_gmm.md, "Recipe".
RECIPE = dict(batch_size=1024, lr=5e-3, warmup=100, lr_schedule="cosine", ema_decay=0.999,
              grad_clip=1.0)
NET = dict(hidden=128, depth=3)
TRAIN_POINTS = 200_000   # fresh synthetic points: no over-fitting to a small sample
BUDGET_S = 300.0         # the training budget
TARGET_GAP = 0.10        # nats


def nll_gap(model, sde, test: sd.data.Dataset, tol: float) -> Dict[str, float]:
    """Mean ODE NLL, true entropy and their gap on the test points, with standard errors."""
    x = test.x.to(torch.float64)
    t0 = time.perf_counter()
    ll = sd.log_likelihood(model, sde, x, rtol=tol, atol=tol, trace="exact")
    seconds = time.perf_counter() - t0
    nll = -ll.logp.cpu()
    truth = -test.oracle.log_prob(x)
    gap = nll - truth
    n = math.sqrt(x.shape[0])
    return {"nll": float(nll.mean()), "nll_se": float(nll.std() / n),
            "entropy": float(truth.mean()), "entropy_se": float(truth.std() / n),
            "gap": float(gap.mean()), "gap_se": float(gap.std() / n),
            "nfe": ll.nfe, "seconds": seconds}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="optimizer steps")
    parser.add_argument("--test", type=int, default=2000, help="test points for the NLL")
    parser.add_argument("--tol", type=float, default=1e-5, help="ODE rtol = atol")
    parser.add_argument("--curve", type=int, default=4,
                        help="gap evaluations during training (on 500 points, untimed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch CPU threads (default: 2, the issue's budget)")
    parser.add_argument("--out", default="runs/gmm", help="checkpoint directory")
    parser.add_argument("--doc", default="docs/results_gmm.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    train = sd.load_dataset("gmm", split="train", n=TRAIN_POINTS, seed=args.seed)
    test = sd.load_dataset("gmm", split="test", n=args.test, seed=args.seed,
                           dtype=torch.float64)
    probe = sd.data.Dataset(test.x[:500], test.kind, test.name, test.split, oracle=test.oracle)
    sde = sd.VPSDE()
    torch.manual_seed(args.seed)
    net = sd.MLP(dim=2, **NET)
    config = sd.TrainConfig(steps=args.steps, seed=args.seed, log_every=100, **RECIPE)
    trainer = sd.Trainer(net, sde, train, config)

    # Train in chunks; the gap curve is measured between chunks and left out of the timing.
    marks = sorted({round(args.steps * (k + 1) / args.curve) for k in range(args.curve)})
    curve, train_seconds = [], 0.0
    for mark in marks:
        t0 = time.perf_counter()
        trainer.train(steps=mark - trainer.step, progress=True)
        train_seconds += time.perf_counter() - t0
        if mark < args.steps:
            g = nll_gap(_float64(trainer), sde, probe, args.tol)
            curve.append((mark, train_seconds, g["gap"], g["gap_se"]))
            print(f"step {mark}: {train_seconds:.0f} s, gap on 500 points "
                  f"{g['gap']:.3f} +- {g['gap_se']:.3f}", flush=True)
    trainer.save(args.out)
    final = nll_gap(_float64(trainer), sde, test, args.tol)
    curve.append((args.steps, train_seconds, final["gap"], final["gap_se"]))
    print(f"trained {args.steps} steps in {train_seconds:.1f} s; test NLL {final['nll']:.4f} "
          f"+- {final['nll_se']:.4f}, entropy {final['entropy']:.4f}, gap {final['gap']:.4f} "
          f"+- {final['gap_se']:.4f} (NFE {final['nfe']})", flush=True)

    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = sd.sample(trainer.ema, sde, (5000, 2), solver="dpm_solver++", steps=20,
                            generator=g, dtype=torch.float32)
    sample_seconds = time.perf_counter() - t0
    figure = _figure(train.x[:5000], samples, curve, args.doc)
    _write_doc(args, trainer, final, curve, train_seconds, samples.nfe, sample_seconds, figure)
    print(f"wrote {args.doc} and {figure}")
    return 0


def _float64(trainer: sd.Trainer):
    """A float64 copy of the EMA model for the likelihood (the trained weights are float32)."""
    import copy
    return copy.deepcopy(trainer.ema).double()


def _figure(data, samples, curve, doc: str) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (title, x) in zip(axes[:2], (("training data", data),
                                         (f"dpm_solver++, NFE {samples.nfe}", samples.x))):
        x = x.detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_aspect("equal")
        ax.set_xlim(-2.3, 2.3)
        ax.set_ylim(-2.3, 2.3)
    steps = [c[0] for c in curve]
    gaps = [c[2] for c in curve]
    errs = [2 * c[3] for c in curve]
    axes[2].errorbar(steps, gaps, yerr=errs, marker="o", capsize=3, label="NLL - entropy")
    axes[2].axhline(TARGET_GAP, color="k", ls="--", lw=1, label=f"target {TARGET_GAP} nats")
    axes[2].set_xlabel("training step")
    axes[2].set_ylabel("gap (nats), +- 2 s.e.")
    axes[2].set_title("test NLL gap to the true entropy")
    axes[2].legend()
    fig.tight_layout()
    img_dir = os.path.join(os.path.dirname(doc) or ".", "img")
    os.makedirs(img_dir, exist_ok=True)
    path = os.path.join(img_dir, "gmm_training.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _write_doc(args, trainer, final, curve, train_seconds, sample_nfe, sample_seconds,
               figure) -> None:
    ok_time = train_seconds <= BUDGET_S
    ok_gap = final["gap"] <= TARGET_GAP
    n_params = sum(p.numel() for p in trainer.net.parameters())
    command = "python benchmarks/train_gmm.py " + " ".join(sys.argv[1:])
    lines = [
        "# Training on the 2-D Gaussian mixture: test NLL against the true entropy",
        "",
        "Generated by `benchmarks/train_gmm.py`; rerun it to regenerate this page.",
        "",
        "The `gmm` data set is 8 equally weighted Gaussians (std 0.2) on a circle, whose exact "
        "density is known (`scoresde.data.gmm_oracle()`). A model's test negative "
        "log-likelihood under the probability-flow ODE can therefore be compared with the "
        "true entropy, the mean of -log p(x) over the same test points. The gap is the "
        "model's excess NLL (a KL divergence estimate, up to ODE and sampling error).",
        "",
        "## Result",
        "",
        md_table(["quantity", "value"], [
            ["training time", f"{train_seconds:.1f} s for {args.steps} steps "
                              f"(budget {BUDGET_S:.0f} s: {'PASS' if ok_time else 'MISS'})"],
            ["test NLL (ODE, exact trace)", f"{final['nll']:.4f} +- {final['nll_se']:.4f} nats"],
            ["true entropy, same points", f"{final['entropy']:.4f} +- "
                                          f"{final['entropy_se']:.4f} nats"],
            ["gap", f"**{final['gap']:.4f} +- {final['gap_se']:.4f} nats** (target <= "
                    f"{TARGET_GAP}: {'PASS' if ok_gap else 'MISS'})"],
            ["likelihood cost", f"NFE {final['nfe']}, {final['seconds']:.1f} s for "
                                f"{args.test} points (rtol = atol = {args.tol:g})"],
            ["sampling", f"5000 points, dpm_solver++ NFE {sample_nfe}, {sample_seconds:.2f} s"],
        ]),
        "",
        "The standard errors are over test points (the gap's is of the paired per-point "
        "difference, which is much smaller than either NLL's).",
        "",
        f"![data, samples and the gap during training]({os.path.relpath(figure, os.path.dirname(args.doc) or '.')})",
        "",
        "## Gap during training",
        "",
        "Measured on the first 500 test points between training chunks (not part of the "
        "training time); the last row is the final measurement on all test points.",
        "",
        md_table(["step", "training time (s)", "gap (nats)"],
                 [[s, f"{t:.0f}", f"{g:.3f} +- {e:.3f}"] for s, t, g, e in curve]),
        "",
        "## Recipe",
        "",
        f"- Network: `MLP(dim=2, hidden={NET['hidden']}, depth={NET['depth']})`, "
        f"{n_params} parameters, eps-prediction, `VPSDE()` (beta 0.1 to 20).",
        f"- `TrainConfig(steps={args.steps}, " + ", ".join(f"{k}={v!r}" for k, v in RECIPE.items())
        + ")`, continuous DSM loss with no weighting, EMA weights evaluated.",
        f"- {TRAIN_POINTS} fresh training points (the mixture can be sampled without limit).",
        "- How the recipe was chosen (trials of 2026-11-26 on this machine (2000 steps, gap on 500 points): "
        "batch 256 at lr 2e-3 gave 0.33; likelihood weighting with importance sampling, a "
        "wider network (256), or a cosine decay alone did not move it (0.32 to 0.34); batch "
        "1024 gave 0.19; batch 1024 with lr 5e-3 and cosine decay gave 0.12. The loss's "
        "gradient noise and the number of examples seen, not capacity, limit the gap.",
        "",
        "## Machine",
        "",
        md_table(["", ""], machine_rows(torch.device("cpu"), command)),
        "",
    ]
    os.makedirs(os.path.dirname(args.doc) or ".", exist_ok=True)
    with open(args.doc, "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

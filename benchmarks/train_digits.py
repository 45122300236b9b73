"""Train the small U-Net on scikit-learn's 8x8 digits end to end and write docs/digits.md.

    python benchmarks/train_digits.py [--steps N] [--minutes M] [--out runs/digits]
                                      [--doc docs/digits.md]
    python benchmarks/train_digits.py --sweep [--device cuda] [--shard i/k] [--trials a,b]

Needs scikit-learn, matplotlib and safetensors (``pip install -e ".[cli]"``).

The main run trains an epsilon-predicting ``scoresde.UNet`` with a ``VPSDE`` by
``scoresde.Trainer`` on uniformly dequantized training digits, saves the checkpoint, computes
the test bits/dim (probability-flow ODE, ``scoresde.log_likelihood``) with its standard error
on the whole test split, samples a grid with DPM-Solver++ and with the adaptive ODE solver,
computes two baselines in the same units, and writes the Markdown page and its pictures.
``--sweep`` runs the short hyperparameter trials that chose the defaults (equal CPU time per
trial) and stores one JSON per trial under ``<out>/sweep/``; the page lists them when present.

Dequantization. The digits hold 17 grey levels k = 0..16, which ``load_dataset`` maps to
x = k/8 - 1. ``scoresde.bits_per_dim`` is for 8-bit data (256 bins, offset log 256), so it
does not apply; this script uses the same construction with 17 bins of width 1/8 centred on
the data values: y = x + (u - 1/2)/8, u ~ U[0, 1)^D, and

    bpd = (-log p(y) / D - log(1/8)) / log 2 = -log2 p(y) / D + 3,

an upper bound (Jensen, in expectation over u) on -log2 P(k) / D of the discrete digit.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import platform
import sys
import time
from typing import Dict, List, Optional

import torch

import scoresde as sd

LEVELS = 17          # grey levels 0..16 of load_digits
BIN = 2.0 / 16.0     # bin width in the model's units (x = k/8 - 1)
D = 64               # 1 x 8 x 8
LOG_EVERY = 50

# Defaults of the main run, chosen by the --sweep trials (see docs/digits.md): at equal CPU
# time the 16-channel net with more steps beat the 32-channel one, and lr 4e-3 beat 2e-3.
DEFAULTS = dict(steps=2700, batch=128, lr=4e-3, ema=0.999, base_channels=16, warmup=100,
                copies=64, seed=0)
# What a trial uses unless its name says otherwise.
SWEEP_BASE = dict(steps=1200, batch=128, lr=2e-3, ema=0.999, base_channels=32, warmup=100,
                  copies=64, seed=0)

# The trials: equal CPU time per trial (measured 1-thread step times on the 2-core machine:
# base 16 / 32 channels, batch 64 / 128: about 0.12 / 0.21 / 0.27 / 0.46 s per step),
# so a smaller net or batch gets more steps.
_EQUAL_TIME_STEPS = {(16, 64): 4800, (16, 128): 2700, (32, 64): 2000, (32, 128): 1200}


def sweep_configs() -> List[Dict[str, object]]:
    configs = []
    for (base, batch), steps in _EQUAL_TIME_STEPS.items():
        configs.append(dict(name=f"c{base}-b{batch}", base_channels=base, batch=batch,
                            steps=steps))
    for base, batch in ((32, 128), (32, 64)):
        steps = _EQUAL_TIME_STEPS[(base, batch)]
        for lr in (5e-4, 1e-3, 2e-3, 4e-3):
            for ema in (0.99, 0.995, 0.999):
                configs.append(dict(name=f"c{base}-b{batch}-lr{lr:g}-ema{ema:g}",
                                    base_channels=base, batch=batch, steps=steps, lr=lr,
                                    ema=ema))
    for seed in (1, 2):
        configs.append(dict(name=f"c32-b128-seed{seed}", seed=seed))
    configs.append(dict(name="c32-b128-likelihood-is", weighting="likelihood",
                        importance_sampling=True))
    configs.append(dict(name="c32-b128-lattice", copies=0))
    c16 = dict(base_channels=16, batch=128, steps=_EQUAL_TIME_STEPS[(16, 128)])
    for seed in (1, 2):
        configs.append(dict(c16, name=f"c16-b128-seed{seed}", seed=seed))
    configs.append(dict(c16, name="c16-b128-lr0.004", lr=4e-3))
    configs.append(dict(c16, name="c16-b128-ema0.995", ema=0.995))
    configs.append(dict(c16, name="c16-b128-likelihood-is", weighting="likelihood",
                        importance_sampling=True))
    out = []
    for c in configs:
        full = {**SWEEP_BASE, "weighting": "none", "importance_sampling": False, **c}
        out.append(full)
    # the (base, batch) defaults appear twice (size table and lr x ema grid): keep one
    seen, unique = set(), []
    for c in out:
        key = tuple(sorted((k, v) for k, v in c.items() if k != "name"))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique


# -- data --------------------------------------------------------------------------------------
def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Grey levels k = round((x + 1) * 8) in 0..16 of digits scaled by x = k/8 - 1."""
    k = torch.round((x.double() + 1.0) * 8.0)
    if float((k - (x.double() + 1.0) * 8.0).abs().max()) > 1e-4 or k.min() < 0 \
            or k.max() > LEVELS - 1:
        raise ValueError("the digits are not on the 17-level grid k/8 - 1")
    return k


def dequantize(levels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """y = (k + u - 1/2)/8 - 1, u ~ U[0, 1): uniform on the bin of width 1/8 around k/8 - 1."""
    u = torch.rand(levels.shape, generator=g, dtype=torch.float64)
    return (levels + u - 0.5) * BIN - 1.0


def bpd_of_logp(logp: torch.Tensor) -> torch.Tensor:
    """Bits/dim of a 17-level digit from log p(y) (nats) of its dequantized y."""
    return (-logp.double() / D - math.log(BIN)) / math.log(2.0)


def mean_stderr(v: torch.Tensor):
    v = v.double()
    return float(v.mean()), float(v.std(unbiased=True) / math.sqrt(v.numel()))


def training_tensor(train_levels: torch.Tensor, copies: int, g: torch.Generator) -> torch.Tensor:
    """``copies`` independently dequantized copies of the training set (0: the lattice x)."""
    if copies == 0:
        return (train_levels * BIN - 1.0).float()
    return torch.cat([dequantize(train_levels, g) for _ in range(copies)]).float()


# -- baselines ---------------------------------------------------------------------------------
def histogram_bpd(train_levels: torch.Tensor, test_levels: torch.Tensor, alpha: float = 1.0):
    """Independent per-pixel categorical over 17 levels, Laplace-smoothed counts from train.

    Its piecewise-constant density on the bins makes the dequantized bound exact, so this is
    both -log2 P(k)/D and the dequantized bits/dim.
    """
    tr = train_levels.long().reshape(train_levels.shape[0], D)
    te = test_levels.long().reshape(test_levels.shape[0], D)
    counts = torch.zeros(D, LEVELS, dtype=torch.float64)
    counts.scatter_add_(1, tr.T, torch.ones_like(tr.T, dtype=torch.float64))
    probs = (counts + alpha) / (tr.shape[0] + alpha * LEVELS)
    logp = torch.log2(probs.gather(1, te.T)).T.sum(1)  # [n] bits
    return mean_stderr(-logp / D)


def gaussian_bpd(train_y: torch.Tensor, test_y: torch.Tensor):
    """A full-covariance Gaussian fitted to the dequantized training data, on dequantized test."""
    a = train_y.double().reshape(train_y.shape[0], D)
    mu = a.mean(0)
    cov = torch.cov(a.T)
    dist = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    return mean_stderr(bpd_of_logp(dist.log_prob(test_y.double().reshape(-1, D))))


# -- model, training, evaluation ---------------------------------------------------------------
def build(base_channels: int, device: str):
    net = sd.UNet(1, base_channels=base_channels, channel_mults=(1, 2), num_res_blocks=1)
    sde = sd.VPSDE(beta_min=0.1, beta_max=20.0)
    return sd.ScoreModel(net.to(device), sde, prediction="epsilon"), sde


def train(model, sde, data: torch.Tensor, cfg: Dict[str, object], minutes: Optional[float],
          progress: bool):
    config = sd.TrainConfig(steps=int(cfg["steps"]), batch_size=int(cfg["batch"]),
                            lr=float(cfg["lr"]), warmup=int(cfg["warmup"]),
                            ema_decay=float(cfg["ema"]), seed=int(cfg["seed"]),
                            weighting=str(cfg["weighting"]),
                            importance_sampling=bool(cfg["importance_sampling"]),
                            log_every=LOG_EVERY)
    trainer = sd.Trainer(model, None, data, config)
    start = time.perf_counter()
    if minutes is None:
        trainer.train(progress=progress)
    else:  # chunks of LOG_EVERY steps until the steps or the minutes run out
        from tqdm.auto import tqdm
        with tqdm(total=config.steps, disable=not progress, desc="train") as bar:
            while trainer.step < config.steps and time.perf_counter() - start < 60 * minutes:
                n = min(LOG_EVERY, config.steps - trainer.step)
                trainer.train(n, progress=False)
                bar.update(n)
                bar.set_postfix(loss=f"{trainer.history[-1]['loss']:.4g}")
    return trainer, time.perf_counter() - start


def test_loss(model, sde, test_y: torch.Tensor, repeats: int = 8) -> float:
    """Mean DSM loss (unweighted, eps = 1e-5) on the dequantized test set, fixed noise."""
    g = torch.Generator().manual_seed(1234)
    x = test_y.to(next(model.parameters()).device, torch.float32)
    with torch.no_grad():
        return float(sum(sd.dsm_loss(model, sde, x, generator=g) for _ in range(repeats))
                     / repeats)


def test_bpd(model, sde, test_y: torch.Tensor, trace: str, seed: int = 0,
             chunk_size: Optional[int] = None, max_steps: int = 10_000):
    """Bits/dim of the dequantized test digits by the probability-flow ODE (rtol=atol=1e-5)."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    opts = dict(chunk_size=chunk_size) if trace == "exact" else dict(n_probes=1, generator=g)
    start = time.perf_counter()
    ll = sd.log_likelihood(model, sde, test_y.to(device, torch.float32), method="dopri5",
                           rtol=1e-5, atol=1e-5, eps=1e-5, trace=trace,
                           max_steps=max_steps, **opts)
    seconds = time.perf_counter() - start
    bpd = bpd_of_logp(ll.logp.cpu())
    mean, err = mean_stderr(bpd)
    return dict(bpd=mean, stderr=err, nfe=ll.nfe, seconds=seconds, trace=trace,
                steps=ll.stats.get("accepted"), rejected=ll.stats.get("rejected"),
                min=float(bpd.min()), max=float(bpd.max()))


def draw_samples(model, sde, n: int, seed: int) -> Dict[str, Dict[str, object]]:
    runs = {"dpm_solver++": dict(steps=20), "ode": dict(rtol=1e-5, atol=1e-5)}
    out = {}
    for solver, opts in runs.items():
        g = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        with torch.no_grad():
            res = sd.sample(model, sde, (n, 1, 8, 8), solver=solver, generator=g, **opts)
        out[solver] = dict(x=res.x.detach().cpu(), nfe=res.nfe,
                           seconds=time.perf_counter() - start, opts=opts)
    return out


# -- pictures ----------------------------------------------------------------------------------
def mosaic(x: torch.Tensor, cols: int = 8) -> torch.Tensor:
    """[n, 1, 8, 8] in [-1, 1] -> one image of grey levels 0..16 (NaN between the digits)."""
    k = torch.round((x.double().clamp(-1, 1) + 1.0) * 8.0)[:, 0]
    rows = math.ceil(k.shape[0] / cols)
    img = torch.full((rows * 9 + 1, cols * 9 + 1), float("nan"), dtype=torch.float64)
    for i in range(k.shape[0]):
        r, c = divmod(i, cols)
        img[1 + 9 * r:9 + 9 * r, 1 + 9 * c:9 + 9 * c] = k[i]
    return img


def save_grid(path: str, panels: List[tuple]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("gray_r").copy()
    cmap.set_bad("#d0d0d0")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8))
    for ax, (title, x) in zip(axes, panels):
        ax.imshow(mosaic(x).numpy(), cmap=cmap, vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_loss_plot(path: str, history: List[Dict[str, float]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel(f"DSM loss (mean of {LOG_EVERY} steps)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the machine -------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with "
            f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}")


def device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return str(device)


# -- the sweep ---------------------------------------------------------------------------------
def run_sweep(args) -> None:
    configs = sweep_configs()
    if args.trials:
        names = args.trials.split(",")
        unknown = sorted(set(names) - {c["name"] for c in configs})
        if unknown:
            raise SystemExit(f"unknown trial(s) {unknown}")
        configs = [c for c in configs if c["name"] in names]
    i, k = (int(v) for v in args.shard.split("/"))
    out_dir = os.path.join(args.out, "sweep")
    os.makedirs(out_dir, exist_ok=True)
    train_levels = to_levels(sd.load_dataset("digits", split="train").x)
    test_levels = to_levels(sd.load_dataset("digits", split="test").x)
    test_y = dequantize(test_levels, torch.Generator().manual_seed(2024))
    for cfg in configs[i::k]:
        torch.manual_seed(int(cfg["seed"]))
        model, sde = build(int(cfg["base_channels"]), args.device)
        data = training_tensor(train_levels, int(cfg["copies"]),
                               torch.Generator().manual_seed(100 + int(cfg["seed"])))
        trainer, seconds = train(model, sde, data, cfg, None, progress=False)
        try:
            bpd = test_bpd(trainer.ema, sde, test_y, args.sweep_trace, chunk_size=16,
                           max_steps=500)
        except Exception as err:  # e.g. solvers.MaxStepsError: keep the trial, note why
            bpd = dict(bpd=float("nan"), stderr=float("nan"), nfe=None, trace=args.sweep_trace,
                       error=f"{type(err).__name__}: {err}"[:300])
        record = dict(cfg, params=sum(p.numel() for p in model.net.parameters()),
                      final_loss=sum(h["loss"] for h in trainer.history[-4:]) / 4,
                      test_loss=test_loss(trainer.ema, sde, test_y),
                      train_seconds=seconds, device=device_name(args.device),
                      **{"test_" + key: v for key, v in bpd.items()})
        with open(os.path.join(out_dir, f"{cfg['name']}.json"), "w") as f:
            json.dump(record, f, indent=1)
        print(f"{cfg['name']:32s} test loss {record['test_loss']:.4f} bpd "
              f"{record['test_bpd']:.4f} +- {record['test_stderr']:.4f} nfe "
              f"{record['test_nfe']} ({seconds:.0f} s train)", flush=True)


def sweep_table(out: str) -> Optional[str]:
    records = []
    for path in sorted(glob.glob(os.path.join(out, "sweep", "*.json"))):
        with open(path) as f:
            records.append(json.load(f))
    if not records:
        return None
    order = {c["name"]: i for i, c in enumerate(sweep_configs())}
    records.sort(key=lambda r: order.get(r["name"], len(order)))
    lines = ["| trial | channels (params) | batch | steps | lr | EMA | loss weighting | "
             "training data | test DSM loss (EMA) | test bits/dim | trace | NFE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        weighting = "likelihood + IS" if r["importance_sampling"] else r["weighting"]
        bpd = (f"{r['test_bpd']:.3f} ± {r['test_stderr']:.3f}" if not r.get("test_error")
               else f"not computed ({r['test_error'].split(':')[0]})")
        data = "lattice k/8 - 1" if r["copies"] == 0 else f"dequantized x{r['copies']}"
        lines.append(f"| {r['name']} | {r['base_channels']} ({r['params']:,}) | {r['batch']} | "
                     f"{r['steps']} | {r['lr']:g} | {r['ema']:g} | {weighting} | {data} | "
                     f"{r['test_loss']:.4f} | {bpd} | {r['test_trace']} | "
                     f"{r['test_nfe'] or '-'} |")
    dev = sorted({r["device"] for r in records})
    trace = sorted({r["test_trace"] for r in records})
    return "\n".join(lines), dev, trace, records


def sweep_summary(records: List[Dict[str, object]]) -> str:
    """The trials' lessons, in numbers read from the records."""
    by = {r["name"]: r["test_bpd"] for r in records if not r.get("test_error")}

    def spread(prefix: str) -> str:
        v = [by[n] for n in (prefix, prefix + "-seed1", prefix + "-seed2") if n in by]
        if len(v) < 2:
            return ""
        return (f"`{prefix}` over seeds 0, 1, 2: {sum(v) / len(v):.3f} "
                f"({min(v):.3f} to {max(v):.3f})")

    lines = []
    match = [r["name"] for r in records
             if all(r.get(k) == v for k, v in DEFAULTS.items())
             and r["weighting"] == "none" and not r["importance_sampling"]]
    if match:
        lines.append(f"- The default run has the configuration of trial `{match[0]}` "
                     f"({by.get(match[0], float('nan')):.3f} bits/dim there).")
    seeds = [x for x in (spread("c32-b128"), spread("c16-b128")) if x]
    if seeds:
        lines.append("- Run-to-run spread (the test noise is the same for all trials, so this "
                     "is training noise): " + "; ".join(seeds) + ". Differences of 0.01 to "
                     "0.02 between single trials are within it.")
    pairs = [("c32-b128-lattice", "c32-b128", "training on the lattice values k/8 - 1 instead "
              "of dequantized copies"),
             ("c16-b128", "c32-b128", "16 instead of 32 channels (2700 against 1200 steps)"),
             ("c16-b64", "c16-b128", "batch 64 (4800 steps) instead of 128 (2700 steps), 16 "
              "channels"),
             ("c32-b128-lr0.004-ema0.999", "c32-b128", "lr 4e-3 instead of 2e-3, 32 channels"),
             ("c16-b128-lr0.004", "c16-b128", "lr 4e-3 instead of 2e-3, 16 channels"),
             ("c32-b128-lr0.0005-ema0.999", "c32-b128", "lr 5e-4 instead of 2e-3"),
             ("c32-b128-likelihood-is", "c32-b128", "likelihood weighting with importance "
              "sampling, 32 channels"),
             ("c16-b128-likelihood-is", "c16-b128", "likelihood weighting with importance "
              "sampling, 16 channels")]
    for a, b, what in pairs:
        if a in by and b in by:
            lines.append(f"- {what}: {by[a] - by[b]:+.3f} bits/dim (`{a}` {by[a]:.3f} against "
                         f"`{b}` {by[b]:.3f}).")
    return "\n".join(lines)


# -- the page ----------------------------------------------------------------------------------
def write_doc(path: str, r: Dict[str, object], sweep) -> None:
    c, b, s = r["config"], r["bpd"], r["samples"]
    doc_dir = os.path.dirname(os.path.abspath(path))
    img = os.path.relpath(r["grid_path"], doc_dir)
    loss_img = os.path.relpath(r["loss_path"], doc_dir)
    trace = ("Hutchinson's estimator, one Rademacher probe per image (its noise is inside "
             "the standard error)" if b["trace"] == "hutchinson" else
             "the exact trace (64 vector-Jacobian products per evaluation)")
    stopped = ("" if r["steps_done"] == c["steps"] else
               f" (stopped by `--minutes {r.get('minutes')}` before the {c['steps']} requested)")
    weighted = (", `||eps(x_t, t) - z||^2` summed over the 64 pixels"
                if c["weighting"] == "none" else "")
    text = f"""# Digits: a U-Net trained end to end

Written by `python {' '.join(['benchmarks/train_digits.py'] + r.get('command', []))}` on {r['date']};
every number and picture down to "How the defaults were chosen" comes from that run
(checkpoint in `{r['checkpoint']}`).

## Result

| | |
|---|---|
| **test bits/dim** (300 test digits, probability-flow ODE) | **{b['bpd']:.3f} ± {b['stderr']:.3f}** (mean ± standard error; per-image range {b['min']:.2f} to {b['max']:.2f}) |
| likelihood NFE / wall time | {b['nfe']} network evaluations ({b['steps']} accepted, {b['rejected']} rejected dopri5 steps, one solve over all 300 images) / {b['seconds']:.0f} s |
| training wall time | {r['train_seconds'] / 60:.1f} min for {r['steps_done']} steps{stopped} ({r['train_seconds'] / max(r['steps_done'], 1):.2f} s/step) |
| final training loss | {r['final_loss']:.4f} (mean over the last {4 * LOG_EVERY} steps); EMA test DSM loss {r['test_loss']:.4f} |
| baseline: independent per-pixel histogram | {r['hist'][0]:.3f} ± {r['hist'][1]:.3f} bits/dim |
| baseline: full-covariance Gaussian | {r['gauss'][0]:.3f} ± {r['gauss'][1]:.3f} bits/dim |
| baseline: uniform over the 17 levels | {math.log2(LEVELS):.3f} bits/dim |
| machine | {r['machine']} |

![real test digits and samples]({img})

Left: the first 64 test digits. Middle: 64 samples from DPM-Solver++(2M), 20 steps
(`solver="dpm_solver++", steps=20`): NFE {s['dpm_solver++']['nfe']}, {s['dpm_solver++']['seconds']:.1f} s.
Right: the same 64 prior draws through the adaptive probability-flow ODE
(`solver="ode"`, dopri5, `rtol=atol=1e-5`, end time `eps=1e-3`): NFE {s['ode']['nfe']},
{s['ode']['seconds']:.1f} s. Samples use the EMA weights and are shown rounded to the 17
grey levels (`round((x + 1) * 8)`, clipped to 0..16).

## Setup

| | |
|---|---|
| data | `scoresde.load_dataset("digits")`: scikit-learn's 8x8 digits, 1497 train / 300 test (index % 6 == 0), 17 grey levels k = 0..16 stored as x = k/8 - 1 |
| training data | {'the lattice values x = k/8 - 1' if c['copies'] == 0 else f"{c['copies']} independently dequantized copies of the training set (y = x + (u - 1/2)/8, u ~ U[0,1)), {c['copies'] * 1497:,} images, drawn with replacement"} |
| network | `UNet(in_channels=1, base_channels={c['base_channels']}, channel_mults=(1, 2), num_res_blocks=1)`: 8x8 and 4x4 levels, {r['params']:,} parameters, epsilon prediction, time input `999 t` |
| SDE | `VPSDE(beta_min=0.1, beta_max=20.0)`, T = 1 |
| loss | `dsm_loss`, weighting `{c['weighting']}`{', importance-sampled t' if c['importance_sampling'] else ''}, t ~ U(1e-5, 1) |
| optimizer | AdamW, lr {c['lr']:g} after {c['warmup']} warm-up steps (constant after), batch {c['batch']}, gradient clipping 1.0, EMA decay {c['ema']:g}, seed {c['seed']} |
| steps | {r['steps_done']} |
| likelihood | `scoresde.log_likelihood(ema, sde, y, method="dopri5", rtol=1e-5, atol=1e-5, eps=1e-5, trace="{b['trace']}")` on all 300 test images in one batch, float32; divergence by {trace} |
| dequantization | 17 bins of width 1/8 centred on the data values: y = k/8 - 1 + (u - 1/2)/8, one u ~ U[0,1)^64 per test image (seed 2024) |

### Bits per dimension for 17-level data

`scoresde.bits_per_dim` is written for 8-bit data: it dequantizes with 256 bins and adds
the offset `log 256 - log(b - a)`, so it cannot be used on the digits. The same derivation
(docs/likelihood.md) with 17 bins of width `1/8` in the model's units gives

    -log2 P(k) / D  <=  E_u[ -log p(y) / D - log(1/8) ] / log 2  =  E_u[ -log2 p(y) ] / D + 3,

which is what this page reports: bits per pixel of the discrete 17-level digit (the uniform
distribution over the levels has log2 17 = {math.log2(LEVELS):.3f}). The bins cover
[-1.0625, 1.0625]; the model's density is that of `p_eps` at `eps = 1e-5`. The per-pixel
histogram (counts on the training set plus 1 per level) has a density that is constant on
each bin, so for it the bound is an equality and its number is exactly comparable; the
Gaussian is fitted (mean and covariance) to the same dequantized training copies and
evaluated on the same dequantized test images as the network.

## Training

![training loss]({loss_img})

The training loss is `dsm_loss(weighting="{c['weighting']}")`{weighted}, in means of
{LOG_EVERY}-step windows; the EMA test loss is the unweighted one on the same 300 dequantized
test images, 8 draws of (t, z) each with a fixed seed.
"""
    if sweep is not None:
        table, devices, traces, records = sweep
        text += f"""
## How the defaults were chosen

Short trials with `python benchmarks/train_digits.py --sweep` (run on {', '.join(devices)},
several trials at a time, so their wall times mean nothing; test bits/dim on the same
dequantized test set as above, with the trace named in the row). Each trial gets about the
same CPU time on the 2-core machine (1-thread step times measured while other jobs shared
it: about 0.12 / 0.21 / 0.27 / 0.46 s for 16 / 32 channels at batch 64 / 128), so smaller
nets and batches get more steps. Unless its name says otherwise a trial uses {SWEEP_BASE['base_channels']} channels,
batch {SWEEP_BASE['batch']}, {SWEEP_BASE['steps']} steps, lr {SWEEP_BASE['lr']:g}, EMA
{SWEEP_BASE['ema']:g}, {SWEEP_BASE['copies']} dequantized copies and seed 0. The table holds the
{len(records)} trials run of the {len(sweep_configs())} the script lists.

{sweep_summary(records)}

{table}
"""
    text += f"""
## Reproduce

```bash
python benchmarks/train_digits.py                    # about {r['train_seconds'] / 60:.0f} min of training here, then evaluation
python benchmarks/train_digits.py --sweep            # the trials (add --device cuda on a GPU)
python benchmarks/train_digits.py --doc-only         # rewrite this page from runs/digits
```

Options: `--steps`, `--minutes` (stop training early after this many minutes), `--batch`,
`--lr`, `--ema`, `--base-channels`, `--copies` (0: train on the lattice values), `--trace`
(`hutchinson` or `exact`), `--threads`, `--out`, `--doc`, `--img-dir`; with `--sweep`,
`--trials` (names, comma-separated), `--shard i/k` and `--sweep-trace`. The checkpoint loads
with `scoresde.load_checkpoint("{r['checkpoint']}")` (EMA weights) or resumes with
`scoresde.Trainer.load(..., data=...)` (it was trained on an in-memory tensor).
Evaluation wall times: likelihood {b['seconds']:.0f} s, samples
{s['dpm_solver++']['seconds'] + s['ode']['seconds']:.0f} s.
"""
    with open(path, "w") as f:
        f.write(text)


# -- main --------------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--minutes", type=float, default=None,
                   help="stop training once this many minutes have passed")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--ema", type=float, default=DEFAULTS["ema"])
    p.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    p.add_argument("--base-channels", type=int, default=DEFAULTS["base_channels"])
    p.add_argument("--copies", type=int, default=DEFAULTS["copies"],
                   help="dequantized copies of the training set (0: lattice values)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    p.add_argument("--trace", choices=("hutchinson", "exact"), default="hutchinson")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared 2-core machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/digits")
    p.add_argument("--doc", default="docs/digits.md")
    p.add_argument("--img-dir", default="docs/img")
    p.add_argument("--sweep", action="store_true", help="run the hyperparameter trials")
    p.add_argument("--shard", default="0/1", help="with --sweep: run trials i, i+k, ... (i/k)")
    p.add_argument("--trials", default=None,
                   help="with --sweep: comma-separated trial names (default: all)")
    p.add_argument("--sweep-trace", choices=("hutchinson", "exact"), default="exact")
    p.add_argument("--doc-only", action="store_true",
                   help="rewrite the page from <out>/results.json and <out>/sweep/ (no training)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sweep:
        run_sweep(args)
        return
    if args.doc_only:
        with open(os.path.join(args.out, "results.json")) as f:
            write_doc(args.doc, json.load(f), sweep_table(args.out))
        print(f"wrote {args.doc} from {args.out}/results.json")
        return

    cfg = dict(steps=args.steps, batch=args.batch, lr=args.lr, ema=args.ema,
               warmup=args.warmup, base_channels=args.base_channels, copies=args.copies,
               seed=args.seed, weighting="none", importance_sampling=False)
    train_levels = to_levels(sd.load_dataset("digits", split="train").x)
    test_set = sd.load_dataset("digits", split="test")
    test_levels = to_levels(test_set.x)
    train_y = training_tensor(train_levels, args.copies,
                              torch.Generator().manual_seed(100 + args.seed))
    test_y = dequantize(test_levels, torch.Generator().manual_seed(2024))

    hist = histogram_bpd(train_levels, test_levels)
    gauss = gaussian_bpd(train_y if args.copies else dequantize(
        train_levels, torch.Generator().manual_seed(100)), test_y)
    print(f"baselines: histogram {hist[0]:.4f} +- {hist[1]:.4f}, Gaussian {gauss[0]:.4f} +- "
          f"{gauss[1]:.4f}, uniform {math.log2(LEVELS):.4f} bits/dim", flush=True)

    torch.manual_seed(args.seed)
    model, sde = build(args.base_channels, args.device)
    params = sum(q.numel() for q in model.net.parameters())
    print(f"UNet: {params:,} parameters; {machine()}", flush=True)
    trainer, train_seconds = train(model, sde, train_y, cfg, args.minutes,
                                   progress=not args.no_progress)
    ckpt = os.path.join(args.out, "checkpoint")
    trainer.save(ckpt)
    final_loss = sum(h["loss"] for h in trainer.history[-4:]) / len(trainer.history[-4:])
    tl = test_loss(trainer.ema, sde, test_y)
    print(f"trained {trainer.step} steps in {train_seconds:.0f} s, final loss {final_loss:.4f}, "
          f"EMA test loss {tl:.4f}", flush=True)

    bpd = test_bpd(trainer.ema, sde, test_y, args.trace)
    print(f"test bits/dim {bpd['bpd']:.4f} +- {bpd['stderr']:.4f} ({bpd['trace']}, NFE "
          f"{bpd['nfe']}, {bpd['seconds']:.0f} s)", flush=True)
    samples = draw_samples(trainer.ema, sde, 64, seed=args.seed)
    for name, v in samples.items():
        print(f"samples {name}: NFE {v['nfe']}, {v['seconds']:.1f} s", flush=True)

    os.makedirs(args.img_dir, exist_ok=True)
    grid_path = os.path.join(args.img_dir, "digits_samples.png")
    save_grid(grid_path, [
        ("test digits", test_set.x[:64]),
        (f"DPM-Solver++ 20 steps (NFE {samples['dpm_solver++']['nfe']})",
         samples["dpm_solver++"]["x"]),
        (f"adaptive ODE, dopri5 1e-5 (NFE {samples['ode']['nfe']})", samples["ode"]["x"]),
    ])
    loss_path = os.path.join(args.img_dir, "digits_loss.png")
    save_loss_plot(loss_path, trainer.history)

    result = dict(config=cfg, params=params, steps_done=trainer.step,
                  train_seconds=train_seconds, final_loss=final_loss, test_loss=tl, bpd=bpd,
                  hist=hist, gauss=gauss, machine=machine(), checkpoint=ckpt,
                  date=time.strftime("%Y-%m-%d"), grid_path=grid_path, loss_path=loss_path,
                  command=sys.argv[1:] if argv is None else list(argv), minutes=args.minutes,
                  samples={k: {kk: vv for kk, vv in v.items() if kk != "x"}
                           for k, v in samples.items()})
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_doc(args.doc, result, sweep_table(args.out))
    print(f"wrote {args.doc}, {grid_path}, {loss_path}", flush=True)


if __name__ == "__main__":
    main()

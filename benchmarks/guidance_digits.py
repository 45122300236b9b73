"""Conditional generation measured: classifier-free guidance on digits, inpainting's bias.

    python benchmarks/guidance_digits.py [--steps 1500] [--doc docs/guidance.md] [--quick]

1. Trains a class-conditional U-Net (16 channels) on scikit-learn's 8x8 digits with
   condition dropout p_uncond = 0.1 (``Trainer``, ``TrainConfig(conditional=True)``), and a
   small MLP classifier on the clean training digits (its test accuracy is reported).
2. For each guidance weight w samples 50 digits per class with DPM-Solver++(2M), 20 steps,
   and reports the classifier's accuracy on them (does the sample show the class asked
   for?), with the NFE each took (2 per guided evaluation for w > 0) and the wall time.
   The same for classifier guidance: a time-dependent classifier f(x_t, t) trained on
   noised training digits guides the model's unconditional score (its null token).
3. Inpaints the right half of the 300 test digits (replacement and RePaint) and reports the
   mean squared error of the filled half.
4. Gaussian inpainting bias: for N(mu, Sigma) in 3-D with the first coordinate known, the
   exact posterior p(x_u | x_k = y) is closed form (``GaussianData.condition``); the mean
   and covariance errors of each method's samples (4000 draws, exact score) against it.

Writes the tables between the markers of ``--doc`` and the pictures to docs/img/.
Runs on one CPU thread; about 10 minutes on the shared 2-core machine (``--quick``: a
smoke run in a minute, for checking the script, not for the page).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Dict, List

import torch
from torch import nn

import scoresde as sd
from scoresde.inpainting import inpaint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
CLASSIFIER_SCALES = (1.0, 2.0, 4.0, 8.0)
PER_CLASS = 50
SOLVER = dict(solver="dpm_solver++", steps=20)


def train_model(steps: int, seed: int = 0, run_dir: str = None):
    """The conditional U-Net; with ``run_dir``, loaded from there when it holds a run of
    ``steps`` steps, else trained and saved there."""
    if run_dir and os.path.exists(os.path.join(run_dir, "config.json")):
        trainer = sd.Trainer.load(run_dir)
        if trainer.step == steps:
            with open(os.path.join(run_dir, "train_seconds.txt")) as f:
                return trainer, float(f.read())
    data = sd.load_dataset("digits", split="train")
    torch.manual_seed(seed)
    net = sd.UNet(1, base_channels=16, num_res_blocks=1, num_classes=10)
    cfg = sd.TrainConfig(steps=steps, batch_size=128, lr=4e-3, warmup=100, ema_decay=0.999,
                         seed=seed, conditional=True, p_uncond=0.1, log_every=50)
    trainer = sd.Trainer(net, sd.VPSDE(), data, cfg)
    t0 = time.perf_counter()
    trainer.train(progress=False)
    seconds = time.perf_counter() - t0
    if run_dir:
        trainer.save(run_dir)
        with open(os.path.join(run_dir, "train_seconds.txt"), "w") as f:
            f.write(f"{seconds:.1f}")
    return trainer, seconds


def train_classifier(steps: int = 1500, seed: int = 0):
    """An MLP 64-256-256-10 on the clean training digits (AdamW, batch 128, small pixel
    noise as augmentation); returns it and its test accuracy."""
    train, test = sd.load_dataset("digits", split="train"), sd.load_dataset("digits", split="test")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.SiLU(), nn.Linear(256, 256),
                        nn.SiLU(), nn.Linear(256, 10))
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(len(train), (128,), generator=g)
        x = train.x[idx] + 0.1 * torch.randn(train.x[idx].shape, generator=g)
        loss = nn.functional.cross_entropy(clf(x), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    with torch.no_grad():
        acc = float((clf(test.x).argmax(1) == test.y).double().mean())
    return clf, acc, len(test)


class NoisyClassifier(nn.Module):
    """f(x_t, t) -> logits [batch, 10]: an MLP on the pixels and a sinusoidal embedding of
    999 t (the time-dependent classifier of classifier guidance)."""

    def __init__(self, hidden: int = 256):
        super().__init__()
        self.embed = sd.SinusoidalEmbedding(32)
        self.net = nn.Sequential(nn.Linear(64 + 32, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, 10))

    def forward(self, x, t):
        return self.net(torch.cat([x.flatten(1), self.embed(999.0 * t, dtype=x.dtype)], 1))


def train_noisy_classifier(sde, steps: int = 3000, seed: int = 0):
    """Cross-entropy on x_t = alpha x_0 + std z, t ~ U(1e-3, 1), of the training digits;
    returns it and its test accuracy at t = 0.1, 0.5, 0.9."""
    train, test = sd.load_dataset("digits", split="train"), sd.load_dataset("digits", split="test")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = NoisyClassifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(len(train), (256,), generator=g)
        t = 1e-3 + (1 - 1e-3) * torch.rand(256, generator=g)
        mean, std = sde.marginal_prob(train.x[idx], t)
        x_t = mean + std[:, None, None, None] * torch.randn(mean.shape, generator=g)
        loss = nn.functional.cross_entropy(clf(x_t, t), train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    accs = {}
    with torch.no_grad():
        for tv in (0.1, 0.5, 0.9):
            t = torch.full((len(test),), tv)
            mean, std = sde.marginal_prob(test.x, t)
            x_t = mean + std[:, None, None, None] * torch.randn(mean.shape, generator=g)
            accs[tv] = float((clf(x_t, t).argmax(1) == test.y).double().mean())
    return clf, accs


def guidance_table(model, sde, clf, noisy=None) -> List[Dict[str, float]]:
    """Rows for classifier-free guidance at each of WEIGHTS and, with ``noisy``, classifier
    guidance at each of CLASSIFIER_SCALES."""
    rows = []
    labels = torch.arange(10).repeat_interleave(PER_CLASS)
    runs = [("cfg", w, {"guidance": w}) for w in WEIGHTS]
    if noisy is not None:
        runs += [("classifier", w, {"classifier": noisy, "classifier_scale": w})
                 for w in CLASSIFIER_SCALES]
    for kind, w, kw in runs:
        g = torch.Generator().manual_seed(1)
        t0 = time.perf_counter()
        with torch.no_grad():
            res = sd.sample(model, sde, (len(labels), 1, 8, 8), generator=g, cond=labels,
                            **kw, **SOLVER)
            pred = clf(res.x.clamp(-1, 1)).argmax(1)
        acc = float((pred == labels).double().mean())
        rows.append({"kind": kind, "w": w, "acc": acc,
                     "se": (acc * (1 - acc) / len(labels)) ** 0.5, "nfe": res.nfe,
                     "calls": res.stats["network_calls"],
                     "clf_evals": res.stats.get("classifier_evals", 0),
                     "seconds": time.perf_counter() - t0, "x": res.x})
    return rows


def digits_inpainting(model, sde, quick: bool):
    test = sd.load_dataset("digits", split="test")
    truth = test.x
    mask = torch.ones(1, 8, 8)
    mask[..., 4:] = 0                                        # the right half is filled
    hidden = (1 - mask).bool().expand_as(truth)
    steps = 100 if quick else 200
    rows = []
    for name, kw in (("replacement", {}), ("RePaint r=5, j=5", {"resample": 5, "jumps": 5})):
        t0 = time.perf_counter()
        res = inpaint(model, sde, truth, mask, "euler_maruyama", steps=steps,
                      generator=torch.Generator().manual_seed(2), **kw)
        mse = float((res.x - truth)[hidden].pow(2).mean())
        rows.append({"name": name, "mse": mse, "nfe": res.nfe,
                     "seconds": time.perf_counter() - t0, "x": res.x})
    mean_fill = truth[hidden].pow(2).mean()  # baseline: fill with 0 (grey)
    train = sd.load_dataset("digits", split="train").x
    avg = train.mean(0, keepdim=True).expand_as(truth)
    baseline = float((avg - truth)[hidden].pow(2).mean())
    return rows, baseline, float(mean_fill), truth, mask, steps


GAUSS_METHODS = [("replacement, reverse SDE (euler_maruyama)", "euler_maruyama", {}),
                 ("replacement, PF-ODE (ode_heun)", "ode_heun", {}),
                 ("RePaint r=5, j=1 (euler_maruyama)", "euler_maruyama", {"resample": 5}),
                 ("RePaint r=10, j=5 (euler_maruyama)", "euler_maruyama",
                  {"resample": 10, "jumps": 5}),
                 ("RePaint r=20, j=5 (euler_maruyama)", "euler_maruyama",
                  {"resample": 20, "jumps": 5})]


def gaussian_bias(n: int = 4000, steps: int = 100):
    sde = sd.VPSDE()
    F = torch.float64
    mean = torch.tensor([0.5, -1.0, 0.2], dtype=F)
    cov = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 0.6]], dtype=F)
    gd = sd.GaussianData(mean, cov, sde=sde)
    mask = torch.tensor([1.0, 0.0, 0.0], dtype=F)
    y = torch.tensor([1.5, 0.0, 0.0], dtype=F)
    mu, S = gd.condition(mask, y)
    rows = []
    for name, solver, kw in GAUSS_METHODS:
        res = inpaint(gd.score, sde, y.expand(n, 3).clone(), mask, solver, steps=steps,
                      generator=torch.Generator().manual_seed(0), **kw)
        u = res.x[:, 1:]
        err_mean = u.mean(0) - mu
        err_cov = torch.cov(u.T) - S
        se = (torch.diagonal(S) / n).sqrt()
        rows.append({"name": name, "nfe": res.nfe, "mean": err_mean.tolist(),
                     "z": (err_mean / se).abs().max().item(),
                     "cov": err_cov.abs().max().item()})
    return rows, mu, S, n, steps


def save_pictures(rows, inp_rows, truth, mask, img_dir: str):
    from scoresde.cli.plots import image_grid, pyplot
    plt = pyplot()
    shown = [r for r in rows if r["kind"] == "cfg" and r["w"] in (0.0, 2.0)]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 6.5))
    for ax, r in zip(axes, shown):
        # 10 rows (classes 0..9) of 8 samples each
        pick = torch.cat([r["x"][c * PER_CLASS:c * PER_CLASS + 8] for c in range(10)])
        ax.imshow(image_grid(pick, ncol=8)[:, :, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"guidance w = {r['w']:g} (NFE {r['nfe']}), rows: classes 0-9")
        ax.axis("off")
    path1 = os.path.join(img_dir, "guidance_digits.png")
    fig.savefig(path1, dpi=100, bbox_inches="tight")
    plt.close(fig)
    panels = [("test digits", truth[:32]), ("known left half", (truth * mask - (1 - mask))[:32])]
    panels += [(r["name"], r["x"][:32]) for r in inp_rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 2.6))
    for ax, (title, x) in zip(axes, panels):
        ax.imshow(image_grid(x, ncol=8)[:, :, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    path2 = os.path.join(img_dir, "inpaint_digits.png")
    fig.savefig(path2, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path1, path2


def write_between(doc: str, marker: str, text: str) -> None:
    with open(doc) as f:
        page = f.read()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    new, n = re.subn(re.escape(start) + ".*?" + re.escape(end),
                     lambda m: f"{start}\n{text.strip()}\n{end}", page, flags=re.S)
    if n != 1:
        raise SystemExit(f"{doc} needs one {start} ... {end} pair")
    with open(doc, "w") as f:
        f.write(new)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps of the model")
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs", "guidance.md"))
    ap.add_argument("--quick", action="store_true", help="a smoke run (nothing written)")
    ap.add_argument("--run", help="save the trained model here (or load it on a rerun)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    steps = 60 if args.quick else args.steps
    t_start = time.perf_counter()

    trainer, train_s = train_model(steps, run_dir=args.run)
    model, sde = trainer.ema.eval(), trainer.sde
    clf, clf_acc, n_test = train_classifier(200 if args.quick else 1500)
    noisy, noisy_acc = train_noisy_classifier(sde, 300 if args.quick else 3000)
    print(f"model: {steps} steps in {train_s:.0f} s, final loss {trainer.history[-1]['loss']:.3f};"
          f" classifier test accuracy {clf_acc:.3f} on {n_test} digits; time-dependent "
          f"classifier {noisy_acc}", flush=True)
    rows = guidance_table(model, sde, clf, noisy)
    for r in rows:
        print(f"{r['kind']} w={r['w']:g}: accuracy {r['acc']:.3f} +- {r['se']:.3f}, NFE "
              f"{r['nfe']} ({r['calls']} calls, {r['clf_evals']} classifier), "
              f"{r['seconds']:.1f} s", flush=True)
    inp_rows, baseline, zero_fill, truth, mask, inp_steps = digits_inpainting(model, sde,
                                                                              args.quick)
    for r in inp_rows:
        print(f"inpaint {r['name']}: MSE {r['mse']:.4f}, NFE {r['nfe']}, {r['seconds']:.1f} s",
              flush=True)
    g_rows, mu, S, n, g_steps = gaussian_bias(n=1000 if args.quick else 4000)
    for r in g_rows:
        print(f"gauss {r['name']}: NFE {r['nfe']}, mean error {r['mean']}, max |z| "
              f"{r['z']:.1f}, max |cov error| {r['cov']:.3f}", flush=True)
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")
    if args.quick:
        return 0

    img_dir = os.path.join(os.path.dirname(os.path.abspath(args.doc)), "img")
    save_pictures(rows, inp_rows, truth, mask, img_dir)
    lines = [f"Model: `UNet(1, base_channels=16, num_classes=10)`, VPSDE, {steps} training "
             f"steps (batch 128, lr 4e-3, EMA 0.999, p_uncond 0.1) in {train_s / 60:.1f} min; "
             f"final training loss {trainer.history[-1]['loss']:.3f}. Classifier: an MLP "
             f"64-256-256-10 on the clean training digits, test accuracy "
             f"**{clf_acc:.3f}** on the {n_test} test digits. Time-dependent classifier for "
             f"classifier guidance: an MLP on (x_t, embedding of 999 t) trained on noised "
             f"training digits, test accuracy "
             + ", ".join(f"{a:.3f} at t = {t:g}" for t, a in noisy_acc.items())
             + f". Samples: {PER_CLASS} per class (500 in all), DPM-Solver++(2M), 20 steps, "
             f"seed 1; classifier guidance uses the model's unconditional score (null token).",
             "", "| guidance | scale | classifier accuracy on the samples | NFE | network calls "
             "| classifier calls | wall time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        name = "classifier-free" if r["kind"] == "cfg" else "classifier"
        lines.append(f"| {name} | {r['w']:g} | {r['acc']:.3f} ± {r['se']:.3f} | {r['nfe']} | "
                     f"{r['calls']} | {r['clf_evals']} | {r['seconds']:.1f} s |")
    write_between(args.doc, "guidance-digits", "\n".join(lines))
    lines = [f"The right half of the 300 test digits filled by `sd.inpaint` "
             f"(euler_maruyama, {inp_steps} steps per pass), the model above used "
             f"unconditionally (its null token). Mean squared error of the filled half "
             f"(pixels in [-1, 1]); baseline: the mean training digit's right half, MSE "
             f"{baseline:.4f}.", "", "| method | MSE of the filled half | NFE |", "|---|---|---|"]
    for r in inp_rows:
        lines.append(f"| {r['name']} | {r['mse']:.4f} | {r['nfe']} |")
    write_between(args.doc, "inpaint-digits", "\n".join(lines))
    lines = [f"N(mu, Sigma) in 3-D (mu = (0.5, -1, 0.2), Sigma = [[1, .8, .3], [.8, 1, .5], "
             f"[.3, .5, .6]]), x_0 known = 1.5, VPSDE, the exact score, {n} samples, "
             f"{g_steps} steps per pass. Exact posterior of (x_1, x_2): mean "
             f"({mu[0]:.3f}, {mu[1]:.3f}), covariance [[{S[0, 0]:.3f}, {S[0, 1]:.3f}], "
             f"[{S[1, 0]:.3f}, {S[1, 1]:.3f}]]. |z| is the mean error in standard errors.", "",
             "| method | NFE | mean error (x_1, x_2) | max \\|z\\| | max \\|covariance error\\| |",
             "|---|---|---|---|---|"]
    for r in g_rows:
        lines.append(f"| {r['name']} | {r['nfe']} | ({r['mean'][0]:+.3f}, {r['mean'][1]:+.3f})"
                     f" | {r['z']:.1f} | {r['cov']:.3f} |")
    write_between(args.doc, "inpaint-bias", "\n".join(lines))
    print(f"wrote {args.doc} and its pictures in {img_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

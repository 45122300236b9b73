"""Table 2: per-NFE overhead of the sampling loops against one bare network call.

Every loop drives the same float32 network under torch.no_grad. The verdict ratio is
``1 + own / call``: ``own`` is the loop's wall time per NFE outside the network, measured
with a null network (``0.5 * x``) on the same state shape, and ``call`` the median wall time
of one bare ``net(x, t_in)`` call. The direct ratio (loop wall time / NFE over the bare
calls timed right after it) is kept as a cross-check; it carries the network's call-to-call
noise.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde as sd

from . import _common as C

TARGET = 1.05


@dataclass
class Net:
    key: str
    label: str            # the key with the sizes, for the target rows
    title: str
    net: torch.nn.Module
    shape: Tuple[int, ...]


def make_nets(device: torch.device) -> List[Net]:
    """The two networks of issue 12, item 3, at its sizes: an MLP of width 256 at batch
    4096 (2-D) and a small U-Net at batch 256 on 1x16x16, randomly initialised, float32."""
    torch.manual_seed(0)
    mlp = sd.MLP(2, hidden=256).to(device).eval()
    unet = sd.UNet(in_channels=1, base_channels=32, channel_mults=(1, 2)).to(device).eval()
    return [Net("mlp", "mlp (hidden 256, batch 4096)",
                "scoresde.MLP(2, hidden=256) (depth 3), batch 4096, 2-D", mlp, (4096, 2)),
            Net("unet", "unet (batch 256, 1x16x16)",
                "scoresde.UNet(in_channels=1, base_channels=32, channel_mults=(1, 2)), "
                "batch 256, 1x16x16", unet, (256, 1, 16, 16))]


def _vp_coeffs(sde: sd.VPSDE, t: Tensor):
    """beta(t) and std(t) of the linear VPSDE as plain tensor arithmetic (what a user writes)."""
    beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
    log_alpha = -0.25 * t ** 2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min
    return beta, torch.sqrt(-torch.expm1(2.0 * log_alpha))


# -- the loops: each returns a function run() -> NFE --------------------------------------
def ours(net: Net, solver: str, steps: int, device, **opts) -> Callable[[], int]:
    sde = sd.DiscreteVPSDE.linear(1000) if solver == "ddpm" else sd.VPSDE()
    model = sd.ScoreModel(net.net, sde)

    def run() -> int:
        g = C.seeded(0, device)
        return sd.sample(model, sde, net.shape, solver, steps=steps, generator=g,
                         dtype=torch.float32, device=device, **opts).nfe
    return run


def diffusers_ddpm(net: Net, steps: int, device) -> Optional[Callable[[], int]]:
    try:
        from diffusers import DDPMScheduler
    except Exception:  # noqa: BLE001
        return None
    sch = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                        beta_schedule="linear", clip_sample=False, variance_type="fixed_small",
                        timestep_spacing="trailing")

    def run() -> int:
        g = C.seeded(0, device)
        sch.set_timesteps(steps, device=device)
        x = torch.randn(net.shape, generator=g, device=device)
        for k in sch.timesteps:
            eps = net.net(x, k.expand(net.shape[0]))
            x = sch.step(eps, k, x, generator=g).prev_sample
        return len(sch.timesteps)
    return run


def torchsde_euler(net: Net, steps: int, device) -> Callable[[], int]:
    import torchsde
    sde, eps_end = sd.VPSDE(), 1e-3
    S = sde.T - eps_end                      # reverse time s = T - t runs forwards on [0, S]
    dt = S / steps * (1 + 1e-6)              # exactly `steps` steps (no trailing sliver)
    shape, B = net.shape, net.shape[0]

    class Reverse(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def __init__(self):
            super().__init__()
            self.calls = 0

        def f(self, s, y):                   # dx/ds = -(f(t) x - g(t)^2 score)
            self.calls += 1
            t = sde.T - s
            beta, std = _vp_coeffs(sde, t)
            x = y.reshape(shape)
            score = -net.net(x, (t * 999.0).expand(B)) / std
            return (0.5 * beta * x + beta * score).reshape(B, -1)

        def g(self, s, y):
            beta, _ = _vp_coeffs(sde, sde.T - s)
            return torch.sqrt(beta).expand_as(y)

    def run() -> int:
        y0 = torch.randn(shape, generator=C.seeded(0, device), device=device).reshape(B, -1)
        ts = torch.tensor([0.0, S], device=device)
        # the interval ends at the float32 end time the solver reaches (0.999 rounds up)
        bm = torchsde.BrownianInterval(0.0, float(ts[-1]), size=y0.shape, dt=dt,
                                       device=device, entropy=0)
        field = Reverse()
        torchsde.sdeint(field, y0, ts, bm=bm, method="euler", dt=dt)
        return field.calls
    return run


def torchdiffeq_fixed(net: Net, steps: int, device, method: str) -> Callable[[], int]:
    from torchdiffeq import odeint
    sde, B = sd.VPSDE(), net.shape[0]
    calls = [0]

    def field(t, x):                         # dx/dt = f(t) x - g(t)^2 score / 2
        calls[0] += 1
        beta, std = _vp_coeffs(sde, t)
        score = -net.net(x, (t * 999.0).expand(B)) / std
        return -0.5 * beta * x - 0.5 * beta * score

    def run() -> int:
        calls[0] = 0
        x = torch.randn(net.shape, generator=C.seeded(0, device), device=device)
        odeint(field, x, torch.linspace(sde.T, 1e-3, steps + 1, device=device), method=method)
        return calls[0]
    return run


def loops(net: Net, steps: int, device) -> List[Tuple[str, str, Callable[[], int]]]:
    """(source, name, run) of every loop at about ``steps`` NFE, scoresde's first."""
    out = [("scoresde", "ddim", ours(net, "ddim", steps, device)),
           ("scoresde", "dpm_solver++ (2M)", ours(net, "dpm_solver++", steps, device)),
           ("scoresde", "euler_maruyama", ours(net, "euler_maruyama", steps, device)),
           ("scoresde", "ode_euler", ours(net, "ode_euler", steps, device)),
           ("scoresde", "ode_rk4", ours(net, "ode_rk4", 4 * max(1, steps // 4), device)),
           ("scoresde", "heun_karras", ours(net, "heun_karras", max(3, steps - 1 + steps % 2),
                                            device)),
           ("scoresde", "ddpm (DiscreteVPSDE)", ours(net, "ddpm", steps, device))]
    ddpm = diffusers_ddpm(net, steps, device)
    if ddpm is not None:
        out.append(("diffusers", "DDPMScheduler loop", ddpm))
    out += [("torchsde", "sdeint(method='euler', fixed dt)", torchsde_euler(net, steps, device)),
            ("torchdiffeq", "odeint(method='euler', fixed grid)",
             torchdiffeq_fixed(net, steps, device, "euler")),
            ("torchdiffeq", "odeint(method='rk4', fixed grid)",
             torchdiffeq_fixed(net, max(1, steps // 4), device, "rk4"))]
    return out


def paired_ratios(loop_s: Sequence[float], nfe: int,
                  bare_s: Sequence[Sequence[float]]) -> List[float]:
    """Direct ratio of each pair: (loop wall time / NFE) over the mean of the bare calls
    timed right after that loop run. ``loop_s[k]`` is pair k's loop time in seconds,
    ``bare_s[k]`` the single-call times of pair k."""
    if len(loop_s) != len(bare_s):
        raise ValueError(f"bare_s has {len(bare_s)} pairs of bare calls; expected one per "
                         f"loop run, and loop_s has {len(loop_s)}")
    return [(t / nfe) / statistics.fmean(b) for t, b in zip(loop_s, bare_s)]


class Null(torch.nn.Module):
    """A stand-in network that costs almost nothing: what remains is the loop's own time."""

    def forward(self, x: Tensor, t_in: Tensor) -> Tensor:
        return 0.5 * x


def measure(net: Net, steps: int, rounds: int, null_steps: int, null_runs: int, device,
            direct_peers: bool = True) -> Tuple[List[float], List[dict]]:
    """Each loop's own cost per NFE and its direct ratio, in one interleaved measurement.

    Each round goes through the loops; for each one it runs the loop ``null_runs`` times
    driving the :class:`Null` network for ``null_steps`` steps (its own cost), then, for
    the scoresde loops (and the peers' if ``direct_peers``), the loop once with the real
    network (about ``steps`` NFE) and right after it as many bare ``net(x, t_in)`` calls
    as the loop made, each timed on its own (the pair of the direct ratio, see
    :func:`paired_ratios`). The own cost and the bare calls are thereby timed in the same
    stretch of the machine's load, and a burst of load lands on different loops in
    different rounds.

    Returns every single bare-call time in seconds (the bare call's sample) and per loop
    a dict: source, loop, own_us (median over the ``rounds * null_runs`` null runs, in
    microseconds per NFE) and, where measured, nfe, ratio (median over the pairs) and
    spread (min, max); else those three are None."""
    x = torch.randn(net.shape, device=device)
    t_in = torch.full((net.shape[0],), 500.0, device=device)

    def bare() -> None:
        net.net(x, t_in)

    null = Net("null", "", "", Null(), net.shape)
    runs = loops(net, steps, device)
    null_short = {name: fn for _, name, fn in loops(null, steps, device)}
    null_long = {name: fn for _, name, fn in loops(null, null_steps, device)}
    direct = {name: src == "scoresde" or direct_peers for src, name, _ in runs}
    bare_s: List[float] = []
    with torch.no_grad():
        # NFE of each run (it does not depend on the network) and a warm-up of the loops'
        # code; two bare calls warm up the real network's sizes
        nfe = {name: fn() for name, fn in null_short.items()}
        null_nfe = {name: fn() for name, fn in null_long.items()}
        bare(), bare()
        own = {name: [] for _, name, _ in runs}
        loop_s = {name: [] for _, name, _ in runs}
        after = {name: [] for _, name, _ in runs}
        for _ in range(rounds):
            for _, name, fn in runs:
                own[name] += [C.wall(null_long[name], device) / null_nfe[name]
                              for _ in range(null_runs)]
                if direct[name]:
                    loop_s[name].append(C.wall(fn, device))
                    calls = [C.wall(bare, device) for _ in range(nfe[name])]
                    after[name].append(calls)
                    bare_s += calls
    rows = []
    for src, name, _ in runs:
        row = {"source": src, "loop": name, "own_us": 1e6 * statistics.median(own[name]),
               "nfe": None, "ratio": None, "spread": None}
        if direct[name]:
            ratios = paired_ratios(loop_s[name], nfe[name], after[name])
            row.update(nfe=nfe[name], ratio=statistics.median(ratios),
                       spread=(min(ratios), max(ratios)))
        rows.append(row)
    return bare_s, rows


PROFILED = (("heun_karras", 49), ("ddpm", 50))     # (solver, steps = NFE) of the profiles
PROFILE_TOP = 8
#: profile_loop's output before the per-solve coefficients (issue 12, item 3), recorded at
#: commit d369211 on the shared 2-core machine under load (microseconds are inflated by the
#: load and the profiler; the call counts per run are exact): total us/NFE, then
#: (function, calls per run, us/NFE of own time).
PROFILE_BEFORE = {
    "heun_karras": (1552, [
        ("scoresde/sdes/vp.py:31(_log_alpha)", 257, 213.9),
        ("<method 'any' of 'torch._C.TensorBase' objects>", 613, 186.8),
        ("<method 'clamp' of 'torch._C.TensorBase' objects>", 461, 144.0),
        ("scoresde/sdes/base.py:239(_marginal_coeffs)", 257, 114.4),
        ("scoresde/sdes/base.py:34(check_time)", 204, 92.3),
        ("scoresde/samplers/karras.py:53(step)", 24, 90.3),
        ("<built-in method torch._C._linalg.linalg_vector_norm>", 24, 78.1),
        ("<built-in method torch.where>", 402, 50.2)]),
    "ddpm": (1669, [
        ("scoresde/sdes/discrete.py:160(_hermite)", 152, 708.4),
        ("solvers/loop.py:49(integrate)", 1, 119.7),
        ("<built-in method torch.randn>", 50, 115.6),
        ("scoresde/samplers/predictors.py:40(ancestral)", 50, 115.5),
        ("<built-in method torch._C._linalg.linalg_vector_norm>", 50, 92.0),
        ("scoresde/sdes/discrete.py:142(_index)", 50, 73.7),
        ("<method 'clamp' of 'torch._C.TensorBase' objects>", 254, 69.5),
        ("scoresde/sdes/discrete.py:174(_log_alpha)", 152, 57.2)]),
}


def profile_loop(solver: str, steps: int, repeats: int, device,
                 top: int = PROFILE_TOP) -> Tuple[float, List[Tuple[str, int, float]]]:
    """cProfile of ``sample(solver)`` driving the null network on a 4096 x 2 state: the
    total microseconds per NFE and the ``top`` functions by own time (name, calls per run,
    microseconds per NFE). A profiler adds its own cost per Python call, so compare these
    with each other, not with the timings above."""
    import cProfile
    import os
    import pstats
    net = Net("null", "", "", Null(), (4096, 2))
    fn = ours(net, solver, steps, device)
    with torch.no_grad():
        nfe = fn()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(repeats):
            fn()
        prof.disable()
    stats = pstats.Stats(prof)
    per = 1e6 / (nfe * repeats)
    rows = []
    for (path, line, func), (_, ncalls, tottime, _, _) in stats.stats.items():
        where = (f"{os.path.relpath(path, C.ROOT)}:{line}({func})"
                 if path.startswith(C.ROOT) else
                 (f"{os.path.basename(path)}:{line}({func})" if line else func))
        rows.append((where, ncalls // repeats, tottime * per))
    rows.sort(key=lambda r: -r[2])
    return stats.total_tt * per, rows[:top]


def plot_ratios(plot: List[Tuple[str, list]], cfg: C.Config) -> str:
    """One panel per network: the verdict ratio of every loop, and its direct ratio
    (median and min-max over the pairs) where measured. ``plot`` holds (net key, bars),
    a bar being (loop, source, verdict ratio, measure()'s row or None). Returns the
    Markdown image path."""
    plt = C.pyplot()
    fig, axes = plt.subplots(1, len(plot), figsize=(6.5 * len(plot), 5.0),
                             constrained_layout=True)
    for ax, (key, bars) in zip(axes, plot):
        ys = list(range(len(bars)))
        for src, color in (("scoresde", "C0"), ("peer", "C7")):
            pts = [(y, b[2]) for y, b in zip(ys, bars)
                   if (b[1] == "scoresde") == (src == "scoresde")]
            ax.plot([v for _, v in pts], [y for y, _ in pts], "D", color=color, ms=5,
                    label=f"verdict: 1 + own / call ({src})")
        have = [(y + 0.25, b[3]) for y, b in zip(ys, bars) if b[3] is not None]
        ax.errorbar([r["ratio"] for _, r in have], [y for y, _ in have],
                    xerr=[[r["ratio"] - r["spread"][0] for _, r in have],
                          [r["spread"][1] - r["ratio"] for _, r in have]],
                    fmt="o", color="k", ms=3, lw=0.8, capsize=2,
                    label="direct: median, min–max over pairs")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(TARGET, color="C3", lw=0.8, ls="--", label=f"target {TARGET}")
        ax.set_yticks(ys, [b[0] for b in bars], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("time per NFE / bare network call")
        ax.set_title(f"overhead, {key} ({C.device_name(cfg.device)})")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    return C.save_figure(fig, cfg, "bench_overhead")


def run(cfg: C.Config) -> C.Section:
    t_section = time.perf_counter()
    # rounds of the interleaved measurement, NFE of a direct-ratio run, null runs per round;
    # --quick leaves out the peers' U-Net pairs (4 loops x 3 rounds x 7 calls of ~0.3 s on
    # 2 CPU cores)
    rounds, steps, null_runs = (3, 3, 2) if cfg.quick else (7, 12, 1)
    null_steps = 50
    repeats = rounds * null_runs
    nets = make_nets(cfg.device)
    direct_peers = {net.key: not (cfg.quick and net.key == "unet") for net in nets}
    md = ["## 2. Sampling-loop overhead", "",
          "Issue 12, item 3: the loop costs at most 1.05x the bare network call per NFE for "
          "every fixed-step sampler, on the issue's two networks: "
          + " and ".join(f"`{n.title}`" for n in nets) + " (randomly initialised, float32, "
          "under `torch.no_grad()`). scoresde runs go through `scoresde.sample` with a "
          "`ScoreModel` (epsilon prediction, VPSDE; `ddpm` on `DiscreteVPSDE.linear(1000)` "
          "with integer timesteps), so a loop's cost includes the score parametrisation, the "
          "sampler's update and the loop's checks. The peers call the network directly in a "
          "hand-written VPSDE field (torchsde: reverse SDE in s = T - t with a "
          "`BrownianInterval` given the step as its `dt` hint; diffusers: `DDPMScheduler` "
          "with the same linear betas, `trailing` spacing). RK4 loops take a quarter of the "
          "steps (4 NFE each).", "",
          "**Method.** A loop's wall time is NFE x (one network call) + (its own work), so "
          "its time per NFE over one call is 1 + (own cost per NFE) / (call), exactly in "
          "expectation (the decomposition assumes only that the loop's own work does not "
          "depend on which network it calls). The verdict is that expression with both "
          "terms measured separately: *own* is the loop's time per NFE driving a null "
          "network (`0.5 * x`, the same state shape, the same `sample` call and "
          f"`ScoreModel`), {null_steps} steps, median of {repeats} runs (it includes the "
          "null call itself, so it slightly overstates); *call* is the median of every "
          "bare `net(x, t_in)` call timed in the cross-check below (each timed on its own). "
          "The null runs and the bare calls are interleaved round by round over the loops, "
          "so both see the same stretch of the machine's load. Why not the direct ratio: on "
          "a shared CPU one call of the same network varies by tens of per cent from call "
          "to call, while a loop's own cost is a few hundred microseconds to a few "
          "milliseconds against calls of tens to hundreds of milliseconds; a ratio of two "
          "noisy wall times cannot resolve a 5 % target (see the spread of its pairs "
          "below), the decomposition measures the small term on its own, without the "
          "network's noise.", "",
          "**Cross-check.** The direct ratio, in a paired design: each round runs each "
          f"loop once with the real network (about {steps} NFE) and right after it as many "
          "bare calls as the loop made; the pair's ratio is (loop time / NFE) / (mean of "
          "those calls); with so few NFE a run's one-off setup (the grid, the initial "
          f"noise) weighs more per NFE than in the {null_steps}-step null runs. 'direct' is "
          f"the median over the {rounds} rounds and 'spread' the "
          "smallest and largest pair. A direct ratio below 1 is call-to-call noise (a loop "
          "cannot cost less than its network calls), and so is a direct ratio above the "
          "verdict by a similar amount: the spread shows how far one pair can be off."
          + (" In `--quick` mode the peers' U-Net pairs are left out (time); the full run "
             "measures them." if not all(direct_peers.values()) else ""), "",
          "Columns: 'own µs / NFE' the null-network cost; 'verdict: 1 + own / call', "
          f"against the target ≤ {TARGET} for the scoresde loops (the peers' rows are for "
          "comparison); 'NFE' of each cross-check run; 'direct' and 'spread' as above.", ""]
    targets, plot, costs, source = [], [], {}, {}
    for net in nets:
        t0 = time.perf_counter()
        bare_s, rows = measure(net, steps, rounds, null_steps, null_runs, cfg.device,
                               direct_peers[net.key])
        C.log(f"[overhead] {net.key}: {time.perf_counter() - t0:.0f} s")
        call = statistics.median(bare_s)
        table, bars = [], []
        for r in rows:
            ratio = 1.0 + r["own_us"] * 1e-6 / call
            ok = ratio <= TARGET
            has = r["ratio"] is not None
            table.append([r["loop"], r["source"], f"{r['own_us']:.0f}", C.fmt_f(ratio, 4),
                          r["nfe"] if has else "–", C.fmt_f(r["ratio"], 3),
                          f"{r['spread'][0]:.2f}–{r['spread'][1]:.2f}" if has else "–",
                          C.verdict(ok) if r["source"] == "scoresde" else "–"])
            if r["source"] == "scoresde":
                targets.append((f"overhead ≤ {TARGET}x, {net.label}, {r['loop']}", ok,
                                f"{ratio:.4f}x (direct {r['ratio']:.2f}x, spread "
                                f"{r['spread'][0]:.2f}–{r['spread'][1]:.2f})"))
            bars.append((r["loop"], r["source"], ratio, r if has else None))
            costs.setdefault(r["loop"], {})[net.key] = r["own_us"]
            source[r["loop"]] = r["source"]
        md += [f"**{net.title}**: one bare call takes {call * 1e3:.1f} ms (median of "
               f"{len(bare_s)} calls, {min(bare_s) * 1e3:.1f}–{max(bare_s) * 1e3:.1f}).", "",
               C.md_table(["loop", "source", "own µs / NFE", "verdict: 1 + own / call",
                           "NFE", "direct", "spread", "target"], table, "llrrrrrc"), ""]
        plot.append((net.key, bars))
    md += ["**The loops' own cost.** The null-network times of the tables above side by "
           f"side: microseconds per NFE spent outside the network ({null_steps} steps, "
           f"median of {repeats}), on the two state shapes. This is the number the "
           "per-step work in `scoresde.samplers` and `solvers.integrate` reduces.", "",
           C.md_table(["loop", "source"] + [f"µs / NFE, {' x '.join(map(str, n.shape))}"
                                            for n in nets],
                      [[name, source[name]] + [f"{c[net.key]:.0f}" for net in nets]
                       for name, c in costs.items()], "llrr"), ""]
    C.log("[overhead] profiles")
    md += ["### Profile before/after", "",
           "`benchmarks/overhead.py:profile_loop`: cProfile of `sample()` driving the null "
           "network (4096 x 2) for the two loops with the most own cost before the per-solve "
           "coefficients, "
           f"{repeats} runs after a warm-up; the {PROFILE_TOP} functions with the most own "
           "time, with their calls per run and microseconds of own time per NFE (the "
           "profiler adds its own cost per Python call, so the totals are above the "
           "table's). 'Before' is the same function's output recorded at commit d369211, "
           "before the per-solve coefficients (on the shared machine under load: compare "
           "the call counts, which are exact, more than the microseconds): the DDPM loop "
           "evaluated the DiscreteVPSDE schedule's Hermite interpolant three times per step "
           "(the ancestral update's beta at both ends, the score's std) and `heun_karras` "
           "spent most of a short run building its Karras grid (a 100-iteration bisection "
           "through the checked `marginal_coeffs`, a host sync per iteration). Now the "
           "grid's alpha, std and log alpha are computed once per solve and read by the "
           "updates and by a `ScoreModel` of the same SDE, and the bisection stops at its "
           "fixed point without checks (the same bits).", ""]
    for solver, steps in PROFILED:
        total, rows = profile_loop(solver, steps, repeats, cfg.device)
        b_total, b_rows = PROFILE_BEFORE[solver]
        table = [[f"`{b[0]}`" if b else "", b[1] if b else "", f"{b[2]:.0f}" if b else "",
                  f"`{a[0]}`" if a else "", a[1] if a else "", f"{a[2]:.0f}" if a else ""]
                 for b, a in zip(b_rows + [None] * (len(rows) - len(b_rows)),
                                 rows + [None] * (len(b_rows) - len(rows)))]
        md += [f"**{solver}**, {steps} NFE: profiled total {b_total:.0f} µs/NFE before, "
               f"{total:.0f} µs/NFE now.", "",
               C.md_table(["before: function", "calls/run", "µs/NFE", "now: function",
                           "calls/run", "µs/NFE"], table, "lrrlrr"), ""]
    img = plot_ratios(plot, cfg)
    md += [f"![overhead]({img})", ""]
    C.log(f"[overhead] section took {time.perf_counter() - t_section:.0f} s")
    return {"markdown": "\n".join(md), "targets": targets}

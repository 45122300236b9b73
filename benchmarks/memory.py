"""Peak memory and wall time of sampling and exact likelihoods against batch and step count.

Every measurement runs in a fresh Python process (``python -m benchmarks.memory --child
JSON``), so that its peak resident set size (``ru_maxrss``; on CUDA
``torch.cuda.max_memory_allocated``) is its own. The network is the demo's MLP (width 128,
depth 3, float32) with trainable parameters, as after training. Reported: the peak minus
the same process's peak after importing torch and building the network (the baseline), and
the wall time of the call alone.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Dict, List

if __package__ in (None, ""):
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks import _common as C  # noqa: E402

SIZES = (10_000, 100_000, 1_000_000)
# (solver, steps = network evaluations, label): 20 Heun steps, 10 DPM-Solver++ steps, 100
# Euler-Maruyama steps
SAMPLERS = (("ode_heun", 40, "20 Heun steps"), ("dpm_solver++", 10, "10 steps"),
            ("euler_maruyama", 100, "100 steps"))
CHUNK = 16_384                                # sample(batch_size=) for the chunked row
# --quick leaves out the longest 1e6-point runs (on 2 cores: 100 NFE ~17 min, 40 NFE ~4 min)
# and the 1e5-point runs of the two samplers whose slope is then not fitted (~80 s)
# (likewise dpm_solver++ at 1e5, ~19 s: its slope is fitted from 1e4 and 1e6 alone)
QUICK_SKIP = {("euler_maruyama", 1_000_000), ("ode_heun", 1_000_000),
              ("euler_maruyama", 100_000), ("ode_heun", 100_000), ("dpm_solver++", 100_000)}
QUICK_SKIP_GRAD = {"euler_maruyama"}   # its grad=True row: 10 GB and ~18 s at 1e4 points
STEPS_NFE = (10, 40)                   # ode_heun at STEPS_POINTS: 5 and 20 Heun steps
STEPS_NFE_QUICK = (4, 16)              # --quick: 2 and 8 Heun steps (~50 s less)
STEPS_POINTS = 100_000
BEFORE_SIZES = (10_000,)   # grad=True keeps every step's graph: 1e5 points pass 23 GB
LIKELIHOOD = ((256, 16), (1024, 4))    # (D, batch) for the exact trace
# --quick: only D = 1024 (the size), without the per_sample column (~60 s less)
LIKELIHOOD_QUICK = ((1024, 4),)
SLOPE_TARGET = 1.5                     # sampler slope <= 1.5 x one evaluation's slope
STEPS_TARGET = 1.15                    # likelihood: peak at rtol 1e-5 <= 1.15 x at 1e-3


# -- the child: one measurement ---------------------------------------------------------------
def _peak_mb(device: torch.device) -> float:
    """The process's peak memory in MiB: on CUDA the allocator's peak; on a CPU the resident
    high-water mark VmHWM of /proc/self/status. Not ru_maxrss: Linux carries it across
    exec, so a child started by a parent holding 800 MiB reported at least 800 MiB
    whatever it did (every cell of this table read 556-784 MiB before)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024           # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(spec: Dict) -> Dict:
    import scoresde as sd
    from scoresde.nets import MLP

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    dim = spec.get("dim", 2)
    sde = sd.VPSDE(beta_min=0.1, beta_max=20.0)
    net = MLP(dim=dim, hidden=128, depth=3).to(device)
    model = sd.ScoreModel(net, sde, prediction="epsilon")
    g = torch.Generator(device=device).manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_mb(device)
    n = spec["n"]
    start = time.perf_counter()
    if spec["kind"] == "eval":           # one network evaluation, the unit of the slope
        with torch.no_grad():
            x = torch.randn(n, dim, generator=g, device=device)
            out = model(x, torch.full((n,), 0.5, device=device))
        nfe = 1
    elif spec["kind"] == "sample":
        out = sd.sample(model, sde, (n, dim), solver=spec["solver"], steps=spec["steps"],
                        generator=g, grad=spec.get("grad", False),
                        batch_size=spec.get("batch_size"))
        nfe = out.nfe
    else:                                # exact-trace likelihood
        x = torch.randn(n, dim, generator=g, device=device) * 0.5
        out = sd.log_likelihood(model, sde, x, rtol=spec["tol"], atol=spec["tol"],
                                trace="exact", per_sample=spec.get("per_sample", False))
        nfe = out.nfe
    C.sync(device)
    seconds = time.perf_counter() - start
    return {"base_mb": base, "peak_mb": _peak_mb(device), "seconds": seconds, "nfe": nfe}


def measure(spec: Dict) -> Dict:
    """Run one measurement in a fresh process; {"mb": its peak, "base": the peak before
    the call (torch imported, network built), "seconds", "nfe"}."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=C.ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"mb": out["peak_mb"], "base": out["base_mb"], "seconds": out["seconds"],
            "nfe": out["nfe"]}


def _slope(points: List[tuple]) -> float:
    """Least-squares slope of MiB against n, in bytes per point."""
    n = [p[0] for p in points]
    m = [p[1] for p in points]
    nb, mb = sum(n) / len(n), sum(m) / len(m)
    return (sum((a - nb) * (b - mb) for a, b in zip(n, m))
            / sum((a - nb) ** 2 for a in n)) * 2 ** 20


def _cell(r: Dict) -> str:
    return r["error"] if "error" in r else f"{r['mb']:.0f} MiB, {r['seconds']:.2f} s"


def _baseline(results) -> str:
    """The range of the processes' peaks before the call, for the text."""
    bases = [r["base"] for r in results if "base" in r]
    return f"{min(bases):.0f}-{max(bases):.0f} MiB" if bases else "?"


# -- the section --------------------------------------------------------------------------------
def run(cfg: C.Config) -> C.Section:
    dev = str(cfg.device)
    unit = "GPU memory allocated" if cfg.device.type == "cuda" else "peak resident memory"
    rows, targets = [], []
    scale_runs: Dict[int, Dict] = {}

    C.log("[memory] one network evaluation")
    evals = {n: measure({"device": dev, "kind": "eval", "n": n}) for n in SIZES}
    eval_slope = _slope([(n, evals[n]["mb"]) for n in SIZES])
    rows.append(["one network evaluation (no graph)", "1"]
                + [_cell(evals[n]) for n in SIZES] + [f"{eval_slope:.0f}"])
    for solver, steps, label in SAMPLERS:
        C.log(f"[memory] {solver}")
        sizes = [n for n in SIZES if not (cfg.quick and (solver, n) in QUICK_SKIP)]
        res = {n: measure({"device": dev, "kind": "sample", "solver": solver, "steps": steps,
                           "n": n}) for n in sizes}
        if solver == "dpm_solver++":
            scale_runs = res
        ok = all("error" not in r for r in res.values())
        nfe = next((r["nfe"] for r in res.values() if "nfe" in r), "?")
        # Fit and judge only with the 1e6 run: below it the activations are a few MiB,
        # within the allocator's and the imports' own variation.
        fitted = ok and SIZES[-1] in res
        slope = _slope([(n, res[n]["mb"]) for n in sizes]) if fitted else float("nan")
        rows.append([f"`{solver}`, {label}", str(nfe)]
                    + [_cell(res[n]) if n in res else "not run (--quick)" for n in SIZES]
                    + [f"{slope:.0f}" if fitted else "–"])
        if fitted:
            targets.append((f"memory: {solver} slope ≤ {SLOPE_TARGET} × one evaluation's",
                            slope <= SLOPE_TARGET * eval_slope,
                            f"{slope:.0f} vs {eval_slope:.0f} B/point"))
        skip_grad = cfg.quick and solver in QUICK_SKIP_GRAD
        before = {} if skip_grad else {
            n: measure({"device": dev, "kind": "sample", "solver": solver, "steps": steps,
                        "n": n, "grad": True}) for n in BEFORE_SIZES}
        rows.append([f"`{solver}`, grad=True (every call before #17)", str(nfe)]
                    + [_cell(before[n]) if n in before else
                       ("not run (--quick)" if skip_grad and n in BEFORE_SIZES else "not run")
                       for n in SIZES] + [""])

    C.log("[memory] chunked")
    chunked = measure({"device": dev, "kind": "sample", "solver": "dpm_solver++", "steps": 10,
                       "n": SIZES[-1], "batch_size": CHUNK})
    rows.append([f"`dpm_solver++`, 10 steps, batch_size={CHUNK} (NFE summed over the chunks)",
                 str(chunked.get("nfe", "?"))]
                + ["", "", _cell(chunked), ""])
    one_call = scale_runs.get(SIZES[-1], {"error": "not run"})
    scale_ok = "error" not in one_call and "error" not in chunked
    targets.append(("scale: `sample` of 1e6 2-D points in one call (dpm_solver++, 10 steps)",
                    scale_ok, (f"{one_call['seconds']:.0f} s, {one_call['mb']:.0f} MiB peak; "
                               f"batch_size={CHUNK}: {chunked['seconds']:.0f} s, "
                               f"{chunked['mb']:.0f} MiB") if scale_ok else
                    one_call.get("error", chunked.get("error", "error"))))

    C.log("[memory] steps")
    steps_nfe = STEPS_NFE_QUICK if cfg.quick else STEPS_NFE
    few = measure({"device": dev, "kind": "sample", "solver": "ode_heun", "steps": steps_nfe[0],
                   "n": STEPS_POINTS})
    many = measure({"device": dev, "kind": "sample", "solver": "ode_heun",
                    "steps": steps_nfe[1], "n": STEPS_POINTS})
    # Four times the steps may add at most one evaluation's activations to the peak (the
    # allocator's high-water mark moves a little with time); a kept graph would add
    # 30 more evaluations' worth.
    one_eval_mb = eval_slope * STEPS_POINTS / 2 ** 20
    steps_ok = "error" not in few and "error" not in many and \
        many["mb"] - few["mb"] <= one_eval_mb
    targets.append((f"memory: ode_heun peak at {steps_nfe[1] // 2} Heun steps - at "
                    f"{steps_nfe[0] // 2} ≤ one evaluation's activations (1e5 points)",
                    steps_ok, f"{many['mb'] - few['mb']:.0f} vs {one_eval_mb:.0f} MiB"
                    if steps_ok or "mb" in many and "mb" in few else "error"))

    C.log("[memory] likelihood")
    ll_rows = []
    for dim, batch in (LIKELIHOOD_QUICK if cfg.quick else LIKELIHOOD):
        r = {tol: measure({"device": dev, "kind": "likelihood", "dim": dim, "n": batch,
                           "tol": tol}) for tol in (1e-3, 1e-5)}
        per = None if cfg.quick else measure({"device": dev, "kind": "likelihood", "dim": dim,
                                              "n": batch, "tol": 1e-5, "per_sample": True})
        ll_rows.append([str(dim), str(batch)] + [
            f"{_cell(r[t])}, NFE {r[t].get('nfe', '?')}" for t in (1e-3, 1e-5)]
            + ["not run (--quick)" if per is None else f"{_cell(per)}, NFE {per.get('nfe', '?')}"])
        if all("error" not in v for v in r.values()):
            targets.append((f"memory: exact likelihood D={dim} peak at rtol 1e-5 ≤ "
                            f"{STEPS_TARGET} × at 1e-3", r[1e-5]["mb"] <= STEPS_TARGET
                            * r[1e-3]["mb"],
                            f"{r[1e-5]['mb']:.0f} vs {r[1e-3]['mb']:.0f} MiB"))

    md = ["## 4. Memory", "",
          f"Each cell is one fresh process: its {unit} (MiB, including the "
          f"{_baseline(list(evals.values()) + [few, many])} that importing torch and "
          "building the network take before the call), and the wall time of the call. The network is "
          "the demo's MLP (width 128, depth 3, float32, trainable parameters as after "
          "training); samples are 2-D. `sample()` keeps no autograd graph across steps "
          "(issue 17), so memory grows with the batch by about one network evaluation's "
          "activations per point (the slope column, bytes per point) and not with the "
          "number of steps; `grad=True` rows keep the graph, as every call did before "
          "(that is how 1e6 points ran out of 24 GB; with `grad=True` even 1e5 points of "
          "`ode_heun` grew past 23 GB and were killed, so those rows stop at 1e4). The "
          f"`batch_size={CHUNK}` row solves 1e6 points in chunks: its temporaries stay small "
          "enough for the allocator to reuse instead of mapping fresh pages at every "
          "evaluation (on CPU most of the one-batch time is page faults).", "",
          C.md_table(["run", "NFE"] + [f"{n:.0e} points" for n in SIZES] + ["B/point"],
                     rows, "lrrrrr"), "",
          f"Steps: `ode_heun` at 1e5 points, {steps_nfe[0] // 2} Heun steps: {_cell(few)}; "
          f"{steps_nfe[1] // 2} Heun steps: {_cell(many)}.", "",
          "Exact-trace log-likelihood (`trace='exact'`, dopri5) of an MLP on D dimensions: "
          "a tighter tolerance makes more evaluations but holds one evaluation's graph at a "
          "time, so the peak does not grow. The exact trace is chunked (`chunk_size`: at "
          "most 2^20 cotangent entries per vmapped backward pass), so D = 1024 stays at the "
          "same peak; the last column is the same solve with per-sample error control "
          "(`per_sample=True`).", "",
          C.md_table(["D", "batch", "rtol = atol = 1e-3", "1e-5", "1e-5, per_sample=True"],
                     ll_rows, "rrrrr")]
    return {"markdown": "\n".join(md), "targets": targets}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help="internal: run one measurement given as JSON")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
    else:
        sec = run(C.Config(quick=True, device=torch.device("cpu"), img_dir="", img_rel=""))
        print(sec["markdown"])
        for name, ok, detail in sec["targets"]:
            print(f"{C.verdict(ok)}  {name}: {detail}")

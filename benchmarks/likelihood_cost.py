"""Table 3: the cost of exact log-likelihoods, scoresde.log_likelihood against scipy.

The baseline is score_sde's recipe: scipy.integrate.solve_ivp(RK45) on the flattened
augmented state [x, int div v] with a host round trip (numpy -> torch -> numpy) per
evaluation. Both evaluate the same field and the same exact divergence
(scoresde.likelihood.divergence.exact_divergence), at the same rtol/atol, from the same x.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import Tensor

import scoresde as sd
import solvers
from scoresde.data import gmm_oracle
from scoresde.dynamics import probability_flow
from scoresde.likelihood.divergence import exact_divergence

from . import _common as C
from .accuracy import EigenMixtureScore, gauss64_params

TOL = 1e-5
EPS = 1e-5
TARGET = 0.5


@dataclass
class Case:
    key: str
    title: str
    sde: sd.SDE
    score: Callable[[Tensor, Tensor], Tensor]
    x: Tensor
    truth: Optional[Callable[[Tensor, float], Tensor]]   # log p_t(x), closed form, or None


def make_cases(cfg: C.Config) -> List[Case]:
    dev, q = cfg.device, cfg.quick
    sde = sd.VPSDE()
    out = []
    gmm = gmm_oracle().with_sde(sde)
    fast = EigenMixtureScore(gmm, sde, dev)
    x = gmm.marginal(EPS).sample(64 if q else 256, generator=C.seeded(5),
                                 dtype=torch.float64).to(dev)
    out.append(Case("gmm2d", "2-D mixture (gmm_oracle), exact score, float64", sde, fast, x,
                    lambda y, t, f=fast: f.log_prob(y, torch.full((y.shape[0],), t, dtype=y.dtype,
                                                                  device=y.device))))
    mean, cov, _, _ = gauss64_params()
    g64 = sd.GaussianData(mean, cov, sde=sde)
    fast64 = EigenMixtureScore(g64, sde, dev)
    x = g64.marginal(EPS).sample(16 if q else 64, generator=C.seeded(6),
                                 dtype=torch.float64).to(dev)
    out.append(Case("gauss64", "64-D Gaussian, exact score, float64", sde, fast64, x,
                    lambda y, t, f=fast64: f.log_prob(y, torch.full((y.shape[0],), t,
                                                                    dtype=y.dtype,
                                                                    device=y.device))))
    torch.manual_seed(0)
    net = sd.MLP(2).to(device=dev, dtype=torch.float64).eval()
    with torch.no_grad():  # a tenth of the default output scale: a smoother random field
        net.out[-1].weight.mul_(0.1)
        net.out[-1].bias.mul_(0.1)
    # a random network as a *score* (an epsilon network with random weights gives a score
    # of size 1/std near t = eps, a stiff field that needs ~10x the steps of a real model)
    model = sd.ScoreModel(net, sde, prediction="score")
    # float64: in float32 the error estimate of rtol = 1e-5 sits at round-off level and both
    # solvers take ~10x the steps
    x = gmm.sample(64 if q else 256, generator=C.seeded(7), dtype=torch.float64).to(dev)
    out.append(Case("mlp2d", "scoresde.MLP(2), random weights (output layer x 0.1), as a "
                    "score network, float64 "
                    "(no closed form: the two solves are compared)", sde, model, x, None))
    return out


def ours(case: Case, per_sample: bool = True) -> Tuple[Tensor, Tensor, Tensor, int, dict]:
    """scoresde.log_likelihood, exact trace, dopri5: per-sample error control (the target's
    row) or one step size for the batch (``per_sample=False``)."""
    ll = sd.log_likelihood(case.score, case.sde, case.x, method="dopri5", rtol=TOL, atol=TOL,
                           eps=EPS, per_sample=per_sample)
    return ll.logp, ll.delta_logp, ll.z, ll.nfe, ll.stats


def batch_wide(case: Case) -> Tuple[Tensor, Tensor, Tensor, int, dict]:
    return ours(case, per_sample=False)


def scipy_round_trip(case: Case) -> Tuple[Tensor, Tensor, Tensor, int, dict]:
    """score_sde's likelihood loop: solve_ivp(RK45) on numpy, torch inside each evaluation."""
    x, sde = case.x, case.sde
    shape, B = tuple(x.shape), x.shape[0]
    n = x.numel()
    counted = solvers.CountingFunction(case.score)
    field = probability_flow(sde, counted)

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y[:n]).reshape(shape).to(device=x.device, dtype=x.dtype)
        v, div = exact_divergence(field, torch.tensor(t, dtype=x.dtype, device=x.device), xt)
        return np.concatenate([v.reshape(-1).double().cpu().numpy(),
                               div.double().cpu().numpy()])

    init = np.concatenate([x.reshape(-1).double().cpu().numpy(), np.zeros(B)])
    with torch.no_grad():
        sol = solve_ivp(ode_func, (EPS, sde.T), init, method="RK45", rtol=TOL, atol=TOL)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    end = torch.from_numpy(sol.y[:, -1])
    z = end[:n].reshape(shape).to(x)
    delta = end[n:].to(device=x.device, dtype=torch.float64)
    logp = sde.prior_logp(z).to(torch.float64) + delta
    return logp, delta, z, counted.calls, {}


def run(cfg: C.Config) -> C.Section:
    repeats = 3 if cfg.quick else 7
    md = ["## 3. Likelihood cost", "",
          f"`scoresde.log_likelihood(score, sde, x, method='dopri5', rtol={TOL:g}, "
          f"atol={TOL:g}, eps={EPS:g}, per_sample=True)` (exact trace; each sample with its "
          "own step size and accept/reject decision in its own error norm, and leaving the "
          "batch when it reaches T: `solvers.odeint_per_sample`) against score_sde's recipe: "
          f"`scipy.integrate.solve_ivp(method='RK45', rtol={TOL:g}, atol={TOL:g})` on the "
          "flattened augmented state with a numpy -> torch -> numpy round trip per "
          "evaluation. Both evaluate the same field and the same exact divergence "
          "(`scoresde.likelihood.divergence.exact_divergence`), so the difference is the "
          "solver loop and the host round trips. Wall time: one warm-up, then the median of "
          f"{repeats} runs. Error: mean over the batch of |log p - closed form| / D, using "
          "the exact marginal p_T(z) in place of the N(0, I) prior so that only the ODE and "
          "trace error remain (the closed form is the mixture's log-density at eps). The "
          "score_sde recipe (`likelihood.py` of yang-song/score_sde) is written out in "
          "`benchmarks/likelihood_cost.py:scipy_round_trip`, with the exact trace in place of "
          "its default Hutchinson estimate so that the two compute the same quantity.", "",
          f"Target: scoresde's wall time ≤ {TARGET} × scipy's. Both solvers are fifth-order "
          "Dormand–Prince pairs with step-size control, so they take about the same number of "
          "evaluations; the ratio can only fall well below 1 where the per-evaluation "
          "overhead of the scipy loop (the round trip, and on a GPU a host sync per "
          "evaluation) is large against the evaluation itself, or where per-sample control "
          "lets most samples finish with fewer steps than the batch's hardest (then the "
          "later evaluations run on fewer rows: 'rows' is the sum over samples of the "
          "evaluations each took part in, against NFE x batch for a batch-wide solve). The "
          "'eval ms' column shows how much of each NFE is the evaluation; the 'batch-wide' "
          "columns are `per_sample=False` (one step size for the batch, torchdiffeq's "
          "dopri5), for reference.", ""]
    table, targets, plot = [], [], []
    for case in make_cases(cfg):
        C.log(f"[likelihood] {case.key}")
        res, times = {}, {}
        fns = (("ours", ours), ("batch", batch_wide), ("scipy", scipy_round_trip))
        for name, fn in fns:
            res[name] = fn(case)                     # also the warm-up
        walls = {name: [] for name, _ in fns}
        for _ in range(repeats):                     # interleaved: a load burst hits all
            for name, fn in fns:
                walls[name].append(C.wall(lambda: fn(case), cfg.device))
        times = {name: statistics.median(w) for name, w in walls.items()}
        D = case.x[0].numel()
        field = probability_flow(case.sde, case.score)
        t_mid = torch.tensor(0.5, dtype=case.x.dtype, device=case.x.device)
        eval_s = C.median_time(lambda: exact_divergence(field, t_mid, case.x), cfg.device,
                               repeats=11, warmup=2)
        if case.truth is not None:
            want = case.truth(case.x, EPS)
            errs = {}
            for name, (logp, delta, z, _, _) in res.items():
                exact_prior = case.truth(z.to(torch.float64), case.sde.T)
                errs[name] = float(((delta.to(torch.float64) + exact_prior - want).abs()
                                    / D).mean())
            err_ours, err_scipy = C.fmt_e(errs["ours"]), C.fmt_e(errs["scipy"])
            err_batch = C.fmt_e(errs["batch"])
        else:
            def diff(name: str) -> float:
                return float(((res[name][0].to(torch.float64) - res["scipy"][0]).abs()
                              / D).mean())
            err_ours = err_scipy = f"agree to {diff('ours'):.1e}"
            err_batch = f"{diff('batch'):.1e} from scipy"
        ratio = times["ours"] / times["scipy"]
        ok = ratio <= TARGET
        ps = res["ours"][4]["nfe_per_sample"].double()
        targets.append((f"likelihood wall time ≤ {TARGET} × scipy, {case.key}", ok,
                        f"{ratio:.2f}x (NFE per sample mean {ps.mean():.1f}, max "
                        f"{int(ps.max())}; scipy {res['scipy'][3]})"))
        per = {k: times[k] / res[k][3] * 1e3 for k in times}
        table.append([case.title, case.x.shape[0], D, f"{eval_s * 1e3:.2f}",
                      f"{times['ours']:.3f}", res["ours"][3],
                      f"{ps.mean():.1f} / {int(ps.max())}",
                      f"{res['ours'][4]['rows_evaluated']} vs {res['batch'][3] * case.x.shape[0]}",
                      f"{per['ours']:.2f}", err_ours,
                      f"{times['batch']:.3f} ({res['batch'][3]})", err_batch,
                      f"{times['scipy']:.3f}", res["scipy"][3], f"{per['scipy']:.2f}", err_scipy,
                      C.fmt_f(ratio, 2), C.verdict(ok)])
        plot.append((case.key, times["ours"], times["scipy"]))
    md += ["Columns: one evaluation (field + exact divergence, no solver) in ms; for each "
           "solver the wall time (s), NFE (calls of the score), ms per NFE (the excess over "
           "one evaluation is the solver loop and, for scipy, the round trip) and the "
           "error; for scoresde also the NFE per sample (mean / max) and the rows evaluated "
           "(per-sample solve vs the batch-wide solve's NFE x batch).", "",
           C.md_table(["problem", "batch", "D", "eval ms", "scoresde s", "NFE",
                       "NFE per sample mean / max", "rows", "ms/NFE", "error / D",
                       "batch-wide s (NFE)", "batch-wide error / D",
                       "score_sde recipe (scipy) s", "NFE", "ms/NFE", "error / D", "ratio",
                       f"target ≤ {TARGET}"], table, "lrrrrrrrrrrrrrrrrc"), ""]
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    idx = np.arange(len(plot))
    ax.bar(idx - 0.2, [p[1] for p in plot], 0.4,
           label="scoresde.log_likelihood (dopri5, per_sample=True)")
    ax.bar(idx + 0.2, [p[2] for p in plot], 0.4, label="score_sde recipe: solve_ivp RK45 + host round trip")
    ax.set_xticks(idx, [p[0] for p in plot])
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"exact log-likelihood, rtol = atol = {TOL:g} ({C.device_name(cfg.device)})")
    ax.legend(fontsize=8)
    img = C.save_figure(fig, cfg, "bench_likelihood")
    md += [f"![likelihood]({img})", ""]
    return {"markdown": "\n".join(md), "targets": targets}

"""Table 3: the cost of log-likelihoods, scoresde.log_likelihood against score_sde's recipe.

score_sde's recipe (likelihood.py of yang-song/score_sde_pytorch) is
scipy.integrate.solve_ivp(RK45) on the flattened augmented state [x, int div v] with a host
round trip (numpy -> torch -> numpy) per evaluation, and, at each evaluation, the drift from
one network call and a Hutchinson estimate of its divergence from another (forward and
backward): two forward passes and one backward per evaluation. Two comparisons, at the same
rtol/atol, from the same x:

* Hutchinson (the recipe as published, with its Rademacher probe): scoresde's
  trace='hutchinson' with the same probe, one forward and one backward per evaluation;
* exact trace (what scoresde computes by default): scipy's loop around scoresde's own
  one-pass exact divergence, so that only the solver loops and the round trip differ.
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
from scoresde.likelihood.divergence import draw_probes, exact_divergence, hutchinson_divergence

from . import _common as C
from .accuracy import EigenMixtureScore, gauss64_params

TOL = 1e-5
EPS = 1e-5
TARGET = 0.5
REF_TOL = 1e-8      # the reference solve of a fixed probe's estimate (dopri5)
ERROR_SLACK = 2.0   # 'matching error': scoresde's error at most this times the baseline's
PROBE_SEED = 11
EVALS_PER_BLOCK = 25  # evaluations per timed block of the floor


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


def probe(case: Case) -> Tensor:
    """The Rademacher probe [batch, *dims] that ``log_likelihood(trace='hutchinson',
    generator=C.seeded(PROBE_SEED))`` draws, for the recipe to use the same one."""
    return draw_probes("rademacher", 1, case.x, C.seeded(PROBE_SEED, case.x.device))[0]


def ours_hutchinson(case: Case, method: str = "dopri5", tol: float = TOL
                    ) -> Tuple[Tensor, Tensor, Tensor, int, dict]:
    """scoresde.log_likelihood with score_sde's estimator (one Rademacher probe, fixed along
    the trajectory): one forward and one backward pass per evaluation."""
    ll = sd.log_likelihood(case.score, case.sde, case.x, method=method, rtol=tol, atol=tol,
                           eps=EPS, trace="hutchinson", probe="rademacher",
                           generator=C.seeded(PROBE_SEED, case.x.device))
    return ll.logp, ll.delta_logp, ll.z, ll.nfe, ll.stats


def score_sde_recipe(case: Case) -> Tuple[Tensor, Tensor, Tensor, int, dict]:
    """score_sde's likelihood_fn as published: at each evaluation of solve_ivp(RK45), the
    drift from one call (drift_fn) and the Hutchinson divergence from another (div_fn:
    forward with x requiring grad, torch.autograd.grad of sum(drift * eps)), with a numpy
    round trip; the network calls are counted (two per evaluation)."""
    x, sde = case.x, case.sde
    shape, B = tuple(x.shape), x.shape[0]
    eps_probe = probe(case)
    counted = solvers.CountingFunction(case.score)
    drift_fn = probability_flow(sde, counted)
    sum_dims = tuple(range(1, x.dim()))

    def div_fn(xt: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            xt.requires_grad_(True)
            fn_eps = torch.sum(drift_fn(t, xt) * eps_probe)
            (grad_fn_eps,) = torch.autograd.grad(fn_eps, xt)
        xt.requires_grad_(False)
        return torch.sum(grad_fn_eps * eps_probe, dim=sum_dims)

    def ode_func(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y[:-B].reshape(shape)).to(device=x.device, dtype=x.dtype)
        tt = torch.tensor(t, dtype=x.dtype, device=x.device)
        drift = drift_fn(tt, xt).detach().cpu().numpy().reshape(-1)
        logp_grad = div_fn(xt, tt).detach().cpu().numpy().reshape(-1)
        return np.concatenate([drift, logp_grad], axis=0)

    init = np.concatenate([x.detach().cpu().numpy().reshape(-1), np.zeros(B)])
    with torch.no_grad():
        sol = solve_ivp(ode_func, (EPS, sde.T), init, method="RK45", rtol=TOL, atol=TOL)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    end = torch.from_numpy(sol.y[:, -1])
    z = end[:-B].reshape(shape).to(x)
    delta = end[-B:].to(device=x.device, dtype=torch.float64)
    logp = sde.prior_logp(z).to(torch.float64) + delta
    return logp, delta, z, counted.calls, {"evaluations": sol.nfev}


def functorch_exact_divergence(field, t: Tensor, x: Tensor) -> Tuple[Tensor, Tensor]:
    """The exact divergence as scoresde computed it before (torch.func.vjp of the field,
    torch.func.vmap of its vjp over the D basis vectors, one chunk): the same numbers as
    ``exact_divergence``, for the per-evaluation cost column only."""
    batch, dim = x.shape[0], x[0].numel()
    with torch.no_grad():
        v, vjp_fn = torch.func.vjp(lambda y: field(t, y), x)
        cot = torch.eye(dim, dtype=x.dtype, device=x.device)[:, None, :].expand(
            dim, batch, dim).reshape(dim, *x.shape)
        (rows,) = torch.func.vmap(vjp_fn)(cot)
    return v, rows.reshape(dim, batch, dim).diagonal(dim1=0, dim2=2).sum(-1)


def _evaluation_inputs(case: Case) -> Tuple:
    """(field, t, x, probes) of one evaluation: the probability-flow drift, t = 0.5, the
    case's x and the recipe's probe."""
    field = probability_flow(case.sde, case.score)
    t = torch.tensor(0.5, dtype=case.x.dtype, device=case.x.device)
    return field, t, case.x, probe(case)[None]


def one_evaluation(case: Case) -> Tuple[Tensor, Tensor]:
    """One evaluation of scoresde's augmented field without a solver around it: the drift
    and the Hutchinson estimate with the recipe's probe, one forward and one backward pass."""
    return hutchinson_divergence(*_evaluation_inputs(case))


def evaluation_block(case: Case) -> None:
    """EVALS_PER_BLOCK evaluations, the inputs built once outside the loop so that the floor
    times the passes alone."""
    inputs = _evaluation_inputs(case)
    for _ in range(EVALS_PER_BLOCK):
        hutchinson_divergence(*inputs)


def floor_ratio(baseline_evaluations: int, evaluation_s: float, baseline_s: float) -> float:
    """The wall-time ratio a solver loop that cost nothing would reach at the baseline's
    number of evaluations: ``evaluations x (one evaluation's forward + backward) / the
    baseline's wall time``. Above the target, no cheaper loop meets it: only fewer
    evaluations than the baseline at matching error would."""
    if baseline_evaluations <= 0 or evaluation_s < 0 or baseline_s <= 0:
        raise ValueError(f"floor_ratio needs evaluations > 0, evaluation_s >= 0 and "
                         f"baseline_s > 0, got {baseline_evaluations}, {evaluation_s}, "
                         f"{baseline_s}")
    return baseline_evaluations * evaluation_s / baseline_s


def _timed(case: Case, fns, repeats: int, device) -> Tuple[dict, dict]:
    """Each solver's result (its first run, also the warm-up) and median wall time over
    ``repeats`` runs, interleaved so that a load burst hits all of them."""
    res = {name: fn(case) for name, fn in fns}
    walls: dict = {name: [] for name, _ in fns}
    for _ in range(repeats):
        for name, fn in fns:
            walls[name].append(C.wall(lambda: fn(case), device))
    return res, {name: statistics.median(w) for name, w in walls.items()}


def _verdict(ratio: float, error: float, baseline_error: float) -> bool:
    """The target: wall time at most TARGET x the baseline's at matching error (at most
    ERROR_SLACK x the baseline's error; a faster solve that is less accurate does not
    count)."""
    return ratio <= TARGET and error <= ERROR_SLACK * baseline_error


def run(cfg: C.Config) -> C.Section:
    repeats = 3 if cfg.quick else 7
    md = ["## 3. Likelihood cost", "",
          "Two comparisons with score_sde's likelihood (`likelihood.py` of "
          "yang-song/score_sde_pytorch): `scipy.integrate.solve_ivp(method='RK45', "
          f"rtol={TOL:g}, atol={TOL:g})` on the flattened augmented state [x, int div v], "
          "with a numpy -> torch -> numpy round trip per evaluation. Both sides at the same "
          f"rtol = atol = {TOL:g}, eps = {EPS:g}, from the same x; wall time: one warm-up, "
          f"then the median of {repeats} interleaved runs.", "",
          "* **score_sde's recipe as published** (the target's baseline): at each "
          "evaluation the drift comes from one network call (`drift_fn`) and a Hutchinson "
          "estimate of its divergence from another (`div_fn`: a forward pass with x "
          "requiring grad and a backward pass), so 2 forward + 1 backward passes per "
          "evaluation; one Rademacher probe per sample, fixed along the trajectory. Against "
          "`scoresde.log_likelihood(trace='hutchinson')` with the same probe: 1 forward + 1 "
          "backward pass per evaluation, no host round trip, torchdiffeq's dopri5. The "
          "error of both is against a reference solve of the same probe's estimate "
          f"(`log_likelihood(trace='hutchinson', rtol=atol={REF_TOL:g})`), "
          "so it is the solver's error; 'probe noise' is how far that estimate is from the "
          "exact log-density (the estimator's own error, the same for both).",
          "* **Exact trace** (what scoresde computes by default): scipy's loop around "
          "scoresde's own one-pass exact divergence (`exact_divergence`, the recipe with "
          "the exact trace in place of Hutchinson and one call instead of two), against "
          "`log_likelihood(method='dopri5', per_sample=True)` (each sample with its own "
          "step size and accept/reject decision in its own error norm, leaving the batch "
          "when it reaches T: `solvers.odeint_per_sample`) and, for reference, "
          "`per_sample=False` (one step size for the batch, torchdiffeq's dopri5). Both "
          "sides evaluate the same field and divergence, so only the solver loops and the "
          "round trip differ. Error: mean over the batch of |log p - closed form| / D, "
          "with the exact marginal p_T(z) in place of the N(0, I) prior so that only the "
          "ODE and trace error remain.", "",
          f"Target: scoresde's wall time ≤ {TARGET} × the baseline's at matching error "
          f"(scoresde's error at most {ERROR_SLACK:g} × the baseline's, where it is "
          "measured: a faster but less accurate solve does not pass). At equal tolerance "
          "both sides take about the same number of evaluations (both are fifth-order "
          "Dormand–Prince pairs with step-size control), so the ratio is the ratio of the "
          "cost per evaluation: for the recipe, the saved forward pass of a 2F + B "
          "evaluation (at most 1/3 of it when a backward costs two forwards) and the "
          "round trip; for the exact trace, only the loop and the round trip, which on a "
          "CPU are small against an evaluation. The 'eval ms' columns show one "
          "evaluation (field + divergence, no solver): scoresde's exact divergence "
          "(plain autograd forward, batched backward) and the same through "
          "`torch.func.vjp` + `vmap`, as scoresde computed it before "
          "(`benchmarks/likelihood_cost.py:functorch_exact_divergence`).", ""]
    hutch_rows, exact_rows, targets, plot = [], [], [], []
    for case in make_cases(cfg):
        C.log(f"[likelihood] {case.key}")
        D, B = case.x[0].numel(), case.x.shape[0]
        # -- score_sde's recipe (Hutchinson) --------------------------------------------
        # one evaluation alone is timed in the same interleaved rounds, as a block of
        # EVALS_PER_BLOCK, so that the floor and the ratio see the same machine load
        res, times = _timed(case, (("ours", ours_hutchinson), ("recipe", score_sde_recipe),
                                   ("evals", evaluation_block)), repeats, cfg.device)
        ref = ours_hutchinson(case, tol=REF_TOL)
        err = {k: float(((r[0].to(torch.float64) - ref[0]).abs() / D).mean())
               for k, r in res.items() if k != "evals"}
        if case.truth is not None:
            exact_prior = case.truth(ref[2].to(torch.float64), case.sde.T)
            noise = C.fmt_e(float(((ref[1] + exact_prior - case.truth(case.x, EPS)).abs()
                                   / D).mean()))
        else:
            noise = "–"
        ratio_h = times["ours"] / times["recipe"]
        hutch_s = (times["ours"], times["recipe"])
        ok_h = _verdict(ratio_h, err["ours"], err["recipe"])
        evals = res["recipe"][4]["evaluations"]
        eval_fb = times["evals"] / EVALS_PER_BLOCK
        floor = floor_ratio(evals, eval_fb, times["recipe"])
        targets.append((f"likelihood wall time ≤ {TARGET} × score_sde's recipe "
                        f"(Hutchinson, as published), {case.key}", ok_h,
                        f"{ratio_h:.2f}x (evaluations {res['ours'][3]} vs {evals}; "
                        f"solver error / D {err['ours']:.1e} vs {err['recipe']:.1e}; "
                        f"floor at the recipe's evaluations {floor:.2f})"))
        hutch_rows.append([case.title, B, D, f"{eval_fb * 1e3:.2f}", f"{times['ours']:.3f}",
                           res["ours"][3],
                           f"{times['ours'] / res['ours'][3] * 1e3:.2f}", C.fmt_e(err["ours"]),
                           f"{times['recipe']:.3f}", evals, res["recipe"][3],
                           f"{times['recipe'] / evals * 1e3:.2f}", C.fmt_e(err["recipe"]),
                           noise, C.fmt_f(ratio_h, 2), C.fmt_f(floor, 2), C.verdict(ok_h)])
        # -- exact trace -------------------------------------------------------------------
        res, times = _timed(case, (("ours", ours), ("batch", batch_wide),
                                   ("scipy", scipy_round_trip)), repeats, cfg.device)
        field = probability_flow(case.sde, case.score)
        t_mid = torch.tensor(0.5, dtype=case.x.dtype, device=case.x.device)
        eval_s = C.median_time(lambda: exact_divergence(field, t_mid, case.x), cfg.device,
                               repeats=11, warmup=2)
        eval_func = C.median_time(lambda: functorch_exact_divergence(field, t_mid, case.x),
                                  cfg.device, repeats=11, warmup=2)
        if case.truth is not None:
            want = case.truth(case.x, EPS)
            errs = {}
            for name, (logp, delta, z, _, _) in res.items():
                exact_prior = case.truth(z.to(torch.float64), case.sde.T)
                errs[name] = float(((delta.to(torch.float64) + exact_prior - want).abs()
                                    / D).mean())
            err_ours, err_scipy = C.fmt_e(errs["ours"]), C.fmt_e(errs["scipy"])
            err_batch = C.fmt_e(errs["batch"])
            ok = _verdict(times["ours"] / times["scipy"], errs["ours"], errs["scipy"])
        else:
            def diff(name: str) -> float:
                return float(((res[name][0].to(torch.float64) - res["scipy"][0]).abs()
                              / D).mean())
            err_ours = err_scipy = f"agree to {diff('ours'):.1e}"
            err_batch = f"{diff('batch'):.1e} from scipy"
            ok = times["ours"] / times["scipy"] <= TARGET
        ratio = times["ours"] / times["scipy"]
        ps = res["ours"][4]["nfe_per_sample"].double()
        targets.append((f"likelihood wall time ≤ {TARGET} × scipy with the same exact "
                        f"divergence, {case.key}", ok,
                        f"{ratio:.2f}x (NFE per sample mean {ps.mean():.1f}, max "
                        f"{int(ps.max())}; scipy {res['scipy'][3]})"))
        per = {k: times[k] / res[k][3] * 1e3 for k in times}
        exact_rows.append([case.title, B, D, f"{eval_s * 1e3:.2f}", f"{eval_func * 1e3:.2f}",
                           f"{times['ours']:.3f}", res["ours"][3],
                           f"{ps.mean():.1f} / {int(ps.max())}",
                           f"{res['ours'][4]['rows_evaluated']} vs {res['batch'][3] * B}",
                           f"{per['ours']:.2f}", err_ours,
                           f"{times['batch']:.3f} ({res['batch'][3]})", err_batch,
                           f"{times['scipy']:.3f}", res["scipy"][3], f"{per['scipy']:.2f}",
                           err_scipy, C.fmt_f(ratio, 2), C.verdict(ok)])
        plot.append((case.key, times["ours"], times["scipy"], *hutch_s))
    md += ["### score_sde's recipe as published (Hutchinson)", "",
           "Columns: 'F+B ms' is one evaluation of scoresde's augmented field with no solver "
           "around it (the drift and the probe's estimate: one forward and one backward "
           "pass); for each side the wall time (s), the evaluations of the augmented field "
           "(for the recipe also its network calls, two per evaluation), ms per evaluation "
           "and the solver error / D against the reference solve of the same probe. "
           "'floor' is the ratio a solver loop that cost nothing would reach at the "
           "recipe's number of evaluations (evaluations × F+B ms / the recipe's wall time): "
           f"where it is above {TARGET}, no cheaper loop meets the target, only fewer "
           "evaluations than the recipe at matching error.", "",
           C.md_table(["problem", "batch", "D", "F+B ms", "scoresde s", "evaluations",
                       "ms / eval", "solver error / D", "score_sde recipe s", "evaluations",
                       "network calls", "ms / eval", "solver error / D", "probe noise / D",
                       "ratio", "floor", f"target ≤ {TARGET}"], hutch_rows,
                      "lrrrrrrrrrrrrrrrc"), "",
           "### Exact trace", "",
           "Columns: one evaluation (field + exact divergence, no solver) in ms, scoresde's "
           "and through torch.func; for each solver the wall time (s), NFE (calls of the "
           "score), ms per NFE (the excess over one evaluation is the solver loop and, for "
           "scipy, the round trip) and the error; for scoresde also the NFE per sample "
           "(mean / max) and the rows evaluated (per-sample solve vs the batch-wide solve's "
           "NFE x batch).", "",
           C.md_table(["problem", "batch", "D", "eval ms", "eval ms, torch.func (before)",
                       "scoresde s", "NFE", "NFE per sample mean / max", "rows", "ms/NFE",
                       "error / D", "batch-wide s (NFE)", "batch-wide error / D",
                       "scipy s", "NFE", "ms/NFE", "error / D", "ratio",
                       f"target ≤ {TARGET}"], exact_rows, "lrrrrrrrrrrrrrrrrrc"), ""]
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    idx = np.arange(len(plot))
    w = 0.2
    ax.bar(idx - 1.5 * w, [p[3] for p in plot], w,
           label="scoresde, trace='hutchinson' (1 forward + 1 backward)")
    ax.bar(idx - 0.5 * w, [p[4] for p in plot], w,
           label="score_sde's recipe (2 forward + 1 backward, round trip)")
    ax.bar(idx + 0.5 * w, [p[1] for p in plot], w,
           label="scoresde, exact trace, per_sample=True")
    ax.bar(idx + 1.5 * w, [p[2] for p in plot], w,
           label="scipy RK45 + round trip, same exact divergence")
    ax.set_xticks(idx, [p[0] for p in plot])
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"log-likelihood, rtol = atol = {TOL:g} ({C.device_name(cfg.device)})")
    ax.legend(fontsize=7)
    img = C.save_figure(fig, cfg, "bench_likelihood")
    md += [f"![likelihood]({img})", ""]
    return {"markdown": "\n".join(md), "targets": targets}

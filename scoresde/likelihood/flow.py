"""Log-likelihoods, latents and decoding through the probability-flow ODE.

The probability-flow ODE dx/dt = v(x, t) = f(t) x - g(t)^2 s(x, t) / 2 (Song et al. 2021,
eq. 13) transports p_eps to p_T. Along a trajectory the log-density obeys the
instantaneous change of variables d log p_t(x(t))/dt = -div v(x(t), t) (Chen et al. 2018,
"Neural ODEs", Thm. 1), so integrating from eps to T

    log p_eps(x) = log p_T(x(T)) + int_eps^T div v(x(t), t) dt,    (Song et al. 2021, App. D.2)

with the prior N(0, prior_std^2 I) standing in for p_T. We integrate x and the running
integral of div v as one augmented state [batch, D + K] (K = 1 for the exact trace, K =
n_probes for Hutchinson, one column per probe along the same trajectory).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

import solvers

from .._validation import (check_choice, check_finite, check_instance, check_int,
                           check_matches_network, check_real, check_score_and_sde, check_state,
                           seeded_noise)
from .._stats import standard_error
from ..dynamics import probability_flow
from ..score import ScoreFn
from ..sdes import SDE
from .divergence import (PROBES, default_chunk_size, draw_probes, exact_divergence,
                         hutchinson_divergence)

TRACES = ("exact", "hutchinson")


@dataclass
class LikelihoodResult:
    """What :func:`log_likelihood` returns (all tensors detached).

    Attributes:
        logp: [batch] log p_eps(x) in nats, prior_logp + delta_logp (for Hutchinson, the
            mean over probes).
        prior_logp: [batch] log-density of the latent z under the prior.
        delta_logp: [batch] int_eps^T div v dt (mean over probes for Hutchinson).
        z: the latent x(T), shaped like x.
        nfe: score evaluations actually made (one per vector-field evaluation).
        stats: solver statistics (steps, accepted, rejected, nfe) plus "trace",
            "n_probes" and, for the exact trace, "chunk_size".
        stderr: [batch] for Hutchinson: the standard error of logp across the n_probes
            probes, std(ddof=1) / sqrt(n_probes) (NaN when n_probes == 1); None for the
            exact trace.
        logp_per_probe: [batch, n_probes] the per-probe estimates (Hutchinson), else None.
    """
    logp: Tensor
    prior_logp: Tensor
    delta_logp: Tensor
    z: Tensor
    nfe: int
    stats: Dict[str, Any] = field(default_factory=dict)
    stderr: Optional[Tensor] = None
    logp_per_probe: Optional[Tensor] = None


def _check_common(score: ScoreFn, sde: SDE, x: Tensor, name: str, *, rtol: float,
                  atol: float, eps: float, max_steps: int) -> Tuple[Tensor, float]:
    check_score_and_sde(score, sde)
    check_state(name, x, min_dim=2)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64 (the adaptive solve's tolerances "
                        f"need them), got dtype {x.dtype}")
    if x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"{name} must have shape [batch, *dims] with batch >= 1 and at least "
                         f"one entry per sample, got shape {tuple(x.shape)}")
    check_finite(name, x)
    check_matches_network(name, x, score)
    check_real("rtol", rtol, positive=True)
    check_real("atol", atol, positive=True)
    eps = check_real("eps", eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in the open interval (0, T) = (0, {sde.T:g}), got {eps}; "
                         f"the score is singular at t = 0 (typical: 1e-5 for likelihoods)")
    check_int("max_steps", max_steps, minimum=1)
    return x, eps


def log_likelihood(score: ScoreFn, sde: SDE, x: Tensor, *, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
                   trace: str = "exact", probe: str = "rademacher", n_probes: int = 1,
                   generator: Optional[torch.Generator] = None, max_steps: int = 10_000,
                   progress: bool = False, chunk_size: Optional[int] = None,
                   batch_size: Optional[int] = None, seed: Optional[int] = None,
                   sample_offset: int = 0, per_sample: bool = False) -> LikelihoodResult:
    """log p_eps(x) by the probability-flow ODE and the instantaneous change of variables
    (Song et al. 2021, App. D.2; Chen et al. 2018, Thm. 1).

    Integrates [x, int div v] from eps to T with an adaptive solver and returns
    log p_eps(x) = prior_logp(x(T)) + int_eps^T div v dt.

    Args:
        score: s(x, t) -> tensor shaped like x (a ScoreModel, an oracle's ``score``, ...).
        sde: the forward SDE.
        x: data [batch, *dims], finite, float32 or float64.
        method: an adaptive method of ``solvers.odeint_adaptive`` (torchdiffeq: "dopri5",
            "bosh3", "adaptive_heun", "dopri8"; scipy: "RK45", "RK23", "DOP853", "LSODA",
            "Radau", "BDF").
        rtol, atol: tolerances of the solve, shared by x and the divergence integral.
        eps: start time in (0, T): the likelihood is that of x under p_eps.
        trace: "exact" (one forward pass, then batched backward passes over the basis
            vectors: D vector-Jacobian products per evaluation) or "hutchinson" (n_probes
            per evaluation, unbiased).
        probe: Hutchinson probe distribution, "rademacher" or "gaussian".
        n_probes: Hutchinson probes per sample, each integrated as its own component along
            the same trajectory; >= 2 gives a standard error.
        generator: torch.Generator for the probes (drawn once per solve, shape
            [n_probes, *x.shape], fixed along the trajectory); unused by the exact trace.
        max_steps: step budget of the adaptive solve (solvers.MaxStepsError beyond it).
        progress: show a progress bar over time.
        chunk_size: basis vectors per vmapped backward pass of the exact trace (bounds
            memory; default keeps chunk x batch x D <= 2^20).
        batch_size: samples per ODE solve (default: all at once); the solves run one after
            another and their results are concatenated. Adaptive steps are chosen per
            solve (the error norm is over the samples solved together), so results agree
            with one big solve within the tolerance, not bitwise. Hutchinson probes are
            drawn from ``generator`` per solve, in order. ``nfe`` and the step counts in
            ``stats`` are totals, ``stats["solves"]`` their number and
            ``stats["per_solve"]`` each solve's statistics.
        seed: per-sample Hutchinson probes instead of ``generator``: sample i's probes are
            a function of (seed, sample_offset + i) alone (``solvers.SeededNoise``,
            stream ``PROBES``), whatever the batch, ``batch_size`` or process.
        sample_offset: the global index of x's first sample (with ``seed``).
        per_sample: error control per sample (``solvers.odeint_per_sample``, Dormand--Prince
            5(4); needs ``method="dopri5"``; either trace, each sample keeping its own
            Hutchinson probes as it leaves the batch): each sample has its own
            step size and accept/reject decision, in its own error norm, so one hard sample
            no longer sets the steps of the batch, and a sample leaves the batch when it
            reaches T (later evaluations are made on the samples still in flight). ``nfe``
            counts the calls of the score; ``stats["nfe_per_sample"]`` (``[batch]``, CPU
            int64) the evaluations each sample took part in, and
            ``stats["rows_evaluated"]`` their sum.

    Memory: no autograd graph is kept across solver steps. Each evaluation of the
    divergence builds the graph of one network call (torch.autograd) and frees it before
    the next, so peak memory grows with the batch but not with the number of steps.

    Returns:
        LikelihoodResult (detached tensors; gradients never flow back to x or the score).
    """
    x, eps = _check_common(score, sde, x, "x", rtol=rtol, atol=atol, eps=eps,
                           max_steps=max_steps)
    check_choice("trace", trace, TRACES)
    check_choice("probe", probe, PROBES)
    n_probes = check_int("n_probes", n_probes, minimum=1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    seeded = seeded_noise(seed, sample_offset, generator, "probes", solvers.noise.PROBES)
    check_instance("per_sample", per_sample, bool, "True or False")
    if per_sample and method != "dopri5":
        raise ValueError(f"per_sample=True runs the per-sample Dormand-Prince 5(4) solver, so "
                         f"method must be 'dopri5', got method={method!r}")

    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if batch_size < x.shape[0]:
            return _concat([log_likelihood(
                score, sde, part, method=method, rtol=rtol, atol=atol, eps=eps, trace=trace,
                probe=probe, n_probes=n_probes, generator=generator, max_steps=max_steps,
                progress=progress, chunk_size=chunk_size, seed=seed,
                sample_offset=sample_offset + start if seed is not None else 0,
                per_sample=per_sample)
                for start, part in zip(range(0, x.shape[0], batch_size), x.split(batch_size))])

    x = x.detach()
    batch, dim = x.shape[0], x[0].numel()
    counted = solvers.CountingFunction(score)
    v_field = probability_flow(sde, counted)
    stats_extra: Dict[str, Any] = {"trace": trace}
    if trace == "exact":
        n_cols = 1
        stats_extra["chunk_size"] = (default_chunk_size(batch, dim) if chunk_size is None
                                     else min(chunk_size, dim))

        def divergence(t: Tensor, xt: Tensor, _: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
            v, div = exact_divergence(v_field, t, xt, chunk_size)
            return v, div[:, None]
    else:
        n_cols = n_probes
        probes = draw_probes(probe, n_probes, x, generator, seeded)
        stats_extra.update(probe=probe, n_probes=n_probes)

        def divergence(t: Tensor, xt: Tensor, rows_probes: Optional[Tensor]
                       ) -> Tuple[Tensor, Tensor]:
            # per_sample: the probes of the samples in flight, [rows, K, *dims]
            own = probes if rows_probes is None else rows_probes.movedim(1, 0)
            return hutchinson_divergence(v_field, t, xt, own)

    def augmented(t: Tensor, state: Tensor, rows_probes: Optional[Tensor] = None) -> Tensor:
        # rows: the whole batch, or (per_sample) the samples still in flight
        rows = state.shape[0]
        v, div = divergence(t, state[:, :dim].reshape(rows, *x.shape[1:]), rows_probes)
        return torch.cat([v.reshape(rows, dim), div.to(state.dtype)], dim=1)

    state0 = torch.cat([x.reshape(batch, dim), x.new_zeros(batch, n_cols)], dim=1)
    name = f"log_likelihood(method={method!r}, trace={trace!r}" + (
        ", per_sample=True)" if per_sample else ")")
    with torch.no_grad(), solvers.naming_solver(name):
        if per_sample:
            sol = solvers.odeint_per_sample(
                augmented, state0, eps, sde.T, rtol=rtol, atol=atol, max_steps=max_steps,
                progress=progress,
                row_data=probes.movedim(0, 1) if trace == "hutchinson" else None)
        else:
            sol = solvers.odeint_adaptive(augmented, state0, eps, sde.T, method=method,
                                          rtol=rtol, atol=atol, max_steps=max_steps,
                                          progress=progress)
        end = sol.x.detach()
        z = end[:, :dim].reshape(x.shape)
        delta = end[:, dim:]  # [batch, K]
        prior = sde.prior_logp(z)
        per_probe = prior[:, None] + delta
        logp = per_probe.mean(1)
        stderr = None
        if trace == "hutchinson":
            stderr = standard_error(per_probe, dim=1)
    stats = {**sol.stats, **stats_extra, "nfe": counted.calls}
    return LikelihoodResult(logp=logp, prior_logp=prior, delta_logp=delta.mean(1), z=z,
                            nfe=counted.calls, stats=stats, stderr=stderr,
                            logp_per_probe=per_probe if trace == "hutchinson" else None)


def _concat(parts: List[LikelihoodResult]) -> LikelihoodResult:
    """One LikelihoodResult from the results of consecutive solves over parts of a batch:
    per-sample tensors concatenated, work counters summed (``solvers.total_stats``), each
    solve's own statistics kept in ``stats["per_solve"]``."""
    def cat(name: str) -> Optional[Tensor]:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    stats = {**solvers.total_stats([p.stats for p in parts]),
             "per_solve": [p.stats for p in parts]}
    return LikelihoodResult(logp=cat("logp"), prior_logp=cat("prior_logp"),
                            delta_logp=cat("delta_logp"), z=cat("z"), nfe=stats["nfe"],
                            stats=stats, stderr=cat("stderr"),
                            logp_per_probe=cat("logp_per_probe"))


def _flow(score: ScoreFn, sde: SDE, x: Tensor, name: str, forward: bool, *, method: str,
          rtol: float, atol: float, eps: float, max_steps: int, progress: bool) -> Tensor:
    x, eps = _check_common(score, sde, x, name, rtol=rtol, atol=atol, eps=eps,
                           max_steps=max_steps)
    t0, t1 = (eps, sde.T) if forward else (sde.T, eps)
    field_fn: Callable[[Tensor, Tensor], Tensor] = probability_flow(sde, score)
    with torch.no_grad(), solvers.naming_solver(
            f"{'encode' if forward else 'decode'}(method={method!r})"):
        sol = solvers.odeint_adaptive(field_fn, x.detach(), t0, t1, method=method, rtol=rtol,
                                      atol=atol, max_steps=max_steps, progress=progress)
    return sol.x.detach()


def encode(score: ScoreFn, sde: SDE, x: Tensor, *, method: str = "dopri5",
           rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
           max_steps: int = 10_000, progress: bool = False) -> Tensor:
    """The deterministic latent z = x(T) of data x at time eps, by the probability-flow ODE
    integrated from eps to T (Song et al. 2021, Sec. 4.3). Shaped like x, detached."""
    return _flow(score, sde, x, "x", True, method=method, rtol=rtol, atol=atol, eps=eps,
                 max_steps=max_steps, progress=progress)


def decode(score: ScoreFn, sde: SDE, z: Tensor, *, method: str = "dopri5",
           rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
           max_steps: int = 10_000, progress: bool = False) -> Tensor:
    """The data x(eps) of a latent z at time T, by the probability-flow ODE integrated from
    T down to eps; the inverse of :func:`encode` up to the solver tolerance."""
    return _flow(score, sde, z, "z", False, method=method, rtol=rtol, atol=atol, eps=eps,
                 max_steps=max_steps, progress=progress)

"""``sample``: one entry point for every sampler, chosen by name per call.

The samplers themselves are in ``registry.py`` (names, option schemas), ``runners.py``
(how each family runs), ``predictors.py``, ``correctors.py``, ``dpm_solver.py`` and
``karras.py`` (the updates). This module checks the call once, draws the prior and runs
the chosen sampler over the batch (in chunks if asked), without an autograd graph.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import dataclasses

import torch
from torch import Tensor

import solvers

from .._shapes import batch_view
from ..guidance import GuidedScore, check_cond, check_guidance_args
from .._validation import (check_callable, check_choice, check_finite, check_floating_dtype,
                           check_int, check_matches_network, check_score_and_sde, check_shape,
                           check_state, first_float_parameter, same_device, seeded_noise)
from ..score import ScoreFn, call_score, unchecked, x0_from_score
from ..sdes import SDE
from .registry import SOLVERS, list_solvers
from .runners import Context


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        x: the samples [batch, *dims] at the end time (after the denoising step if asked).
        nfe: score/network evaluations actually made (counted, not computed).
        stats: solver statistics: steps, and accepted/rejected steps for adaptive solves.
        ts: the times of ``trajectory`` (or of the grid for fixed-step samplers), or None.
        trajectory: [n_times, batch, *dims] states when return_trajectory=True, else None.
    """
    x: Tensor
    nfe: int
    stats: Dict[str, Any] = field(default_factory=dict)
    ts: Optional[Tensor] = None
    trajectory: Optional[Tensor] = None


def sample(score: ScoreFn, sde: SDE, shape: Sequence[int], solver: str = "pc", *,
           generator: Optional[torch.Generator] = None, x_T: Optional[Tensor] = None,
           dtype: Optional[torch.dtype] = None, device: Optional[torch.device] = None,
           progress: bool = False, callback: Optional[Callable[[int, float, Tensor], None]] = None,
           return_trajectory: bool = False, grad: bool = False,
           batch_size: Optional[int] = None, cond: Any = None, guidance: Optional[float] = None,
           classifier: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
           classifier_scale: Optional[float] = None, seed: Optional[int] = None,
           sample_offset: int = 0, **options: Any) -> SampleResult:
    """Draw samples by integrating the reverse-time SDE or the probability-flow ODE.

    Args:
        score: s(x, t) -> tensor shaped like x, t a [batch] tensor (e.g. a ScoreModel or
            an oracle's ``score``).
        sde: the forward SDE.
        shape: [batch, *dims] of the samples.
        solver: a name from ``SOLVERS`` (see ``scoresde.samplers.list_solvers()``).
        generator: torch.Generator for all randomness: the prior is drawn first, then one
            standard normal tensor shaped like x per stochastic update, in order.
        x_T: start from this state at t = T instead of a prior draw.
        dtype, device: of the samples (default: those of the network's parameters when
            ``score`` is an nn.Module, else torch's default dtype; the generator's device).
        progress: show a tqdm bar. callback: called as callback(step, t, x) after each
            fixed-grid step (with ``batch_size``, for each chunk in turn).
            return_trajectory: keep every state in ``result.trajectory``.
        grad: record the autograd graph through the whole solve, so that the samples can
            be differentiated with respect to the network's parameters or ``x_T``
            (memory grows with the number of steps; torch backends only, not scipy's
            methods). Default False: no graph is kept across steps and ``result.x`` does
            not require grad, whatever the network's parameters.
        batch_size: solve at most this many samples at a time (default: all at once),
            bounding memory for very large ``shape[0]``. The prior is drawn for the whole
            batch first, so fixed-step deterministic solvers give the samples of one big
            batch: bitwise when the score computes each sample the same way whatever the
            batch (closed-form scores); a network's matrix products may run other BLAS
            kernels at another batch size and differ in the last bits. Stochastic
            solvers draw each chunk's noise from ``generator`` in turn (chunk 1's
            steps, then chunk 2's, ...): the result equals
            sampling the chunks one after another from ``x_T`` with the same generator,
            not the one-batch run. Adaptive solvers control the error of each chunk
            separately, so their steps (and results, within the tolerance) differ from
            one batch. ``nfe`` and the step counts in ``stats`` are totals over chunks.
        cond: conditional sampling (docs/guidance.md, ``scoresde.guidance``): a [batch]
            tensor of labels (or [batch, ...]; one int for the whole batch), sliced with
            x_T's batch; the score is called as score(x, t, cond). Without a classifier
            this samples p(x | cond) (guidance 0).
        guidance: classifier-free guidance weight w >= 0 (Ho & Salimans 2022, eq. 6):
            s = (1 + w) s(x, t, cond) - w s(x, t, null), the null label being -1. For
            w > 0 cond and null go through one batched call and ``nfe`` counts 2 per
            guided evaluation (``stats["network_calls"]`` the calls made).
        classifier: classifier guidance (Song et al. 2021, Sec. 5): a time-dependent
            classifier f(x, t) -> logits [batch, n_classes]; the score is then called
            unconditionally and w grad_x log softmax(f(x, t))[cond] is added.
            ``stats["classifier_evals"]`` counts its calls (one backward pass each).
        classifier_scale: w of the classifier term (default 1; needs ``classifier``).
        seed: per-sample seeding instead of ``generator``: sample i's prior and every
            one of its updates' noise (and its torchsde Brownian path) are functions of
            (seed, sample_offset + i) alone (``solvers.SeededNoise``, Philox-4x32-10), so
            the first k samples are the same whatever ``shape[0]``, ``batch_size`` or the
            process that draws them: bitwise for fixed-step solvers when the score computes
            each sample the same way whatever the batch. An integer in [0, 2**64); not
            together with ``generator``.
        sample_offset: the global index of the first sample (with ``seed``): sampling
            rows k..k+n-1 of a bigger run (``scoresde.distributed`` uses it per rank).
        **options: the solver's own options, checked against its schema in ``SOLVERS``
            (``list_solvers()``; docs/sampling.md): e.g. steps (network evaluations, for
            every fixed-step solver), eps (end time), grid ("uniform", "quadratic",
            "logsnr", "karras"), denoise (a final Tweedie step x0 = (x + std^2
            score)/alpha), predictor, corrector, snr, corrector_steps, norm ("pc"),
            method, rtol, atol, max_steps ("ode", "sde_adaptive"), eta ("ddim"),
            timesteps (DDPM indices as diffusers' ``scheduler.timesteps``: "ddpm",
            "ddim", "dpm_solver++"; docs/interop.md). An
            option the solver does not take is an error.

    Returns:
        SampleResult with x [batch, *dims], nfe (counted score evaluations), stats.
    """
    check_score_and_sde(score, sde)
    guide = check_guidance_args(cond, guidance, classifier, classifier_scale)
    check_choice("solver", solver, tuple(SOLVERS))
    spec = SOLVERS[solver]
    if not isinstance(grad, bool):
        raise TypeError(f"grad must be True or False, got {grad!r}")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to solver {solver!r}; "
                         f"its options are: {', '.join(spec.options) or 'none'}")
    if spec.requires is not None and not isinstance(sde, spec.requires):
        raise TypeError(f"solver {solver!r} needs a {spec.requires.__name__}, got "
                        f"{type(sde).__name__}")
    opts = {**spec.defaults, **{name: spec.options[name].check(name, value)
                                for name, value in options.items()}}
    if opts.get("timesteps") is not None:  # the network evaluations are the timesteps
        n = len(opts["timesteps"])
        if options.get("steps") not in (None, n):
            raise ValueError(f"steps={options['steps']} contradicts timesteps (which holds "
                             f"{n}); give one of them")
        opts["steps"] = n
    if opts.get("steps", 0) is None:
        opts["steps"] = spec.default_steps(sde, opts)
    if "eps" in opts and not opts["eps"] < sde.T:
        raise ValueError(f"eps (the end time) must be >= 0 and < T = {sde.T:g}, got "
                         f"{opts['eps']}")
    method = solvers.ADAPTIVE_ODE_METHODS.get(opts.get("method"))
    if grad and method is not None and method.backend == "scipy":
        raise ValueError(f"grad=True needs a torch solver, but method={opts['method']!r} runs "
                         f"in scipy (NumPy), which cannot carry gradients; use a torchdiffeq "
                         f"method such as method='dopri5'")
    if callback is not None:
        check_callable("callback", callback, "callback(step, t, x)")
    for name, value in (("callback", callback), ("return_trajectory", return_trajectory)):
        if value and spec.adaptive:
            raise ValueError(f"{name} applies to fixed-grid solvers, not the adaptive "
                             f"{solver!r}; use a fixed-step solver such as 'ode_rk4'")
    shape = check_shape("shape", shape)
    if guide:
        cond = check_cond(cond, shape[0])
    if dtype is not None:
        check_floating_dtype("dtype", dtype)
    seeded = seeded_noise(seed, sample_offset, generator, "noise", solvers.noise.STEPS)
    if generator is not None:
        where = device if device is not None else x_T.device if isinstance(x_T, Tensor) else None
        if where is not None and not same_device(generator.device, torch.device(where)):
            raise ValueError(f"generator is on {generator.device} but the samples are on "
                             f"{torch.device(where)} (device= or x_T); draw them with a "
                             f"generator on that device: torch.Generator(device="
                             f"{str(torch.device(where))!r})")
    if x_T is not None:
        check_state("x_T", x_T)
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must be a tensor of shape {shape}, got shape "
                             f"{tuple(x_T.shape)}")
        check_finite("x_T", x_T)

    # A network's parameters set the default dtype and device of the samples, so that a
    # float64 or CUDA model samples in float64 or on CUDA without extra arguments.
    param = first_float_parameter(score)
    if param is not None and x_T is None:
        dtype = dtype or param.dtype
        device = device or (generator.device if generator is not None else param.device)
    if x_T is None and seeded is not None:
        # the prior N(0, prior_std^2 I) of sde.prior_sampling, from the seeded PRIOR stream
        like = torch.empty(shape, dtype=dtype or torch.get_default_dtype(), device=device)
        x = sde.prior_std * seeded.rows(0, solvers.noise.PRIOR).draw(like)
    elif x_T is None:
        x = sde.prior_sampling(shape, generator=generator, dtype=dtype, device=device)
    else:
        x = x_T.to(dtype=dtype or x_T.dtype, device=device or x_T.device)

    check_matches_network("x_T", x, score)
    counted = solvers.CountingFunction(unchecked(score))
    if guide:
        cond = cond.to(x.device)
        counted = GuidedScore(counted, **guide)
    ctx = Context(score=counted, sde=sde, noise=solvers.GaussianNoise(generator),
                  generator=generator, opts=opts,
                  loop={"progress": progress, "callback": callback,
                        "save_trajectory": return_trajectory})
    name = f"sample(solver={solver!r}" + (f", method={opts['method']!r})" if "method" in opts
                                          else ")")
    # No autograd graph across steps unless asked for: every network evaluation's
    # activations would otherwise live until the end of the solve (a trained network's
    # parameters require grad). A step that needs a gradient takes it locally.
    with torch.set_grad_enabled(grad):
        sols = []
        chunks = x.split(batch_size or x.shape[0])
        conds = cond.split(batch_size or x.shape[0]) if guide else [None] * len(chunks)
        starts = range(0, x.shape[0], batch_size or x.shape[0])
        for start, chunk, chunk_cond in zip(starts, chunks, conds):
            if guide:  # the guided score follows the chunk's labels
                counted.bind(chunk_cond)
            # Seeded noise is numbered by the chunk's global rows; a generator is shared.
            run_ctx = ctx if seeded is None else dataclasses.replace(
                ctx, noise=seeded.rows(start))
            # Errors name the solver; a final denoising step (Tweedie) is checked like a step.
            with solvers.naming_solver(name):
                sol = spec.run(run_ctx, chunk)
                if opts.get("denoise"):
                    sol.x = tweedie_denoise(counted, sde, sol.x, float(opts["eps"]))
                solvers.check_finite_result(
                    sol.x, step=sol.stats.get("steps", 0) + 1, t=float(opts.get("eps", 0.0)),
                    what="the final denoising step (Tweedie's formula) returned NaN/inf")
            sols.append(sol)
    if guide:
        return _merge_chunks(sols, counted.nfe, return_trajectory, counted.stats())
    return _merge_chunks(sols, counted.calls, return_trajectory)


def _merge_chunks(sols: List[Any], nfe: int, return_trajectory: bool,
                  extra: Optional[Dict[str, int]] = None) -> SampleResult:
    """One SampleResult from the solutions of consecutive chunks of the batch: states
    concatenated along the batch (the trajectory along its second axis), work counters
    summed (``solvers.total_stats``), ``nfe`` every evaluation made."""
    x = sols[0].x if len(sols) == 1 else torch.cat([s.x for s in sols])
    stats = {**solvers.total_stats([s.stats for s in sols]), "nfe": nfe, **(extra or {})}
    trajectory = None
    if return_trajectory:
        trajectory = (sols[0].xs if len(sols) == 1 else torch.cat([s.xs for s in sols], 1))
    return SampleResult(x=x, nfe=nfe, stats=stats, ts=sols[0].ts, trajectory=trajectory)


def tweedie_denoise(score: ScoreFn, sde: SDE, x: Tensor, t: float) -> Tensor:
    """Tweedie's formula E[x_0 | x_t] = (x_t + std^2 score(x_t, t))/alpha at time t (one
    score evaluation; the formula is ``score.x0_from_score``)."""
    tb = sde.time(t, batch=x.shape[0], like=x)
    alpha, std = sde._marginal_coeffs(tb)
    return x0_from_score(x, call_score(score, x, tb), batch_view(alpha, x), batch_view(std, x))


__all__ = ["sample", "SampleResult", "SOLVERS", "list_solvers", "tweedie_denoise"]

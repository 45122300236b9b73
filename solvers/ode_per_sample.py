"""Adaptive Dormand--Prince 5(4) with a step size and an accept/reject decision per sample.

``odeint_adaptive`` measures the local error of the whole batch in one norm, so every
sample takes the steps the batch needs together. Here each sample ``i`` of the batch has
its own time ``t_i``, step ``h_i`` and error norm

    err_i = RMS_j( e_ij / (atol + rtol max(|x_ij|, |x_new,ij|)) )       (HNW I, eq. II.4.11)

over its own entries j only: a sample is accepted when err_i <= 1, and its next step is
h_i * clip(0.9 err_i^(-1/5), 0.2, 10) (HNW I, eq. II.4.13, q = 4 the order of the
embedded estimate; at most 1 on the attempt that follows a rejection, HNW I p. 168).
This is scipy's RK45 (the same pair, error estimate and controller): a batch of one sample
takes its steps and evaluations exactly. One hard sample takes
small steps alone instead of forcing them on the batch, and a sample that reaches ``t1``
leaves the batch: each evaluation is made on the samples still in flight only, so the
work is the sum of the samples' own step counts, not the batch size times the worst one.

The field is called as ``field(t, x)`` with ``t`` a ``[rows]`` tensor (one time per row of
``x``, x's dtype) and ``x`` the ``[rows, *dims]`` states of the samples in flight, in
batch order: it must treat rows independently (row i of the output depends only on row
i of ``x`` and on ``t[i]``). Everything stays on the state's device; each step reads one
index tensor back (which samples are still in flight) and the finite check one flag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from .errors import MaxStepsError, check_finite_result
from .initial_step import initial_step_sizes, rms_norm_per_sample
from .interval_field import IntervalField
from .ode_fixed import ButcherTableau
from .progress import TimeBar
from .result import Solution
from .validation import check_positive, check_positive_int, check_tensor, check_time_span

#: ``field(t, x)`` with ``t`` a ``[rows]`` time per row of ``x``; rows are independent
#: (``field(t, x, data)`` with the rows' ``row_data`` when that is given).
RowField = Callable[..., Tensor]


@dataclass(frozen=True)
class EmbeddedTableau:
    """An explicit Runge--Kutta pair with the first-same-as-last property.

    Attributes:
        tableau: the solution method; its last stage is evaluated at the new state
            (``a[-1] == b[:-1]``, ``b[-1] == 0``, ``c[-1] == 1``), so an accepted step's
            last evaluation is the next step's first.
        error: weights e_i = b_i - b*_i of the local error estimate h sum_i e_i k_i.
        error_order: order q of the embedded solution b* (the controller's exponent is
            1 / (q + 1)).
    """

    tableau: ButcherTableau
    error: Tuple[float, ...]
    error_order: int

    def __post_init__(self) -> None:
        t = self.tableau
        if (len(self.error) != t.stages or t.c[-1] != 1 or t.b[-1] != 0
                or tuple(t.a[-1]) != tuple(t.b[:-1])):
            raise ValueError(f"tableau {t.name!r}: need len(error) == stages and the "
                             "first-same-as-last form (c[-1] == 1, a[-1] == b[:-1], b[-1] == 0)")


#: Dormand & Prince (1980), J. Comput. Appl. Math. 6, 19-26, Table 2 (RK5(4)7M); HNW I,
#: Table II.5.2. b* is the fourth-order embedded solution.
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DOPRI5_B_STAR = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100,
                  1 / 40)
DOPRI5 = EmbeddedTableau(
    ButcherTableau(
        "dopri5", 5,
        (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
        ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
         _DOPRI5_B[:-1]),
        _DOPRI5_B, "Dormand & Prince (1980), J. Comput. Appl. Math. 6, Table 2"),
    tuple(b - bs for b, bs in zip(_DOPRI5_B, _DOPRI5_B_STAR)), 4)

SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0   # the controller's constants (HNW I, II.4)


def step_factor(err: Tensor, after_rejection: Tensor, error_order: int) -> Tensor:
    """Next step over this one, per sample: clip(0.9 err^(-1/(q+1)), 0.2, 10) (Hairer,
    Norsett & Wanner, Solving ODEs I, eq. II.4.13), and at most 1 where the previous attempt
    was rejected (ibid., p. 168: facmax = 1 right after a rejection; scipy's RK45 does the
    same), so that a step accepted after a rejection does not grow straight back into it."""
    factor = (SAFETY * err.clamp(min=1e-10) ** (-1.0 / (error_order + 1))).clamp(MIN_FACTOR,
                                                                                  MAX_FACTOR)
    return torch.where(after_rejection, factor.clamp(max=1.0), factor)


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A ``[rows]`` tensor as a factor on ``like`` ([rows, 1, ...]) in like's dtype."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def odeint_per_sample(
    field: RowField,
    x0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    first_step: Optional[float] = None,
    progress: bool = False,
    method: EmbeddedTableau = DOPRI5,
    row_data: Optional[Tensor] = None,
) -> Solution:
    """Solve ``dx/dt = field(t, x)`` from ``t0`` to ``t1`` with error control per sample.

    Args:
        field: ``field(t, x)``, ``t`` a ``[rows]`` tensor of x's dtype with every entry in
            the closed interval between ``t0`` and ``t1``, ``x`` ``[rows, *dims]`` (the
            samples still in flight); returns a tensor shaped like ``x``. Rows must be
            independent of each other.
        x0: ``[batch, *dims]`` initial state.
        t0, t1: start and end times; ``t0 > t1`` integrates backwards.
        rtol, atol: local error tolerances per sample, ``err_i <= 1`` in the RMS norm above.
        max_steps: most step attempts (accepted + rejected) of any one sample; hitting it
            raises :class:`~solvers.errors.MaxStepsError`.
        first_step: size of every sample's first step (``<= |t1 - t0|``); by default chosen
            per sample (Hairer, Norsett & Wanner's rule, one evaluation).
        progress: a tqdm bar over the time of the slowest sample.
        method: the embedded pair (default Dormand--Prince 5(4)).
        row_data: ``[batch, ...]`` constants that belong to the samples (a Hutchinson probe
            per sample, a class label): the field is then called as
            ``field(t, x, row_data[rows])``, with the rows of the samples in flight, in the
            same order as ``x``'s.

    Returns:
        :class:`Solution` with the state at ``t1``. ``stats``: ``nfe`` (calls of the field,
        each on the samples in flight), ``steps`` (loop iterations), ``accepted`` and
        ``rejected`` (summed over samples), and per sample ``[batch]`` int64 CPU tensors
        ``nfe_per_sample`` (evaluations that included the sample), ``accepted_per_sample``
        and ``rejected_per_sample``; ``rows_evaluated`` = the sum of ``nfe_per_sample``.

    Raises:
        MaxStepsError, NonFiniteStateError; ValueError/TypeError for invalid arguments.
    """
    check_tensor("x0", x0)
    if x0.dim() < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must have shape [batch, *dims] with batch >= 1, got shape "
                         f"{tuple(x0.shape)}")
    t0, t1 = check_time_span(t0, t1)
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    span = abs(t1 - t0)
    if first_step is not None:
        first_step = check_positive("first_step", first_step)
        if first_step > span:
            raise ValueError(f"first_step must be at most |t1 - t0| = {span:.6g}, got {first_step}")

    tab, dev, batch = method.tableau, x0.device, x0.shape[0]
    direction = 1.0 if t1 > t0 else -1.0
    if row_data is not None:
        check_tensor("row_data", row_data)
        if row_data.dim() < 1 or row_data.shape[0] != x0.shape[0]:
            raise ValueError(f"row_data must have one row per sample, shape [{x0.shape[0]}, "
                             f"...], got shape {tuple(row_data.shape)}")
    in_flight = {"rows": None}     # the rows being stepped (None: all), read by the field

    def row_field(t: Tensor, x: Tensor) -> Tensor:
        if row_data is None:
            return field(t, x)
        rows = in_flight["rows"]
        return field(t, x, row_data if rows is None else row_data[rows])

    guard = IntervalField(row_field, x0, t0, t1)
    tf = dict(dtype=torch.float64, device=dev)
    t = torch.full((batch,), t0, **tf)          # times kept in float64 whatever x's dtype
    t_end = torch.tensor(t1, **tf)
    x = x0.clone()
    f = guard(t.to(x.dtype), x)
    if first_step is None:
        h = initial_step_sizes(guard, t, x, f, direction, span, method.error_order, rtol, atol,
                               rms_norm_per_sample)
    else:
        h = torch.full((batch,), first_step, **tf)
    nfe = torch.full((batch,), guard.calls, dtype=torch.int64, device=dev)
    accepted = torch.zeros(batch, dtype=torch.int64, device=dev)
    rejected = torch.zeros_like(accepted)
    after_rejection = torch.zeros(batch, dtype=torch.bool, device=dev)
    active = torch.ones(batch, dtype=torch.bool, device=dev)
    bar = TimeBar(t0, t1, progress, desc=tab.name)
    iterations = 0
    try:
        while True:
            rows = active.nonzero().squeeze(1)           # the one host read of a step
            if rows.numel() == 0:
                break
            whole = rows.numel() == batch
            in_flight["rows"] = None if whole else rows
            xa, ta, ha, fa, ra = ((x, t, h, f, after_rejection) if whole else
                                  (x[rows], t[rows], h[rows], f[rows], after_rejection[rows]))
            attempts = accepted[rows] + rejected[rows]
            if bool((attempts >= max_steps).any()):
                worst = int(attempts.argmax())
                raise MaxStepsError(max_steps, t=float(ta[worst]), t_end=t1)
            iterations += 1
            guard.step = iterations
            left = (t_end - ta) * direction
            last = ha >= left
            ha = torch.where(last, left, ha)
            t_next = torch.where(last, t_end, ta + direction * ha)
            dh = _rows(direction * ha, xa)
            ks = [fa]
            for i in range(1, tab.stages):
                xi = xa + dh * sum(a * k for a, k in zip(tab.a[i], ks) if a != 0.0)
                # c_i = 1 stages use the step's end time itself: never past t1 by rounding
                ti = t_next if tab.c[i] == 1.0 else ta + direction * tab.c[i] * ha
                ks.append(guard(ti.to(x.dtype), xi))
            x_new = xi                                   # FSAL: the last stage's state
            err = dh * sum(e * k for e, k in zip(method.error, ks) if e != 0.0)
            scale = atol + rtol * torch.maximum(xa.abs(), x_new.abs())
            err_norm = rms_norm_per_sample(err / scale)
            ok = err_norm <= 1.0
            okx = _rows(ok, xa).bool()
            x_upd = torch.where(okx, x_new, xa)
            f_upd = torch.where(okx, ks[-1], fa)
            t_upd = torch.where(ok, t_next, ta)
            # capped at 1 where the previous attempt was rejected (a rejected attempt's own
            # factor is below 0.9 already)
            h_upd = ha * step_factor(err_norm, ra, method.error_order)
            r_upd = ~ok
            done = ok & last
            if whole:
                x, f, t, h, after_rejection = x_upd, f_upd, t_upd, h_upd, r_upd
                active = ~done
            else:
                x = x.index_copy(0, rows, x_upd)
                f = f.index_copy(0, rows, f_upd)
                t = t.index_copy(0, rows, t_upd)
                h = h.index_copy(0, rows, h_upd)
                after_rejection = after_rejection.index_copy(0, rows, r_upd)
                active = active.index_copy(0, rows, ~done)
            nfe.index_add_(0, rows, torch.full_like(rows, tab.stages - 1))
            accepted.index_add_(0, rows, ok.long())
            rejected.index_add_(0, rows, (~ok).long())
            if bar.enabled:
                bar.advance_to(float(t.min() if direction > 0 else t.max()))
    finally:
        bar.close()
    guard.check_interval("per-sample dopri5")
    check_finite_result(x, step=iterations, t=t1, what="the solution at t1 is NaN/inf")
    nfe_ps, acc_ps, rej_ps = nfe.cpu(), accepted.cpu(), rejected.cpu()
    stats = {"nfe": guard.calls, "steps": iterations, "accepted": int(acc_ps.sum()),
             "rejected": int(rej_ps.sum()), "nfe_per_sample": nfe_ps,
             "accepted_per_sample": acc_ps, "rejected_per_sample": rej_ps,
             "rows_evaluated": int(nfe_ps.sum())}
    return Solution(x=x, stats=stats)

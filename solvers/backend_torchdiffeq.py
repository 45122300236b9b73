"""Adaptive ODE solves with torchdiffeq, kept strictly inside [t0, t1].

Left to itself ``torchdiffeq.odeint`` may evaluate the field beyond the end point: its
initial-step heuristic evaluates at ``t0 + h0`` with an unbounded ``h0``, and its steps may
pass the last output time and interpolate back. Here:

* the first step is chosen by :func:`~solvers.initial_step.select_initial_step`, whose
  trial point is capped at the interval, and passed as ``first_step``;
* ``step_t=[t1]`` makes every step that would cross ``t1`` end exactly at ``t1``; stage
  times are ``t0 + c_i h`` with ``c_i <= 1``, and stages with ``c_i = 1`` are moved one ulp
  back inside by torchdiffeq itself;
* the field is wrapped in :class:`~solvers.interval_field.IntervalField`, which verifies it.

Step statistics come from torchdiffeq's public callback hooks on the function object
(``callback_step`` before each attempt, ``callback_accept_step`` / ``callback_reject_step``
after). ``max_steps`` is enforced in ``callback_step`` over the whole solve; torchdiffeq's own
``max_num_steps`` counts per output interval and fails with a bare ``AssertionError``.
Everything stays on the state's device; the only host reads are scalars.
"""
from __future__ import annotations

import traceback
from typing import List

import torch
import torchdiffeq
from torch import Tensor

from .errors import MaxStepsError, SolverError
from .initial_step import select_initial_step
from .interval_field import IntervalField
from .progress import TimeBar


class _CallbackField:
    """The function handed to torchdiffeq: the guarded field plus step-counting callbacks.

    torchdiffeq's first call is ``f(t0, x0)`` with the very ``x0`` tensor it was given; that
    value was already computed for the initial-step choice, so it is returned once instead
    of evaluating again.
    """

    def __init__(self, guard: IntervalField, x0: Tensor, f0: Tensor, max_steps: int,
                 t_start: float, t_end: float, direction: float, bar: TimeBar) -> None:
        self.guard = guard
        self._first = (x0, f0)
        self.max_steps = max_steps
        self.t_end = t_end
        self.direction = direction
        self.bar = bar
        self.attempts = 0
        self.accepted = 0
        self.rejected = 0
        self.t_attempt: Tensor | float = t_start  # start of the attempt in progress (not synced)

    def __call__(self, t: Tensor, x: Tensor) -> Tensor:
        if self._first is not None and x is self._first[0]:
            f0 = self._first[1]
            self._first = None
            return f0
        return self.guard(t, x)

    # torchdiffeq passes the time in the caller's convention (un-negated when reversed)
    # and dt as a positive step length.
    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if self.attempts >= self.max_steps:
            raise MaxStepsError(self.max_steps, t=float(t0), t_end=self.t_end)
        self.attempts += 1
        self.t_attempt = t0
        self.guard.step = self.attempts

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.accepted += 1
        if self.bar.enabled:
            self.bar.advance_to(float(t0 + self.direction * dt))

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.rejected += 1


def solve_torchdiffeq(
    guard: IntervalField,
    x0: Tensor,
    times: List[float],
    *,
    method: str,
    error_order: int,
    rtol: float,
    atol: float,
    max_steps: int,
    first_step: float | None,
    bar: TimeBar,
) -> tuple[Tensor, dict]:
    """Integrate from ``times[0]`` to ``times[-1]`` and return the states at ``times``.

    Args:
        times: strictly monotone output times, first and last the interval's end points.

    Returns:
        ``([len(times), *x0.shape] states, stats)``.
    """
    t0, t1 = times[0], times[-1]
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    f0 = guard(torch.tensor(t0, dtype=x0.dtype, device=x0.device), x0)
    if first_step is None:
        first_step = select_initial_step(guard, t0, x0, f0, direction, span, error_order, rtol, atol)
    guard.step = 1
    func = _CallbackField(guard, x0, f0, max_steps, t0, t1, direction, bar)
    grid = torch.tensor(times, dtype=torch.float64, device=x0.device)
    options = {
        "first_step": first_step,
        "step_t": torch.tensor([t1], dtype=torch.float64, device=x0.device),
    }
    try:
        xs = torchdiffeq.odeint(func, x0, grid, rtol=rtol, atol=atol, method=method, options=options)
    except AssertionError as exc:
        # torchdiffeq signals its own failures (step-size underflow, ...) with assert.
        if "torchdiffeq" not in traceback.extract_tb(exc.__traceback__)[-1].filename:
            raise
        raise SolverError(
            f"torchdiffeq ({method}) gave up at step {func.attempts} (t={float(func.t_attempt):.6g}): "
            f"{exc}; the problem may be stiff or singular there: try rtol/atol looser, or "
            f"method='Radau'/'BDF'"
        ) from exc
    guard.check_interval("torchdiffeq")
    stats = {"nfe": guard.calls, "steps": func.attempts, "accepted": func.accepted, "rejected": func.rejected}
    return xs, stats

"""Adaptive ODE solves with scipy's solver objects (``scipy.integrate.RK45`` etc.).

The solver object is stepped by hand (``solver.step()``) rather than through
``solve_ivp`` so that steps can be counted and bounded. The state is flattened to a float64
NumPy vector for scipy; every field evaluation converts it back to a tensor of the state's
shape, dtype and device. scipy's step control never passes ``t_bound`` (the last step is
shortened to end on it); the first step is chosen here with the trial point capped at the
interval (older scipy versions did not cap theirs) and passed as ``first_step``.

Counting: ``accepted`` is the number of ``step()`` calls. For the explicit Runge--Kutta
methods (RK45, RK23, DOP853) every attempt, accepted or rejected, calls the method's error
norm exactly once; a subclass counts those calls, so ``rejected`` is known and
``max_steps`` bounds attempts. LSODA, Radau and BDF retry inside ``step()`` where this
cannot be seen: there ``rejected`` is ``None`` and ``max_steps`` bounds accepted steps
(each ``step()`` still ends, scipy fails it once the step size underflows).
"""
from __future__ import annotations

import os
import traceback
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.integrate
import torch
from torch import Tensor

from .errors import MaxStepsError, NonFiniteStateError, SolverError
from .initial_step import select_initial_step
from .interval_field import IntervalField
from .progress import TimeBar

_EXPLICIT_RK = ("RK45", "RK23", "DOP853")


def _attempt_counting(base: type) -> type:
    """Subclass of a scipy explicit RK solver calling ``on_attempt()`` once per attempt."""

    class AttemptCounting(base):
        def __init__(self, *args, on_attempt: Callable[[], None], **kwargs) -> None:
            self._on_attempt = on_attempt
            super().__init__(*args, **kwargs)

        def _estimate_error_norm(self, K, h, scale):
            self._on_attempt()
            return super()._estimate_error_norm(K, h, scale)

    AttemptCounting.__name__ = f"AttemptCounting{base.__name__}"
    return AttemptCounting


_COUNTING_CLASSES = {name: _attempt_counting(getattr(scipy.integrate, name)) for name in _EXPLICIT_RK}


def _raised_in_library(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside scipy or numpy (not in our code or the user's field)."""
    where = traceback.extract_tb(exc.__traceback__)[-1].filename.replace(os.sep, "/")
    return "/scipy/" in where or "/numpy/" in where


class _Counters:
    def __init__(self, guard: IntervalField, max_steps: int, t_end: float) -> None:
        self.guard = guard
        self.max_steps = max_steps
        self.t_end = t_end
        self.attempts = 0
        self.accepted = 0
        self.t = 0.0

    def on_attempt(self) -> None:
        self.attempts += 1
        if self.attempts > self.max_steps:
            raise MaxStepsError(self.max_steps, t=self.t, t_end=self.t_end)
        self.guard.step = self.attempts + 1


def solve_scipy(
    guard: IntervalField,
    x0: Tensor,
    t0: float,
    t1: float,
    interior: List[float],
    *,
    method: str,
    error_order: int,
    rtol: float,
    atol: float,
    max_steps: int,
    first_step: Optional[float],
    bar: TimeBar,
) -> Tuple[Tensor, Dict[float, Tensor], dict]:
    """Integrate from ``t0`` to ``t1``.

    Args:
        interior: output times strictly between ``t0`` and ``t1``, in the direction of
            integration; their states come from the method's dense output.

    Returns:
        ``(x1, {t: state at t for t in interior}, stats)``.
    """
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    direction = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)

    def to_tensor(y: np.ndarray) -> Tensor:
        return torch.from_numpy(np.array(y, dtype=np.float64)).to(device=device, dtype=dtype).reshape(shape)

    def to_numpy(x: Tensor) -> np.ndarray:
        return x.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()

    f0 = guard(torch.tensor(t0, dtype=dtype, device=device), x0)
    if first_step is None:
        first_step = select_initial_step(guard, t0, x0, f0, direction, span, error_order, rtol, atol)
    y0 = to_numpy(x0).copy()
    first = [(y0, to_numpy(f0).copy())]

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        # scipy's constructor evaluates f(t0, y0) with our own y0 array: reuse f0 once.
        if first and y is first[0][0]:
            return first.pop()[1]
        return to_numpy(guard(t, to_tensor(y)))

    counters = _Counters(guard, max_steps, t1)
    guard.step = 1
    kwargs = dict(rtol=rtol, atol=atol, first_step=first_step)
    if method in _EXPLICIT_RK:
        solver = _COUNTING_CLASSES[method](fun, t0, y0, t1, on_attempt=counters.on_attempt, **kwargs)
    else:
        solver = getattr(scipy.integrate, method)(fun, t0, y0, t1, **kwargs)

    dense: Dict[float, Tensor] = {}
    pending = list(interior)
    while solver.status == "running":
        if method not in _EXPLICIT_RK:
            if counters.accepted >= max_steps:
                raise MaxStepsError(max_steps, t=solver.t, t_end=t1)
            guard.step = counters.accepted + 1
        t_before = solver.t
        try:
            message = solver.step()
        except ValueError as exc:
            # Radau/BDF solve linear systems with scipy.linalg, which rejects NaN/inf (from
            # an overflowing Newton iterate) with a ValueError of its own.
            if "infs or NaNs" not in str(exc) or not _raised_in_library(exc):
                raise
            raise NonFiniteStateError(
                step=guard.step, t=solver.t, what=f"scipy {method}'s linear algebra met NaN/inf ({exc})"
            ) from exc
        # A step fails once its size underflows; LSODA instead reports success for a step
        # of size 0 that stays put, again and again: both end the solve here.
        failure = str(message).rstrip(".") if solver.status == "failed" else (
            f"the step did not advance the time (step size {solver.step_size:.3g}, below the "
            f"spacing of floating-point numbers there)" if solver.t == t_before else None)
        if failure is not None:
            raise SolverError(
                f"scipy {method} gave up at step {guard.step} (t={solver.t:.6g}) after {counters.accepted} "
                f"accepted steps: {failure}; the problem may be stiff or singular there: try looser "
                f"rtol/atol or another method"
            )
        counters.accepted += 1
        counters.t = solver.t
        reached = [te for te in pending if direction * (te - solver.t) <= 0]
        if reached:
            values = solver.dense_output()(np.array(reached))
            for j, te in enumerate(reached):
                dense[te] = to_tensor(values[:, j])
            pending = pending[len(reached):]
        bar.advance_to(solver.t)

    guard.check_interval("scipy")
    stats = {"nfe": guard.calls, "accepted": counters.accepted}
    if method in _EXPLICIT_RK:
        stats.update(steps=counters.attempts, rejected=counters.attempts - counters.accepted)
    else:
        stats.update(steps=counters.accepted, rejected=None)
    return to_tensor(solver.y), dense, stats

"""Exceptions raised by the solvers.

Every solver failure is a :class:`SolverError` (a ``RuntimeError``), so callers can catch
one type. Input mistakes are ``ValueError``/``TypeError`` and are raised before any work.

An error names the solver that raised it: each entry point (``odeint_adaptive``,
``sample``, ``log_likelihood``, ...) runs its solve inside :func:`naming_solver`, which
sets :attr:`SolverError.solver` and so prefixes the message, e.g.
``sample(solver='ode', method='dopri5'): non-finite state at step 12 (t=0.0431): ...``.
The outermost entry point, the one the user called, gives the name.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import Tensor


class SolverError(RuntimeError):
    """A solve could not be completed.

    Attributes:
        solver: the entry point and method that raised it, e.g.
            ``"sample(solver='ode', method='dopri5')"``; ``None`` until an entry point
            names it. When set, ``str(error)`` is ``f"{solver}: {message}"``.
    """

    solver: Optional[str] = None

    def attribute(self, solver: str) -> "SolverError":
        """Name the solver that raised this error (replacing a name an inner entry point
        gave) and return the error itself, ready to re-raise."""
        self.solver = str(solver)
        return self

    def __str__(self) -> str:
        message = super().__str__()
        return f"{self.solver}: {message}" if self.solver else message


@contextmanager
def naming_solver(solver: str) -> Iterator[None]:
    """Run the block; a :class:`SolverError` raised in it leaves named ``solver`` (see
    :meth:`SolverError.attribute`), with its type, attributes and traceback unchanged."""
    try:
        yield
    except SolverError as err:
        err.attribute(solver)
        raise


class NonFiniteStateError(SolverError):
    """The state or a vector-field value became NaN or infinite.

    Attributes:
        step: index of the step during which it happened (1 = the first step; 0 = while
            evaluating the field at the initial point, before any step).
        t: the time at which the non-finite value appeared.
    """

    def __init__(self, step: int, t: float, what: str = "the state became NaN/inf") -> None:
        self.step = int(step)
        self.t = float(t)
        self.what = what
        super().__init__(
            f"non-finite state at step {self.step} (t={self.t:.6g}): {what}; check the vector "
            f"field (or score network) for NaN/inf at this time, use smaller steps or tighter "
            f"tolerances, or compute in float64"
        )

    def __reduce__(self):  # keep the attributes (solver too) through pickling (e.g. multiprocessing)
        return (type(self), (self.step, self.t, self.what), self.__dict__)


class DivergedStateError(NonFiniteStateError):
    """A fixed-grid solve's state grew beyond its bound (``max_abs``): still finite, but
    the scheme has left its stability region (too few steps for a stiff field) or the
    field blows up; continuing would return meaningless numbers or overflow.

    Attributes:
        step, t: as for :class:`NonFiniteStateError`.
        peak: the largest |entry| of the state after that step.
        limit: the bound it exceeded.
    """

    def __init__(self, step: int, t: float, peak: float, limit: float) -> None:
        self.step, self.t = int(step), float(t)
        self.peak, self.limit = float(peak), float(limit)
        self.what = f"max |x| = {self.peak:.3g} > max_abs = {self.limit:g}"
        SolverError.__init__(
            self, f"the state diverged at step {self.step} (t={self.t:.6g}): {self.what}; "
                  f"the scheme is unstable at this step size (a stiff or exploding score): "
                  f"use more steps, an adaptive or implicit solver (e.g. solver='ode', "
                  f"method='Radau'), or check the score network at this time")

    def __reduce__(self):
        return (type(self), (self.step, self.t, self.peak, self.limit), self.__dict__)


class MaxStepsError(SolverError):
    """An adaptive solve used up its step budget before reaching the end time.

    Attributes:
        max_steps: the budget that was exhausted.
        t: the time reached when it ran out.
        t_end: the time the solve was meant to reach.
    """

    def __init__(self, max_steps: int, t: float, t_end: float) -> None:
        self.max_steps = int(max_steps)
        self.t = float(t)
        self.t_end = float(t_end)
        super().__init__(
            f"max_steps={self.max_steps} was hit at t={self.t:.6g} before reaching "
            f"t1={self.t_end:.6g}: raise max_steps, loosen rtol/atol, or, if the problem is "
            f"stiff, use an implicit method ('Radau', 'BDF' or 'LSODA')"
        )

    def __reduce__(self):
        return (type(self), (self.max_steps, self.t, self.t_end), self.__dict__)


def check_finite_result(x: Tensor, step: int, t: float, what: str) -> Tensor:
    """Return ``x`` if every entry is finite, else raise :class:`NonFiniteStateError`.

    For states a solve returns without passing them through its per-step check (the end
    state of an adaptive solve, a final denoising step): no solve returns NaN/inf silently.
    """
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteStateError(step=step, t=t, what=what)
    return x

"""Exceptions raised by the solvers.

Every solver failure is a :class:`SolverError` (a ``RuntimeError``), so callers can catch
one type. Input mistakes are ``ValueError``/``TypeError`` and are raised before any work.
"""
from __future__ import annotations


class SolverError(RuntimeError):
    """A solve could not be completed."""


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

    def __reduce__(self):  # keep the attributes through pickling (e.g. multiprocessing)
        return (type(self), (self.step, self.t, self.what))


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
        return (type(self), (self.max_steps, self.t, self.t_end))

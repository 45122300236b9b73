"""Explicit Runge--Kutta schemes on a fixed grid, as Butcher tableaus declaring their order.

A tableau (c, A, b) advances dx/dt = f(t, x) by h = t1 - t0 as
    k_i = f(t0 + c_i h, x + h sum_{j<i} a_ij k_j),   x_next = x + h sum_i b_i k_i
(Hairer, Norsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.1, the
definition of an explicit s-stage method). Stage times with c_i = 1
use t1 itself, so no evaluation lands outside [t0, t1] through rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

from torch import Tensor

from .counting import CountingFunction
from .errors import naming_solver
from .loop import Step, Update, integrate
from .noise import Noise
from .result import Solution
from .validation import TimeLike

#: ``field(t, x) -> dx/dt`` with ``t`` a 0-d tensor and the result shaped like ``x``.
VectorField = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge--Kutta method.

    Attributes:
        name: registry name.
        order: global order of accuracy p (error O(h^p)).
        c: stage times as fractions of the step, ``c[0] == 0``.
        a: strictly lower-triangular stage weights; row i has i entries.
        b: output weights, summing to 1.
        source: where the coefficients come from.
    """

    name: str
    order: int
    c: Tuple[float, ...]
    a: Tuple[Tuple[float, ...], ...]
    b: Tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        s = len(self.c)
        if len(self.b) != s or len(self.a) != s or any(len(row) != i for i, row in enumerate(self.a)):
            raise ValueError(f"tableau {self.name!r}: need len(c) == len(b) == len(a) and row i of a with i entries")
        if self.c[0] != 0 or not all(0 <= ci <= 1 for ci in self.c):
            raise ValueError(f"tableau {self.name!r}: need c[0] == 0 and 0 <= c_i <= 1, got {self.c}")
        # Consistency: sum_j a_ij = c_i (the usual convention, HNW I Sec. II.1) and the
        # first-order condition sum_i b_i = 1.
        for i, row in enumerate(self.a):
            if not math.isclose(sum(row), self.c[i], abs_tol=1e-14):
                raise ValueError(f"tableau {self.name!r}: row {i} of a sums to {sum(row)}, not c_{i} = {self.c[i]}")
        if not math.isclose(sum(self.b), 1.0, abs_tol=1e-14):
            raise ValueError(f"tableau {self.name!r}: b sums to {sum(self.b)}, not 1")

    @property
    def stages(self) -> int:
        """Number of field evaluations per step."""
        return len(self.c)


def _tableau(name: str, order: int, c: Sequence[float], a: Sequence[Sequence[float]],
             b: Sequence[float], source: str) -> ButcherTableau:
    return ButcherTableau(name, order, tuple(c), tuple(tuple(r) for r in a), tuple(b), source)


FIXED_ODE_METHODS: Dict[str, ButcherTableau] = {
    t.name: t
    for t in (
        # Forward Euler: x + h f(t0, x).
        _tableau("euler", 1, [0.0], [[]], [1.0], "Euler (1768), Institutiones calculi integralis"),
        # Explicit midpoint: k2 = f(t0 + h/2, x + h/2 k1), x + h k2.
        _tableau("midpoint", 2, [0.0, 0.5], [[], [0.5]], [0.0, 1.0], "Runge (1895), Math. Ann. 46"),
        # Heun's (explicit trapezoidal) method.
        _tableau("heun", 2, [0.0, 1.0], [[], [1.0]], [0.5, 0.5], "Heun (1900), Z. Math. Phys. 45"),
        # Ralston's second-order method, minimum truncation-error bound among 2-stage order 2.
        _tableau("ralston", 2, [0.0, 2 / 3], [[], [2 / 3]], [0.25, 0.75], "Ralston (1962), Math. Comp. 16, 431-437"),
        # Kutta's third-order method.
        _tableau("rk3", 3, [0.0, 0.5, 1.0], [[], [0.5], [-1.0, 2.0]], [1 / 6, 2 / 3, 1 / 6],
                 "Kutta (1901), Z. Math. Phys. 46"),
        # The classical fourth-order Runge--Kutta method.
        _tableau("rk4", 4, [0.0, 0.5, 0.5, 1.0], [[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]],
                 [1 / 6, 1 / 3, 1 / 3, 1 / 6], "Kutta (1901), Z. Math. Phys. 46: the classical RK4"),
    )
}


def get_tableau(method: str) -> ButcherTableau:
    """Look up ``method`` in :data:`FIXED_ODE_METHODS`; unknown names raise ``ValueError``."""
    try:
        return FIXED_ODE_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown fixed-step ODE method {method!r}; valid names: {', '.join(sorted(FIXED_ODE_METHODS))}"
        ) from None


def rk_step(field: VectorField, tableau: ButcherTableau) -> Step:
    """A :data:`Step` applying one step of ``tableau`` to ``dx/dt = field(t, x)``."""

    def step(i: int, x: Tensor, t0: Tensor, t1: Tensor, noise: Optional[Noise] = None) -> Update:
        h = t1 - t0
        k = []
        for c_i, a_i in zip(tableau.c, tableau.a):
            t_i = t0 if c_i == 0 else t1 if c_i == 1 else t0 + c_i * h
            x_i = x
            for a_ij, k_j in zip(a_i, k):
                if a_ij != 0:
                    x_i = x_i + (a_ij * h) * k_j
            f = field(t_i, x_i)
            if f.shape != x.shape:
                raise ValueError(f"the vector field returned shape {tuple(f.shape)} for a state of shape {tuple(x.shape)}")
            k.append(f)
        out = x
        for b_i, k_i in zip(tableau.b, k):
            if b_i != 0:
                out = out + (b_i * h) * k_i
        return Update(out)

    return step


def odeint_fixed(field: VectorField, x0: Tensor, ts: TimeLike, method: str = "rk4", **loop_kwargs) -> Solution:
    """Solve ``dx/dt = field(t, x)`` on the grid ``ts`` with a fixed-step Runge--Kutta method.

    Args:
        field: ``field(t, x)``, ``t`` a 0-d tensor, result shaped like ``x``.
        x0: ``[batch, *dims]`` state at ``ts[0]``.
        ts: ``[n]`` strictly monotone times (decreasing integrates backwards).
        method: a name in :data:`FIXED_ODE_METHODS`.
        **loop_kwargs: ``callback``, ``progress``, ``save_trajectory``, ``desc`` of
            :func:`~solvers.loop.integrate`.

    Returns:
        :class:`Solution`; ``stats["nfe"]`` counts the field evaluations made.
    """
    tableau = get_tableau(method)
    counted = CountingFunction(field)
    with naming_solver(f"odeint_fixed(method={method!r})"):
        solution = integrate(rk_step(counted, tableau), x0, ts, **loop_kwargs)
    solution.stats["nfe"] = counted.calls
    return solution

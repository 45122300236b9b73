"""Adaptive ODE solving behind one call, with torchdiffeq and scipy backends.

``odeint_adaptive`` validates once, restricts the field to the closed interval between
``t0`` and ``t1`` (it is never evaluated outside, in either direction of time), counts its
evaluations and the accepted/rejected steps, and bounds the work by ``max_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import Tensor

from .backend_scipy import solve_scipy
from .backend_torchdiffeq import solve_torchdiffeq
from .errors import check_finite_result, naming_solver
from .interval_field import IntervalField
from .ode_fixed import VectorField
from .progress import TimeBar
from .result import Solution
from .validation import TimeLike, check_positive, check_positive_int, check_tensor, check_time_span


@dataclass(frozen=True)
class AdaptiveMethod:
    """An embedded adaptive method.

    Attributes:
        name: registry name (as spelled by its library).
        backend: ``"torchdiffeq"`` or ``"scipy"``.
        order: order of the solution formula.
        error_order: order of the embedded error estimate (used for the first step).
        source: the method's reference.
    """

    name: str
    backend: str
    order: int
    error_order: int
    source: str


ADAPTIVE_ODE_METHODS: Dict[str, AdaptiveMethod] = {
    m.name: m
    for m in (
        AdaptiveMethod("dopri5", "torchdiffeq", 5, 4,
                       "Dormand & Prince (1980), J. Comput. Appl. Math. 6, solution weights; "
                       "torchdiffeq's embedded estimate (Dormand-Prince-Shampine tableau), "
                       "smaller than the paper's, so looser than RK45 at equal rtol"),
        AdaptiveMethod("bosh3", "torchdiffeq", 3, 2, "Bogacki & Shampine (1989), Appl. Math. Lett. 2"),
        AdaptiveMethod("adaptive_heun", "torchdiffeq", 2, 1, "Heun's method with an embedded Euler error estimate"),
        AdaptiveMethod("dopri8", "torchdiffeq", 8, 7, "Prince & Dormand (1981), J. Comput. Appl. Math. 7"),
        AdaptiveMethod("fehlberg2", "torchdiffeq", 2, 1, "Fehlberg (1969), NASA TR R-315, RKF1(2)"),
        AdaptiveMethod("RK45", "scipy", 5, 4, "Dormand & Prince (1980), scipy.integrate.RK45"),
        AdaptiveMethod("RK23", "scipy", 3, 2, "Bogacki & Shampine (1989), scipy.integrate.RK23"),
        AdaptiveMethod("DOP853", "scipy", 8, 7, "Hairer, Norsett & Wanner, Solving ODEs I, scipy.integrate.DOP853"),
        AdaptiveMethod("LSODA", "scipy", 12, 1, "Petzold (1983), SIAM J. Sci. Stat. Comput. 4; ODEPACK"),
        AdaptiveMethod("Radau", "scipy", 5, 3, "Hairer & Wanner, Solving ODEs II, Radau IIA; scipy.integrate.Radau"),
        AdaptiveMethod("BDF", "scipy", 5, 1, "Shampine & Reichelt (1997), SIAM J. Sci. Comput. 18 (NDFs)"),
    )
}


def get_adaptive_method(method: str) -> AdaptiveMethod:
    """Look up ``method`` in :data:`ADAPTIVE_ODE_METHODS`; unknown names raise ``ValueError``."""
    try:
        return ADAPTIVE_ODE_METHODS[method]
    except (KeyError, TypeError):
        names = ", ".join(f"{n} ({m.backend})" for n, m in ADAPTIVE_ODE_METHODS.items())
        raise ValueError(f"unknown adaptive ODE method {method!r}; valid names: {names}") from None


def _check_t_eval(t_eval: TimeLike, t0: float, t1: float) -> List[float]:
    values = t_eval.detach().cpu().reshape(-1).tolist() if isinstance(t_eval, Tensor) else [float(v) for v in t_eval]
    direction = 1.0 if t1 > t0 else -1.0
    lo, hi = min(t0, t1), max(t0, t1)
    if not values or any(not (lo <= v <= hi) for v in values):
        raise ValueError(f"t_eval must be non-empty with every time in [{lo:.6g}, {hi:.6g}], got {values}")
    if any(direction * (b - a) <= 0 for a, b in zip(values, values[1:])):
        raise ValueError(f"t_eval must be strictly monotone in the direction from t0={t0} to t1={t1}, got {values}")
    return values


def odeint_adaptive(
    field: VectorField,
    x0: Tensor,
    t0: float,
    t1: float,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    first_step: Optional[float] = None,
    t_eval: Optional[TimeLike] = None,
    progress: bool = False,
) -> Solution:
    """Solve ``dx/dt = field(t, x)`` from ``t0`` to ``t1`` with error control.

    Args:
        field: ``field(t, x)`` with ``t`` a 0-d tensor of ``x``'s dtype and device, returning
            a tensor shaped like ``x``. Only ever called with ``t`` in the closed interval
            between ``t0`` and ``t1``.
        x0: ``[batch, *dims]`` initial state.
        t0, t1: start and end times; ``t0 > t1`` integrates backwards.
        method: a name in :data:`ADAPTIVE_ODE_METHODS` (torchdiffeq: dopri5, bosh3,
            adaptive_heun, dopri8, fehlberg2; scipy: RK45, RK23, DOP853, LSODA, Radau, BDF).
        rtol, atol: local error tolerances, ``err_i <= atol + rtol |x_i|`` in the RMS norm.
        max_steps: most steps allowed (attempts, accepted + rejected, where the backend
            shows rejections); hitting it raises :class:`~solvers.errors.MaxStepsError`.
        first_step: size of the first step (``<= |t1 - t0|``); chosen automatically if None.
        t_eval: times in the interval, monotone from ``t0`` to ``t1``, at which to report
            the state (dense output; ``t0``/``t1`` themselves give the exact end states).
        progress: show a tqdm bar over time.

    Returns:
        :class:`Solution` with the state at ``t1``; ``ts``/``xs`` at ``t_eval`` if given;
        ``stats``: ``nfe``, ``steps``, ``accepted``, ``rejected``.

    Raises:
        MaxStepsError, NonFiniteStateError, SolverError (backend failure);
        ValueError/TypeError for invalid arguments.
    """
    spec = get_adaptive_method(method)
    check_tensor("x0", x0)
    t0, t1 = check_time_span(t0, t1)
    rtol = check_positive("rtol", rtol)
    atol = check_positive("atol", atol)
    max_steps = check_positive_int("max_steps", max_steps)
    if first_step is not None:
        first_step = check_positive("first_step", first_step)
        if first_step > abs(t1 - t0):
            raise ValueError(f"first_step must be at most |t1 - t0| = {abs(t1 - t0):.6g}, got {first_step}")
    requested = None if t_eval is None else _check_t_eval(t_eval, t0, t1)
    interior = [] if requested is None else [t for t in requested if t not in (t0, t1)]

    guard = IntervalField(field, x0, t0, t1)
    bar = TimeBar(t0, t1, progress, desc=method)
    common = dict(method=method, error_order=spec.error_order, rtol=rtol, atol=atol,
                  max_steps=max_steps, first_step=first_step, bar=bar)
    try:
        with naming_solver(f"odeint_adaptive(method={method!r})"):
            if spec.backend == "torchdiffeq":
                xs, stats = solve_torchdiffeq(guard, x0, [t0, *interior, t1], **common)
                x1, dense = xs[-1], dict(zip(interior, xs[1:-1]))
            else:
                x1, dense, stats = solve_scipy(guard, x0, t0, t1, interior, **common)
            # The guard checks every state the field is evaluated at, but BDF and LSODA accept
            # states they never evaluate the field at, and dense outputs are interpolated:
            # check what is returned.
            for t, state in ((t1, x1), *dense.items()):
                check_finite_result(state, step=stats["steps"], t=t,
                                    what="the solution at this output time is NaN/inf")
    finally:
        bar.close()

    if requested is None:
        return Solution(x=x1, stats=stats)
    states = {t0: x0, t1: x1, **dense}
    ts = torch.tensor(requested, dtype=x0.dtype, device=x0.device)
    return Solution(x=x1, ts=ts, xs=torch.stack([states[t] for t in requested]), stats=stats)

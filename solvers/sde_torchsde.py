"""SDE solves with torchsde (higher-order and adaptive schemes), in either direction of time.

torchsde integrates forwards only, on states of shape ``[batch, d]``. A solve from t0 to
t1 < t0 is mapped to increasing time s = -t: with X(s) = x(-s),
    dX = -b(-s, X) ds + g(-s, X) dW(s),   s from -t0 to -t1,
since a reverse-time Brownian increment over [t - |dt|, t] has the same law as a forward
one, N(0, |dt|) (the sign of g does not matter in law). States are flattened to
``[batch, d]`` and reshaped back for every drift/diffusion call; the diffusion is diagonal
noise (``g`` elementwise, broadcast to the state like :func:`~solvers.sde.broadcast_diffusion`).

The drift is read as an Ito drift. ``reversible_heun`` is a Stratonovich scheme; it is given
the same drift, which is right exactly when the Ito--Stratonovich correction
-(1/2) g dg/dx vanishes, i.e. when the diffusion does not depend on x. That holds for every
diffusion-model SDE (g = g(t)); with state-dependent noise use euler, milstein or srk.

Randomness: the Brownian motion is a ``torchsde.BrownianInterval`` whose entropy is one
integer drawn from ``generator``, so the same generator seed and settings give the same
output bit for bit (this is not the one-normal-per-step contract of the fixed-step solvers).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torchsde
from torch import Tensor

from .counting import CountingFunction
from .errors import MaxStepsError, NonFiniteStateError, check_finite_result, naming_solver
from .result import Solution
from .sde import Diffusion, Drift, _check_drift, broadcast_diffusion
from .validation import check_positive, check_positive_int, check_tensor, check_time_span

#: method -> (torchsde SDE type, Levy-area approximation the method needs)
TORCHSDE_METHODS = {
    "euler": ("ito", "none"),
    "milstein": ("ito", "none"),
    "srk": ("ito", "space-time"),
    "reversible_heun": ("stratonovich", "none"),
}


class _RowBrownian(torchsde.BaseBrownian):
    """Independent Brownian motions per row: row b is a ``BrownianInterval`` of size
    (1, d) with its own entropy, so a row's path does not depend on the other rows (nor
    on how many there are); an increment is the rows' increments stacked."""

    def __init__(self, entropies: Sequence[int], d: int, **kwargs) -> None:
        self.rows = [torchsde.BrownianInterval(size=(1, d), entropy=e, **kwargs)
                     for e in entropies]

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        parts = [bm(ta, tb, return_U=return_U, return_A=return_A) for bm in self.rows]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(column) for column in zip(*parts))
        return torch.cat(parts)

    def __repr__(self) -> str:
        return f"_RowBrownian({len(self.rows)} rows)"

    dtype = property(lambda self: self.rows[0].dtype)
    device = property(lambda self: self.rows[0].device)
    shape = property(lambda self: (len(self.rows), self.rows[0].shape[1]))
    levy_area_approximation = property(lambda self: self.rows[0].levy_area_approximation)


class _CountedBrownian(torchsde.BaseBrownian):
    """A Brownian motion (``inner``) that counts the increments the solver asks for.

    Every torchsde step queries exactly one increment ``bm(s, s_next)``, so the queries
    are the steps. In adaptive mode an attempt is three steps (the full step, then two half
    steps from the same start: torchsde's step doubling); an attempt was rejected when the
    next one starts at the same time. The queried starts are kept for that bookkeeping, and
    the step budget is enforced here, before the step's evaluations.
    """

    def __init__(self, inner, *, max_steps: int, queries_per_step: int, sign: float,
                 t_end: float) -> None:
        self.inner = inner
        self.max_steps = max_steps
        self.queries_per_step = queries_per_step
        self.sign = sign
        self.t_end = t_end
        self.starts = []

    @property
    def steps_started(self) -> int:
        """Steps (adaptive: attempts) begun so far."""
        return -(-len(self.starts) // self.queries_per_step)

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if len(self.starts) >= self.max_steps * self.queries_per_step:
            raise MaxStepsError(self.max_steps, t=self.sign * float(ta), t_end=self.t_end)
        self.starts.append(float(ta))
        return self.inner(ta, tb, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"_CountedBrownian({self.inner!r})"

    dtype = property(lambda self: self.inner.dtype)
    device = property(lambda self: self.inner.device)
    shape = property(lambda self: self.inner.shape)
    levy_area_approximation = property(lambda self: self.inner.levy_area_approximation)


class _FlatSDE(torch.nn.Module):
    """The user's drift/diffusion as a torchsde SDE on ``[batch, d]`` in time s = sign * t."""

    noise_type = "diagonal"

    def __init__(self, drift: Drift, diffusion: Diffusion, shape: torch.Size, sign: float, sde_type: str,
                 steps_started: Callable[[], int]) -> None:
        super().__init__()
        self.drift, self.diffusion = drift, diffusion
        self.shape, self.sign, self.sde_type = shape, sign, sde_type
        self.steps_started = steps_started

    def _time(self, s: Tensor, y: Tensor) -> Tensor:
        return (self.sign * s).to(y.dtype)

    def _finite(self, v: Tensor, t: Tensor, what: str) -> Tensor:
        if not torch.isfinite(v).all():
            raise NonFiniteStateError(step=self.steps_started(), t=t.item(), what=f"the {what} returned NaN/inf")
        return v

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        t, x = self._time(s, y), y.reshape(self.shape)
        b = self._finite(_check_drift(self.drift(t, x), x), t, "drift")
        return (self.sign * b).reshape(y.shape)  # dX/ds = sign * b(t, x)

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        t, x = self._time(s, y), y.reshape(self.shape)
        g = self._finite(broadcast_diffusion(self.diffusion(t, x), x), t, "diffusion")
        return g.expand(self.shape).reshape(y.shape)


def sdeint_torchsde(
    drift: Drift,
    diffusion: Diffusion,
    x0: Tensor,
    t0: float,
    t1: float,
    *,
    method: str = "srk",
    dt: float,
    adaptive: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-4,
    dt_min: Optional[float] = None,
    max_steps: int = 100_000,
    generator: Optional[torch.Generator] = None,
    entropies: Optional[Sequence[int]] = None,
) -> Solution:
    """Integrate dx = drift dt + diffusion dW from ``t0`` to ``t1`` with torchsde.

    Args:
        drift: ``drift(t, x)`` (Ito drift), ``t`` a 0-d tensor, result shaped like ``x``.
        diffusion: ``diffusion(t, x)``: scalar, ``[batch]`` or broadcastable to ``x``.
        x0: ``[batch, *dims]`` initial state.
        t0, t1: start and end; ``t0 > t1`` integrates backwards (reverse-time SDE).
        method: ``"euler"`` (Euler--Maruyama), ``"milstein"`` (Ito Milstein),
            ``"srk"`` (Roessler 2010 stochastic Runge--Kutta, strong order 1.5 as torchsde
            states it), ``"reversible_heun"`` (Kidger et al. 2021; Stratonovich, see the
            module docstring).
        dt: fixed mode: the interval is split into n = ceil(|t1 - t0| / dt) equal steps;
            adaptive mode: the first step.
        adaptive: step-doubling error control with ``rtol``/``atol`` (torchsde's).
        dt_min: adaptive mode: smallest step; torchsde accepts a step of this size whatever
            its error, which bounds the work. Default ``1e-5 * |t1 - t0|``.
        max_steps: adaptive mode: most attempts before :class:`MaxStepsError`; fixed mode:
            a ``dt`` needing more steps is a ``ValueError``.
        generator: seeds the Brownian motion (one integer is drawn from it).
        entropies: instead of ``generator``, one integer per row: row b follows its own
            Brownian motion seeded by ``entropies[b]`` (e.g. ``SeededNoise.entropies``),
            so a row's path does not depend on the batch it is solved in (one torchsde
            ``BrownianInterval`` per row: slower for large batches).

    Returns:
        :class:`Solution` with the state at ``t1``; ``stats``: ``nfe`` (drift evaluations),
        ``nfe_diffusion``, ``steps``, and in adaptive mode ``accepted``/``rejected``.
        torchsde's entry check evaluates drift and diffusion once at ``t0`` to learn their
        shapes; those evaluations are counted too.
    """
    try:
        sde_type, levy_area = TORCHSDE_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"unknown torchsde method {method!r}; valid names: {', '.join(TORCHSDE_METHODS)}") from None
    check_tensor("x0", x0)
    t0, t1 = check_time_span(t0, t1)
    span = abs(t1 - t0)
    dt = check_positive("dt", dt)
    max_steps = check_positive_int("max_steps", max_steps)
    if adaptive:
        rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
        dt_min = 1e-5 * span if dt_min is None else check_positive("dt_min", dt_min)
        if dt_min > dt:
            raise ValueError(f"dt_min must be at most dt = {dt}, got {dt_min}")
        step_size = min(dt, span)
    else:
        n_steps = max(1, math.ceil(span / dt * (1 - 1e-12)))
        if n_steps > max_steps:
            raise ValueError(f"dt={dt} needs {n_steps} steps from t0={t0} to t1={t1}, more than "
                             f"max_steps={max_steps}: raise dt or max_steps")
        # torchsde advances time by repeated addition s += dt and adds a last step of size
        # ~1e-16 whenever rounding leaves s just short of the end. The n additions err by at
        # most ~n eps max|s| (float64 times); enlarging the step by 4x that (but by less than
        # 1/(4n), so n - 1 steps stay short of the end) makes exactly n steps reach the end,
        # where torchsde clips the last one onto it.
        rounding = 4 * n_steps * torch.finfo(torch.float64).eps * max(abs(t0), abs(t1)) / span
        step_size = span / n_steps * (1 + min(rounding, 0.25 / n_steps))
        dt_min = step_size

    sign = 1.0 if t1 > t0 else -1.0
    s0, s1 = sign * t0, sign * t1
    batch = x0.shape[0]
    y0 = x0.reshape(batch, -1)
    counted_drift, counted_diffusion = CountingFunction(drift), CountingFunction(diffusion)
    if entropies is not None and generator is not None:
        raise ValueError("entropies and generator both seed the Brownian motion; pass one")
    # The step as a hint fixes the interval's dependency tree up front. Without it the tree
    # is refined to the smallest step seen, and one query ~1e-13 long makes it enormous.
    common = dict(t0=s0, t1=s1, dtype=x0.dtype, device=x0.device,
                  levy_area_approximation=levy_area, dt=step_size)
    if entropies is not None:
        entropies = [int(e) for e in entropies]
        if len(entropies) != batch:
            raise ValueError(f"entropies must hold one integer per row ({batch}), got "
                             f"{len(entropies)}")
        inner = _RowBrownian(entropies, y0.shape[1], **common)
    else:
        entropy = None
        if generator is not None:
            entropy = int(torch.randint(0, 2**62, (), generator=generator,
                                        device=generator.device))
        inner = torchsde.BrownianInterval(size=tuple(y0.shape), entropy=entropy, **common)
    bm = _CountedBrownian(inner, max_steps=max_steps, queries_per_step=3 if adaptive else 1,
                          sign=sign, t_end=t1)
    sde = _FlatSDE(counted_drift, counted_diffusion, x0.shape, sign, sde_type, steps_started=lambda: bm.steps_started)
    ts = torch.tensor([s0, s1], dtype=torch.float64, device=x0.device)
    with naming_solver(f"sdeint_torchsde(method={method!r}, adaptive={adaptive})"):
        ys = torchsde.sdeint(sde, y0, ts, bm=bm, method=method, dt=step_size, adaptive=adaptive,
                             rtol=rtol, atol=atol, dt_min=dt_min)
        # Drift and diffusion are checked at every evaluation, but the last step's state is
        # never evaluated, and adaptive mode accepts a step of dt_min whatever its error.
        x1 = check_finite_result(ys[-1].reshape(x0.shape), step=bm.steps_started, t=t1,
                                 what="the state at the end time is NaN/inf")
    stats = {"nfe": counted_drift.calls, "nfe_diffusion": counted_diffusion.calls}
    if adaptive:
        attempt_starts = bm.starts[::3]
        rejected = sum(1 for a, b in zip(attempt_starts, attempt_starts[1:]) if b == a)
        stats.update(steps=len(attempt_starts), accepted=len(attempt_starts) - rejected, rejected=rejected)
    else:
        stats["steps"] = len(bm.starts)
    return Solution(x=x1, stats=stats)

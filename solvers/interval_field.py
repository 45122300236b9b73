"""A vector field restricted to the closed interval of a solve, counted and checked.

Adaptive backends choose their own evaluation times. :class:`IntervalField` is what they
call instead of the user's field: it counts evaluations, checks that each value is shaped
like the state and that both are finite, and hands the user's field only times inside
``[min(t0, t1), max(t0, t1)]``. The backends are set up so that they never ask for times
outside (see ``backend_torchdiffeq`` and ``backend_scipy``); times that lie outside only
through floating-point rounding (a few ulps) are clamped onto the end point, and
:meth:`IntervalField.check_interval` raises if anything larger ever happened, so a
misconfigured backend cannot pass unnoticed.
"""
from __future__ import annotations

from typing import Callable, Union

import torch
from torch import Tensor

from .errors import NonFiniteStateError, SolverError

# Rounding allowance for "inside the interval", in units of eps * max(|t0|, |t1|).
_ROUNDING_ULPS = 16


class IntervalField:
    """``field(t, x)`` for ``t`` in the closed interval between ``t0`` and ``t1``.

    Attributes:
        calls: evaluations of the user's field made so far.
        step: index of the step in progress, set by the backend for error messages
            (0 while evaluating at the initial point).
    """

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], like: Tensor, t0: float, t1: float) -> None:
        self.field = field
        self.calls = 0
        self.step = 0
        self.shape = like.shape
        opts = dict(dtype=like.dtype, device=like.device)
        self.lo = torch.tensor(min(t0, t1), **opts)
        self.hi = torch.tensor(max(t0, t1), **opts)
        # Largest distance outside [lo, hi] requested so far, kept on the device (no sync).
        self.worst_excess = torch.zeros((), **opts)
        self.rounding = _ROUNDING_ULPS * torch.finfo(like.dtype).eps * max(abs(t0), abs(t1))

    def __call__(self, t: Union[Tensor, float], x: Tensor) -> Tensor:
        """The user's field at ``t`` (0-d, or ``[batch]`` for per-sample solves) and ``x``."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t_ = t.detach()
        self.worst_excess = torch.maximum(self.worst_excess,
                                          torch.maximum(self.lo - t_, t_ - self.hi).max())
        t = torch.clamp(t, self.lo, self.hi)
        f = self.field(t, x)
        self.calls += 1
        if not isinstance(f, Tensor) or f.shape != x.shape or f.dtype != x.dtype:
            got = f"{tuple(f.shape)} {f.dtype}" if isinstance(f, Tensor) else type(f).__name__
            raise ValueError(f"the vector field returned {got} for a state {tuple(x.shape)} {x.dtype}; "
                             f"it must return a tensor shaped like the state, of its dtype")
        # One host read for both: the field's value, and the state it was given (a state can
        # overflow while the field stays finite, e.g. a field that does not depend on it).
        if not (torch.isfinite(f).all() & torch.isfinite(x).all()):
            what = ("the vector field returned NaN/inf" if bool(torch.isfinite(x).all())
                    else "the vector field was given a NaN/inf state")
            raise NonFiniteStateError(step=self.step, t=_first_bad_time(t, f, x),
                                      what=f"{what} (evaluation {self.calls})")
        return f

    def check_interval(self, backend: str) -> None:
        """Raise :class:`SolverError` if ``backend`` asked for a time beyond rounding outside."""
        excess = self.worst_excess.item()
        if excess > self.rounding:
            raise SolverError(
                f"internal error: the {backend} backend asked for the vector field at a time {excess:.3g} "
                f"outside [{self.lo.item():.6g}, {self.hi.item():.6g}]; the time was clamped but the "
                f"result is not trustworthy (please report this with the solver settings)"
            )


def _first_bad_time(t: Tensor, f: Tensor, x: Tensor) -> float:
    """The time of the first sample whose state or field value is not finite (``t`` itself
    when it is one time for the whole batch)."""
    if t.dim() == 0:
        return t.item()
    bad = ~(torch.isfinite(f) & torch.isfinite(x)).reshape(x.shape[0], -1).all(1)
    return t[bad.nonzero()[0, 0]].item()

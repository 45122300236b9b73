"""Choice of the first step of an adaptive solve, never looking outside the interval."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def _rms(v: Tensor) -> float:
    return v.pow(2).mean().sqrt().item()


def select_initial_step(
    field: Callable[[Tensor, Tensor], Tensor],
    t0: float,
    x0: Tensor,
    f0: Tensor,
    direction: float,
    span: float,
    error_order: int,
    rtol: float,
    atol: float,
) -> float:
    """Starting step size of Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4.

    (a) d0 = ||x0||, d1 = ||f0|| in the weighted RMS norm with weights atol + rtol |x0|;
    (b) h0 = 0.01 d0 / d1 (1e-6 if either is tiny); (c) one Euler step of h0 and
    d2 = ||f(t0 + h0, x0 + h0 f0) - f0|| / h0; (d) h1 = (0.01 / max(d1, d2))^(1/(q+1))
    with q the order of the error estimator; (e) h = min(100 h0, h1).
    Unlike the textbook version, h0 and h are capped at ``span = |t1 - t0|`` so the trial
    evaluation in (c) stays inside the interval. Costs one evaluation.

    Args:
        field: evaluated once, at ``t0 + direction * h0``.
        f0: ``field(t0, x0)``, already computed.
        direction: +1.0 forwards in time, -1.0 backwards.

    Returns:
        A positive step size, at most ``span``.
    """
    scale = atol + rtol * x0.abs()
    d0 = _rms(x0 / scale)
    d1 = _rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = field(torch.tensor(t0 + direction * h0, dtype=x0.dtype, device=x0.device), x0 + (direction * h0) * f0)
    d2 = _rms((f1 - f0) / scale) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
    return min(100 * h0, h1, span)

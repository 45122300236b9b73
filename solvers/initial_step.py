"""Choice of the first step of an adaptive solve, never looking outside the interval."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

Norm = Callable[[Tensor], Tensor]


def rms_norm(v: Tensor) -> Tensor:
    """The RMS over every entry of ``v``, 0-d float64: one error norm for the whole batch."""
    return v.pow(2).mean().sqrt().to(torch.float64)


def rms_norm_per_sample(v: Tensor) -> Tensor:
    """The RMS over each sample's entries, ``[batch]`` float64: one norm per sample."""
    return v.reshape(v.shape[0], -1).pow(2).mean(1).sqrt().to(torch.float64)


def initial_step_sizes(
    field: Callable[[Tensor, Tensor], Tensor],
    t0: Tensor,
    x0: Tensor,
    f0: Tensor,
    direction: float,
    span: float,
    error_order: int,
    rtol: float,
    atol: float,
    norm: Norm,
) -> Tensor:
    """Starting step size of Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4.

    (a) d0 = ||x0||, d1 = ||f0|| in the weighted RMS norm with weights atol + rtol |x0|;
    (b) h0 = 0.01 d0 / d1 (1e-6 if either is tiny); (c) one Euler step of h0 and
    d2 = ||f(t0 + h0, x0 + h0 f0) - f0|| / h0; (d) h1 = (0.01 / max(d1, d2))^(1/(q+1))
    with q the order of the error estimator; (e) h = min(100 h0, h1).
    Unlike the textbook version, h0 and h are capped at ``span = |t1 - t0|`` so the trial
    evaluation in (c) stays inside the interval. Costs one evaluation.

    ``norm`` decides what one step size is for: :func:`rms_norm` gives one (0-d) for the
    whole batch, :func:`rms_norm_per_sample` one per sample (``[batch]``; the field is then
    called with a ``[batch]`` time). Everything stays on the device (no host read).

    Args:
        field: evaluated once, at ``t0 + direction * h0``.
        t0: the start time, 0-d or ``[batch]``, float64.
        f0: ``field(t0, x0)``, already computed.
        direction: +1.0 forwards in time, -1.0 backwards.

    Returns:
        Positive step sizes, at most ``span``: float64, shaped like ``norm``'s output.
    """
    scale = atol + rtol * x0.abs()
    d0 = norm(x0 / scale)
    d1 = norm(f0 / scale)
    tiny = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = torch.where(tiny, torch.full_like(d0, 1e-6), 0.01 * d0 / torch.where(tiny, 1.0, d1))
    h0 = h0.clamp(max=span)
    dh = direction * h0
    f1 = field((t0 + dh).to(x0.dtype), x0 + _per_row(dh, x0) * f0)
    d2 = norm((f1 - f0) / scale) / h0
    dmax = torch.maximum(d1, d2)
    flat = dmax <= 1e-15
    h1 = torch.where(flat, (h0 * 1e-3).clamp(min=1e-6),
                     (0.01 / torch.where(flat, 1.0, dmax)) ** (1.0 / (error_order + 1)))
    return torch.minimum(100 * h0, h1).clamp(max=span)


def _per_row(h: Tensor, x: Tensor) -> Tensor:
    """A 0-d or ``[batch]`` step as a factor on ``x`` ([batch, 1, ...]), in x's dtype."""
    return h.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) if h.dim() else h.to(x.dtype)


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
    """:func:`initial_step_sizes` with one step for the whole batch, as a float (one host
    read); the field is called with a 0-d time."""
    t = torch.tensor(t0, dtype=torch.float64, device=x0.device)
    return float(initial_step_sizes(field, t, x0, f0, direction, span, error_order, rtol, atol,
                                    rms_norm))

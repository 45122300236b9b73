"""The fixed-grid time-stepping loop shared by every fixed-step method.

A method is a ``step(x, t0, t1, noise) -> x_next`` function; :func:`integrate` walks it
over a grid of times, checks the state after every step, reports progress and saves the
trajectory. Step functions hold the scheme only; nothing here is scheme-specific.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import NonFiniteStateError
from .noise import Noise
from .result import Solution
from .validation import TimeLike, check_tensor, check_time_grid

#: ``step(x, t0, t1, noise) -> x_next``; ``t0``/``t1`` are 0-d tensors of x's dtype and device.
Step = Callable[[Tensor, Tensor, Tensor, Optional[Noise]], Tensor]
#: ``callback(step, t, x)`` called after each step with the step index (1-based), the new time.
Callback = Callable[[int, float, Tensor], None]


def integrate(
    step: Step,
    x0: Tensor,
    ts: TimeLike,
    *,
    noise: Optional[Noise] = None,
    callback: Optional[Callback] = None,
    progress: bool = False,
    save_trajectory: bool = False,
    desc: Optional[str] = None,
) -> Solution:
    """Apply ``step`` over consecutive pairs of ``ts``.

    Args:
        step: the scheme, ``step(x, t0, t1, noise) -> x_next`` (see :data:`Step`).
        x0: ``[batch, *dims]`` state at ``ts[0]``.
        ts: ``[n]`` times, ``n >= 2``, strictly monotone; decreasing runs time backwards.
        noise: passed to every step (``None`` for deterministic schemes).
        callback: ``callback(i, t_i, x_i)`` after step ``i`` (1..n-1) with the new state.
        progress: show a tqdm bar.
        save_trajectory: keep every state: ``Solution.ts`` is ``[n]`` and ``Solution.xs``
            is ``[n, batch, *dims]`` with ``xs[0] = x0``.
        desc: label of the progress bar.

    Returns:
        :class:`Solution` with the state at ``ts[-1]`` and ``stats = {"steps": n - 1}``;
        callers that know the vector field add ``nfe``.

    Raises:
        NonFiniteStateError: the state became NaN/inf; names the step and its end time.
    """
    check_tensor("x0", x0)
    ts_cpu, ts_dev = check_time_grid("ts", ts, x0)
    n_steps = ts_cpu.numel() - 1
    states: List[Tensor] = [x0] if save_trajectory else []
    x = x0
    with tqdm(total=n_steps, desc=desc, disable=not progress) as bar:
        for i in range(1, n_steps + 1):
            x = step(x, ts_dev[i - 1], ts_dev[i], noise)
            if x.shape != x0.shape:
                raise ValueError(
                    f"step {i} returned shape {tuple(x.shape)} for a state of shape {tuple(x0.shape)}"
                )
            if not torch.isfinite(x).all():
                raise NonFiniteStateError(step=i, t=ts_cpu[i].item())
            if save_trajectory:
                states.append(x)
            if callback is not None:
                callback(i, ts_cpu[i].item(), x)
            bar.update(1)
    if save_trajectory:
        return Solution(x=x, ts=ts_dev, xs=torch.stack(states), stats={"steps": n_steps})
    return Solution(x=x, stats={"steps": n_steps})

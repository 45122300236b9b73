"""Input checks shared by the solvers: each names the argument, the value and what is allowed."""
from __future__ import annotations

import math
import numbers
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

TimeLike = Union[Tensor, Sequence[float]]


def check_tensor(name: str, x: object) -> Tensor:
    """Require a floating-point tensor with at least one dimension (the batch)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have shape [batch, *dims], got a 0-d tensor")
    return x


def check_time(name: str, value: object) -> float:
    """A finite real time point, returned as a Python float."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a single time, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite, strictly positive real number (tolerances, step sizes)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_positive_int(name: str, value: object) -> int:
    """A strictly positive int (step budgets, step counts)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """An int >= ``minimum`` (step counts, corrector moves), returned as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """One of ``allowed`` (names of methods, norms, ...), listing them if not."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of "
                         f"{', '.join(repr(a) for a in allowed)}")
    return value


def check_time_grid(name: str, ts: TimeLike, like: Tensor) -> Tuple[Tensor, Tensor]:
    """Validate a grid of times and return it on the CPU and on ``like``'s device.

    The grid needs at least two points, all finite, strictly increasing or strictly
    decreasing once rounded to ``like.dtype``.

    Returns:
        ``(ts_cpu, ts_dev)``: both ``[n]`` of ``like.dtype``; the CPU copy serves host-side
        bookkeeping (callbacks, messages) without device synchronisation.
    """
    if isinstance(ts, Tensor):
        ts_cpu = ts.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            ts_cpu = torch.tensor(list(ts), dtype=torch.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a 1-D tensor or a sequence of floats, got {ts!r}") from exc
    if ts_cpu.ndim != 1 or ts_cpu.numel() < 2:
        raise ValueError(f"{name} must be 1-D with at least 2 time points, got shape {tuple(ts_cpu.shape)}")
    if not torch.isfinite(ts_cpu).all():
        raise ValueError(f"{name} must be finite, got {_abbreviate(ts_cpu)}")
    ts_cpu = ts_cpu.to(like.dtype)
    diffs = ts_cpu[1:] - ts_cpu[:-1]
    if not ((diffs > 0).all() or (diffs < 0).all()):
        raise ValueError(
            f"{name} must be strictly increasing or strictly decreasing (in {like.dtype}), "
            f"got {_abbreviate(ts_cpu)}"
        )
    return ts_cpu, ts_cpu.to(device=like.device)


def _abbreviate(values: Tensor, keep: int = 6) -> str:
    """Short text for a possibly long 1-D tensor of times."""
    items = [f"{v:.6g}" for v in values.tolist()]
    if len(items) > 2 * keep:
        items = items[:keep] + ["..."] + items[-keep:]
    return "[" + ", ".join(items) + "]"

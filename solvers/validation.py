"""Input checks: each names the argument, the value received and what is allowed.

The one vocabulary of generic checks (numbers, choices, callables, tensors, times) for
both packages: the solvers use it at their entry points and scoresde builds its
diffusion-specific checks on it (scoresde/_validation.py). A check returns the value it
accepted (converted where it says so) or raises ``TypeError`` (wrong kind of value) or
``ValueError`` (right kind, outside what is allowed).
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

#: A grid of times: a 1-D tensor or a sequence of floats.
TimeLike = Union[Tensor, Sequence[float]]


# -- how values appear in messages ----------------------------------------------------------
def _describe(value: object) -> str:
    """A short text for a value in an error message (a tensor's entries if few, else its
    shape; other values by repr, first line, at most 80 characters)."""
    if isinstance(value, Tensor):
        if value.numel() <= 6 and value.device.type != "meta":
            return f"tensor({value.detach().cpu().tolist()})"
        return f"tensor of shape {tuple(value.shape)}"
    text = repr(value).splitlines()[0] if repr(value) else ""
    return text if len(text) <= 80 else text[:77] + "..."


def _got(value: object) -> str:
    """'got <value> of type <type>', for type errors."""
    return f"got {_describe(value)} of type {type(value).__name__}"


# -- numbers ----------------------------------------------------------------------------------
def is_real_number(value: object) -> bool:
    """Whether ``value`` is a real number (int, float, numpy scalar, ...), bools excluded."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (int, numpy integer, ...), bools excluded."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_real(name: str, value: object, *, positive: bool = False,
               nonnegative: bool = False, finite: bool = True,
               allowed: Optional[str] = None) -> float:
    """Return ``value`` (a real number or a one-element tensor) as a float after checking
    it is finite (unless ``finite=False``) and has the given sign.

    ``allowed`` words the requirement of the ``ValueError`` ("{name} must be {allowed},
    got {value}"); by default "> 0", ">= 0" or "a finite number [> 0 | >= 0]".
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if not is_real_number(value):
        raise TypeError(f"{name} must be a real number, {_got(value)}")
    value = float(value)
    sign = " > 0" if positive else " >= 0" if nonnegative else ""
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be {allowed or 'a finite number' + sign}, got {value}")
    if (positive and not value > 0) or (nonnegative and not value >= 0):
        raise ValueError(f"{name} must be {allowed or sign.strip()}, got {value}")
    return value


def check_positive(name: str, value: object) -> float:
    """A finite, strictly positive real number (tolerances, step sizes), as a float."""
    return check_real(name, value, positive=True, allowed="a positive finite number")


def check_int(name: str, value: object, *, minimum: int = 1,
              allowed: Optional[str] = None) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``
    (``allowed`` words the requirement of the ``ValueError``, by default "an integer >=
    {minimum}")."""
    if not is_integer(value):
        raise TypeError(f"{name} must be an integer, {_got(value)}")
    if value < minimum:
        raise ValueError(f"{name} must be {allowed or f'an integer >= {minimum}'}, got {value}")
    return int(value)


def check_positive_int(name: str, value: object) -> int:
    """A strictly positive int (step budgets, step counts)."""
    return check_int(name, value, minimum=1, allowed="a positive int")


def as_real_tensor(name: str, value: object, dtype: torch.dtype = torch.float64,
                   device: Optional[Union[str, torch.device]] = None) -> Tensor:
    """``value`` as one real tensor of ``dtype`` on ``device`` (default: a tensor's own
    device, else the CPU): a tensor, a NumPy array, a number, or a (nested) list or tuple of
    those, e.g. ``[torch.eye(2) * 0.1] * 2`` for two covariances.

    Raises ValueError naming ``name`` for a ragged collection (parts of different shapes)
    and TypeError for anything that is not real numbers (strings, None, booleans, complex).
    """
    if isinstance(value, Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be real numbers, got a tensor of dtype {value.dtype}")
        return value.detach().to(dtype=dtype, device=device if device is not None else value.device)
    if isinstance(value, (list, tuple)) and any(
            isinstance(v, (Tensor, np.ndarray, list, tuple)) for v in value):
        parts = [as_real_tensor(f"{name}[{i}]", v, dtype, "cpu") for i, v in enumerate(value)]
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"{name} must be a rectangular array: its entries have shapes "
                             f"{sorted(shapes)}")
        return torch.stack(parts).to(device) if parts else torch.zeros(0, dtype=dtype, device=device)
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:
        array, cause = None, err
    flags = isinstance(value, (list, tuple)) and any(isinstance(v, (bool, np.bool_)) for v in value)
    if array is None or array.dtype.kind not in "iuf" or flags:  # strings, None, bools, complex
        raise TypeError(f"{name} must be real numbers (a tensor, an array or nested lists "
                        f"of numbers), {_got(value)}") from (cause if array is None else None)
    return torch.from_numpy(array.astype(np.float64)).to(dtype=dtype, device=device)


# -- choices, callables, types ------------------------------------------------------------
def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """Check that ``value`` is one of ``allowed`` (names of methods, norms, ...), listing
    them if not."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of "
                         f"{', '.join(repr(a) for a in allowed)}")
    return value


def check_callable(name: str, value: object, signature: str) -> Any:
    """Check that ``value`` is callable (``signature`` shows how it is called)."""
    if not callable(value):
        raise TypeError(f"{name} must be callable as {signature}, {_got(value)}")
    return value


def check_instance(name: str, value: object, types, what: str) -> Any:
    """Check ``isinstance(value, types)``; ``what`` says what is allowed, e.g. "a
    torch.Generator or None"."""
    if not isinstance(value, types):
        raise TypeError(f"{name} must be {what}, {_got(value)}")
    return value


# -- tensors -------------------------------------------------------------------------------
def check_shape(name: str, shape: object) -> Tuple[int, ...]:
    """Return ``shape`` ([batch, *dims], a list, tuple or torch.Size of positive integers)
    as a tuple of ints."""
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"{name} must be a sequence [batch, *dims] of positive integers, "
                        f"{_got(shape)}")
    shown = tuple(shape)
    if not all(is_integer(s) for s in shape):
        raise TypeError(f"{name} must be a sequence [batch, *dims] of positive integers, got "
                        f"{shown}")
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"{name} must be [batch, *dims] with positive sizes, got {shown}")
    return tuple(int(s) for s in shape)


def check_floating_dtype(name: str, dtype: object) -> torch.dtype:
    """Check that ``dtype`` is a floating-point torch.dtype."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a floating torch.dtype such as torch.float64, "
                        f"{_got(dtype)}")
    if not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype such as torch.float64, got "
                        f"{dtype}")
    return dtype


def check_state(name: str, x: object, *, min_dim: int = 1,
                dtype_rule: str = "be a floating-point tensor") -> Tensor:
    """Check that ``x`` is a floating tensor [batch, *dims] (at least ``min_dim``
    dimensions); ``dtype_rule`` words the dtype requirement ("{name} must {dtype_rule},
    got dtype ...")."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [batch, *dims], {_got(x)}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have shape [batch, *dims] (at least {min_dim} "
                         f"dimension(s)), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must {dtype_rule}, got dtype {x.dtype}")
    return x


def check_tensor(name: str, x: object) -> Tensor:
    """:func:`check_state` as the solvers' entry points word it: a floating-point state
    [batch, *dims]."""
    return check_state(name, x, dtype_rule="have a floating dtype (float32 or float64)")


def first_nonfinite(x: Tensor) -> Optional[Tuple[Tuple[int, ...], float]]:
    """(index, value) of the first NaN or inf entry of x, or None if all are finite (one
    host sync)."""
    bad = ~torch.isfinite(x)
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in bad.nonzero()[0])
    return index, float(x[index])


def check_finite(name: str, x: Tensor) -> Tensor:
    """Check that x [batch, *dims] has no NaN or inf entries, naming the first bad one."""
    found = first_nonfinite(x)
    if found is not None:
        index, value = found
        kind = "NaN" if math.isnan(value) else "inf"
        raise ValueError(f"{name} must be finite, but {name}[{index[0]}] contains {kind} "
                         f"({name}[{', '.join(map(str, index))}] = {value}; shape "
                         f"{tuple(x.shape)})")
    return x


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same (an index left out means the current device)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


# -- times -------------------------------------------------------------------------------
def check_time_point(name: str, value: object) -> float:
    """One finite real time (a number or a one-element tensor), returned as a float."""
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(f"{name} must be a single time, got a tensor of shape {tuple(value.shape)}")
    return check_real(name, value)


def check_time_span(t0: object, t1: object) -> Tuple[float, float]:
    """The end points ``t0 != t1`` of a solve (either order), as floats."""
    t0, t1 = check_time_point("t0", t0), check_time_point("t1", t1)
    if t0 == t1:
        raise ValueError(f"t0 and t1 must differ, got t0 = t1 = {t0}")
    return t0, t1


def check_time_grid(name: str, ts: TimeLike, like: Tensor) -> Tuple[Tensor, Tensor]:
    """Validate a grid of times and return it on the CPU and on ``like``'s device.

    The grid needs at least two points, all finite, strictly increasing or strictly
    decreasing once rounded to ``like.dtype``.

    Returns:
        ``(ts_cpu, ts_dev)``: both ``[n]`` of ``like.dtype``; the CPU copy serves host-side
        bookkeeping (callbacks, messages) without device synchronisation.
    """
    ts_cpu = as_real_tensor(name, ts, torch.float64, "cpu")
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

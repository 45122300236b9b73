"""Input checks shared by every public entry point.

Each check raises ``ValueError``/``TypeError`` naming the argument, the value received
and what is allowed (DESIGN.md, "Numerical conventions").
"""
from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Optional, Tuple, Union

import torch
from torch import Tensor

TimeLike = Union[float, int, Tensor]

# Times computed in float32 (e.g. a linspace ending at T) may overshoot [0, T] by a few
# ulps; such values are accepted and clamped. Anything further out is an error.
_TIME_SLACK = 1e-6


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


def check_score_and_sde(score: object, sde: object, *, name: str = "score") -> None:
    """Check the (score, sde) pair an entry point takes: ``score`` callable as
    ``score(x, t)`` (``name`` is the argument's name, e.g. "net" for ScoreModel) and
    ``sde`` a scoresde SDE."""
    from .sdes.base import SDE
    check_callable(name, score, f"{name}(x, t)")
    check_instance("sde", sde, SDE, "a scoresde SDE (VPSDE, VESDE, ...)")


def check_real(name: str, value: object, *, positive: bool = False,
               nonnegative: bool = False, finite: bool = True) -> float:
    """Return ``value`` as a float after checking it is a real number with the given sign."""
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {_describe(value)} "
                        f"of type {type(value).__name__}")
    value = float(value)
    if finite and not math.isfinite(value):
        sign = " > 0" if positive else " >= 0" if nonnegative else ""
        raise ValueError(f"{name} must be a finite number{sign}, got {value}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an int after checking it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {_describe(value)} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value: object, allowed) -> str:
    """Check that ``value`` is one of ``allowed`` (strings), listing them if not."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of "
                         f"{', '.join(repr(a) for a in allowed)}")
    return value


def check_shape(name: str, shape: object) -> Tuple[int, ...]:
    """Return ``shape`` ([batch, *dims], a list, tuple or torch.Size of positive integers)
    as a tuple of ints."""
    if not isinstance(shape, (list, tuple)):
        raise TypeError(f"{name} must be a sequence [batch, *dims] of positive integers, "
                        f"{_got(shape)}")
    shown = tuple(shape)
    if any(isinstance(s, bool) or not isinstance(s, Integral) for s in shape):
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


def check_state(name: str, x: object, *, min_dim: int = 1) -> Tensor:
    """Check that ``x`` is a floating tensor [batch, *dims] with finite entries."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [batch, *dims], {_got(x)}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have shape [batch, *dims] (at least {min_dim} "
                         f"dimension(s)), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_time(t: TimeLike, T: float, *, batch: Optional[int] = None,
               like: Optional[Tensor] = None, name: str = "t") -> Tensor:
    """Validate a time argument and return it as a [batch] tensor.

    Args:
        t: a float, a 0-d tensor or a [batch] tensor of times in [0, T].
        T: the end time of the SDE.
        batch: the batch size to broadcast to (None: keep t's own length, 1 for scalars).
        like: a tensor whose dtype and device the result takes (default: t's own, or
            torch's default dtype on the CPU for Python numbers).
        name: the argument name used in error messages.

    Returns:
        A floating [batch] tensor.
    """
    dtype = like.dtype if like is not None and like.is_floating_point() else None
    device = like.device if like is not None else None
    if isinstance(t, Tensor):
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
        tt = t.to(dtype=dtype or (t.dtype if t.is_floating_point()
                                  else torch.get_default_dtype()), device=device)
    elif isinstance(t, Real) and not isinstance(t, bool):
        tt = torch.tensor(float(t), dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        raise TypeError(f"{name} must be a float or a [batch] tensor, {_got(t)}")
    if tt.dim() > 1:
        raise ValueError(f"{name} must be a float or a 1-D [batch] tensor, got shape "
                         f"{tuple(tt.shape)}")
    if tt.dim() == 1 and batch is not None and tt.shape[0] not in (batch, 1):
        raise ValueError(f"{name} has shape {tuple(tt.shape)} but the state has batch "
                         f"size {batch}; pass a float or a tensor of shape [{batch}]")
    if torch.isnan(tt).any():
        raise ValueError(f"{name} must lie in [0, T] = [0, {T:g}], got {_describe(t)}"
                         + (", which contains NaN" if isinstance(t, Tensor) else ""))
    slack = _TIME_SLACK * max(T, 1.0)
    if (tt < -slack).any() or (tt > T + slack).any():
        raise ValueError(f"{name} must lie in [0, T] = [0, {T:g}], got "
                         f"{_describe(t)} (min {tt.min().item():g}, max {tt.max().item():g})")
    tt = tt.clamp(0.0, T)
    n = batch if batch is not None else (tt.shape[0] if tt.dim() == 1 else 1)
    return tt.reshape(-1).expand(n) if tt.numel() == 1 else tt




def first_float_parameter(score: object) -> Optional[Tensor]:
    """The first floating-point parameter of an nn.Module score, else None: the dtype and
    device a network computes in (sample() and log_likelihood() match data to it)."""
    if isinstance(score, torch.nn.Module):
        for p in score.parameters():
            if p.is_floating_point():
                return p
    return None


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same (an index left out means the current device)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def check_matches_network(name: str, x: Tensor, score: object) -> None:
    """A clear error when x's dtype or device differs from the score network's parameters."""
    param = first_float_parameter(score)
    if param is not None and (param.dtype != x.dtype or param.device != x.device):
        raise ValueError(f"{name} is {x.dtype} on {x.device} but the score network's "
                         f"parameters are {param.dtype} on {param.device}; make them match "
                         f"(e.g. {name}.to({param.dtype}) or model.to({x.dtype}))")

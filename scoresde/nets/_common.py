"""What the reference networks share: the check of their inputs (x, t_in)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

from torch import Tensor, nn


def check_inputs(x: Tensor, t_in: Tensor, shape: Tuple[Union[int, str], ...]) -> Tensor:
    """Check that x has ``shape`` (an int is a required size, a string such as "batch" or
    "H" any size) and return t_in as [batch] (:func:`check_time_input`)."""
    if not isinstance(x, Tensor) or x.dim() != len(shape) or any(
            isinstance(want, int) and size != want for size, want in zip(x.shape, shape)):
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape [{', '.join(map(str, shape))}], got {got}")
    return check_time_input(t_in, x.shape[0])


def check_time_input(t: Tensor, batch: int) -> Tensor:
    """Accept a [batch] (or 0-d / [1]) float or integer tensor and return it as [batch]."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t_in must be a [batch] tensor, got {type(t).__name__}")
    if t.dim() == 0 or (t.dim() == 1 and t.shape[0] == 1):
        return t.reshape(1).expand(batch)
    if t.dim() != 1 or t.shape[0] != batch:
        raise ValueError(f"t_in must have shape [{batch}] (the batch size of x), got "
                         f"{tuple(t.shape)}")
    return t


def class_term(embed: Optional[nn.Module], cond: Optional[Tensor], batch: int,
               net: str) -> Union[Tensor, float]:
    """The class embedding to add to the time embedding: ``embed(cond)`` for a conditional
    network (cond None: the null token), 0 for an unconditional one (which takes no cond)."""
    if embed is None:
        if cond is not None:
            raise ValueError(f"this {net} is unconditional; cond needs a network built with "
                             f"num_classes=C")
        return 0.0
    return embed(cond, batch)

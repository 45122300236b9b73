"""What the reference networks share: the check of their time input."""
from __future__ import annotations

from torch import Tensor


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

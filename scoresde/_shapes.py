"""Shape helpers: [batch] times and per-sample coefficients against states [batch, *dims].

Every module that broadcasts a per-sample quantity against a state uses these; they know
nothing about SDEs or scores.
"""
from __future__ import annotations

import torch
from torch import Tensor

def batch_view(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a [batch] tensor so that it broadcasts against x of shape [batch, *dims]."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def batch_time(t: Tensor, x: Tensor) -> Tensor:
    """A 0-d (or [batch]) solver time as a [batch] tensor of x's dtype and device."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t


def scalar_time(t: Tensor) -> Tensor:
    """A [batch] time that is one value expanded over the batch (as ``batch_time`` makes it),
    as a [1] tensor: coefficients alpha(t), beta(t), ... are then computed once instead of
    once per sample (the same values; they broadcast against x through ``batch_view``)."""
    return t[:1] if t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0 else t


# A sampler's grid times carry their marginal coefficients (samplers.grid.Grid.build): a
# score called at one grid time expanded over the batch reads them instead of recomputing
# them at every evaluation (the same values: computed by the same function on the grid).
_COEFFICIENTS = "_scoresde_coefficients"


def attach_coefficients(t: Tensor, owner: object, alpha: Tensor, std: Tensor) -> None:
    """Record (alpha, std) [n] of ``owner`` (an SDE) at the times t [n] on t itself."""
    setattr(t, _COEFFICIENTS, (owner, alpha, std))


def attached_coefficients(t: Tensor, owner: object):
    """(alpha, std) as [1] tensors when t is one entry of a tensor with attached
    coefficients of ``owner``, expanded over the batch (``t[i:i+1].expand(batch)``);
    else None."""
    base = t._base
    if base is None or t.dim() != 1 or t.stride(0) != 0:
        return None
    table = getattr(base, _COEFFICIENTS, None)
    if table is None or table[0] is not owner or base.dim() != 1:
        return None
    i = (t.storage_offset() - base.storage_offset()) // max(1, base.stride(0))
    return table[1][i:i + 1], table[2][i:i + 1]

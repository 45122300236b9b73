"""Sinusoidal time embedding (Vaswani et al. 2017, Sec. 3.5; as used by DDPM, Ho et al. 2020)."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import check_int, is_real_number

#: The class label of the learned null token: the unconditional model of classifier-free
#: guidance (Ho & Salimans 2022, Sec. 3.2).
NULL_LABEL = -1


class SinusoidalEmbedding(nn.Module):
    """Map a [batch] time input to [batch, dim] sinusoidal features.

    For frequencies w_k = max_period^(-k / half), k = 0..half-1 with half = dim // 2,

        emb(t) = [sin(t w_0), ..., sin(t w_{half-1}), cos(t w_0), ..., cos(t w_{half-1})]

    (Vaswani et al. 2017, Sec. 3.5, with sines and cosines grouped instead of interleaved,
    as in DDPM's ``get_timestep_embedding``). An odd ``dim`` gets one trailing zero. The
    input may be a float tensor (continuous time, e.g. t * 999) or a long tensor (DDPM
    indices); the periods span 2 pi .. 2 pi max_period, which suits inputs in [0, ~1000].

    The module has no parameters; the output dtype is ``dtype`` if given, else t's dtype
    for floating t, else torch's default dtype. The networks pass their parameter dtype.
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        dim = check_int("dim", dim, minimum=2)
        if not (is_real_number(max_period) and max_period > 1):
            raise ValueError(f"max_period must be a number > 1, got {max_period!r}")
        self.dim = dim
        self.max_period = float(max_period)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}"

    def forward(self, t: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
        if not isinstance(t, Tensor):
            raise TypeError(f"t must be a [batch] tensor, got {type(t).__name__}")
        if t.dim() == 0:
            t = t.reshape(1)
        if t.dim() != 1:
            raise ValueError(f"t must be a [batch] tensor, got shape {tuple(t.shape)}")
        if dtype is None:
            dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        half = self.dim // 2
        # Compute the phases in float64 where the device allows it (long DDPM indices
        # times high frequencies lose digits in float32), then cast.
        work = torch.float64 if t.device.type != "mps" else torch.float32
        k = torch.arange(half, dtype=work, device=t.device)
        freqs = torch.exp(-math.log(self.max_period) * k / half)
        phase = t.to(work)[:, None] * freqs[None, :]
        emb = torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)
        if self.dim % 2:
            emb = torch.nn.functional.pad(emb, (0, 1))
        return emb.to(dtype)


class ClassEmbedding(nn.Module):
    """A learned embedding of class labels 0..num_classes-1 plus a null token.

    ``forward(cond, batch)`` maps a [batch] integer tensor to [batch, dim]; the label
    ``NULL_LABEL`` (-1), or ``cond=None`` for the whole batch, selects the null token, the
    unconditional model trained by condition dropout (Ho & Salimans 2022, Sec. 3.2).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.table = nn.Embedding(self.num_classes + 1, dim)  # the last row is the null token

    def forward(self, cond: Optional[Tensor], batch: int) -> Tensor:
        device = self.table.weight.device
        if cond is None:
            return self.table.weight[-1].expand(batch, -1)
        if not isinstance(cond, Tensor) or cond.dtype.is_floating_point or cond.dim() != 1 \
                or cond.shape[0] != batch:
            raise ValueError(f"cond must be a [{batch}] integer tensor of class labels, got "
                             f"{cond!r}")
        labels = cond.to(device).long()
        if bool(((labels < NULL_LABEL) | (labels >= self.num_classes)).any()):
            raise ValueError(f"cond must hold labels in [0, {self.num_classes}) or "
                             f"{NULL_LABEL} (the null token), got {labels.unique().tolist()}")
        return self.table(torch.where(labels == NULL_LABEL, self.num_classes, labels))

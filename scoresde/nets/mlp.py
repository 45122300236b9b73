"""A residual MLP for vectors [batch, dim] with a sinusoidal time embedding."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .._validation import check_int
from ._common import check_inputs, class_term
from .embedding import ClassEmbedding, SinusoidalEmbedding


class _ResidualBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(h) + P temb): a pre-activation residual block with time added."""

    def __init__(self, hidden: int):
        super().__init__()
        self.lin1 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, hidden)
        self.lin2 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        u = self.lin1(self.act(h)) + self.time_proj(temb)
        return h + self.lin2(self.act(u))


class MLP(nn.Module):
    """Noise / score network for vectors: ``MLP(dim)(x [b, dim], t_in [b]) -> [b, dim]``.

    The time input (float, e.g. t * 999, or long DDPM indices) goes through a
    :class:`SinusoidalEmbedding` of size ``time_dim`` and a two-layer SiLU MLP to a
    ``hidden``-sized embedding. That embedding is concatenated with x at the input layer
    and added (through a per-block linear map) inside each of the ``depth`` residual
    blocks; a SiLU and a linear layer map back to ``dim``.

    Args:
        dim: data dimension.
        hidden: width of the hidden layers.
        depth: number of residual blocks (two linear layers each).
        time_dim: size of the sinusoidal time features.
        max_period: the embedding's longest period / (2 pi).
        num_classes: make the network class-conditional, ``forward(x, t_in, cond)``: a
            learned :class:`ClassEmbedding` (with the null token for cond -1 or None) is
            added to the time embedding. None (default): unconditional.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, time_dim: int = 64,
                 max_period: float = 10000.0, num_classes: Optional[int] = None):
        super().__init__()
        self.dim = check_int("dim", dim)
        self.hidden = check_int("hidden", hidden)
        self.depth = check_int("depth", depth)
        self.time_dim = check_int("time_dim", time_dim, minimum=2)
        self.max_period = float(max_period)
        self.embed = SinusoidalEmbedding(time_dim, max_period)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(),
                                      nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim + hidden, hidden)
        self.blocks = nn.ModuleList(_ResidualBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        self.class_embed = None if num_classes is None else ClassEmbedding(num_classes, hidden)

    def config(self) -> dict:
        """The constructor arguments (stored in checkpoints to rebuild the network)."""
        return {"dim": self.dim, "hidden": self.hidden, "depth": self.depth,
                "time_dim": self.time_dim, "max_period": self.max_period,
                "num_classes": self.num_classes}

    def forward(self, x: Tensor, t_in: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        t_in = check_inputs(x, t_in, ("batch", self.dim))
        temb = self.time_mlp(self.embed(t_in, dtype=self.inp.weight.dtype))
        temb = temb + class_term(self.class_embed, cond, x.shape[0], "MLP")
        h = self.inp(torch.cat([x, temb], dim=1))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h)

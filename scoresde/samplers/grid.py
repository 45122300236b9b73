"""A sampler's time grid with its marginal coefficients, computed once per solve.

Every fixed-step sampler walks a grid t_0 = T > t_1 > ... > t_n. Its steps need alpha(t),
std(t) and the half log-SNR lambda(t) = log(alpha/std) (DPM-Solver's lambda) at the grid
times; :class:`Grid` computes them once, on the state's dtype and device, and a step
``i`` (from t_i to t_{i+1}) reads them with :meth:`Grid.at`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from torch import Tensor

from .._shapes import batch_view
from ..sdes import SDE


@dataclass(frozen=True)
class Grid:
    """Times [n] and their coefficients [n], all of the state's dtype and device.

    Attributes:
        ts: float64 times on the CPU, as the grid was built (for messages, host logic).
        t: the times on the state's dtype and device.
        alpha, std: marginal coefficients, x_t = alpha x_0 + std z.
        lam: lambda = log(alpha/std) (inf at t = 0).
    """

    ts: Tensor
    t: Tensor
    alpha: Tensor
    std: Tensor
    lam: Tensor

    @classmethod
    def build(cls, sde: SDE, ts: Tensor, like: Tensor) -> "Grid":
        """The grid ``ts`` (float64 [n]) on ``like``'s dtype and device, with coefficients."""
        t = ts.to(like)
        alpha, std = sde._marginal_coeffs(t)
        return cls(ts=ts, t=t, alpha=alpha, std=std, lam=sde._half_log_snr(t))

    def __len__(self) -> int:
        return self.t.shape[0]

    def time(self, i: int, x: Tensor) -> Tensor:
        """t_i as a [batch] tensor for the score (one value expanded over the batch)."""
        return self.t[i:i + 1].expand(x.shape[0])

    def at(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(alpha, std, lambda) at t_i, shaped to broadcast against x."""
        return (batch_view(self.alpha[i:i + 1], x), batch_view(self.std[i:i + 1], x),
                batch_view(self.lam[i:i + 1], x))

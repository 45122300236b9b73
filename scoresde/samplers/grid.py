"""A sampler's time grid with its marginal coefficients, computed once per solve.

Every fixed-step sampler walks a grid t_0 = T > t_1 > ... > t_n. Its steps need alpha(t),
std(t) and the half log-SNR lambda(t) = log(alpha/std) (DPM-Solver's lambda) at the grid
times; :class:`Grid` computes them once, on the state's dtype and device, and a step
``i`` (from t_i to t_{i+1}) reads them with :meth:`Grid.at`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor

from .._shapes import attach_coefficients, batch_view
from ..sdes import SDE, VPTypeSDE


@dataclass(frozen=True)
class Grid:
    """Times [n] and their coefficients [n], all of the state's dtype and device.

    Attributes:
        ts: float64 times on the CPU, as the grid was built (for messages, host logic).
        t: the times on the state's dtype and device.
        alpha, std: marginal coefficients, x_t = alpha x_0 + std z.
        lam: lambda = log(alpha/std) (inf at t = 0).
        log_alpha: log alpha for VP-type SDEs (the DDPM/DDIM updates' log alphabar / 2),
            else None.
    """

    ts: Tensor
    t: Tensor
    alpha: Tensor
    std: Tensor
    lam: Tensor

    log_alpha: Optional[Tensor] = None

    @classmethod
    def build(cls, sde: SDE, ts: Tensor, like: Tensor) -> "Grid":
        """The grid ``ts`` (float64 [n]) on ``like``'s dtype and device, with coefficients.

        The times carry alpha and std (``attach_coefficients``), so a ``ScoreModel`` of the
        same SDE called at :meth:`time` reads them instead of recomputing them per call."""
        t = ts.to(like).clone()          # its own tensor: the coefficients are attached to it
        alpha, std = sde._marginal_coeffs(t)
        attach_coefficients(t, sde, alpha, std)
        log_alpha = sde._log_alpha(t) if isinstance(sde, VPTypeSDE) else None
        return cls(ts=ts, t=t, alpha=alpha, std=std, lam=sde._half_log_snr(t),
                   log_alpha=log_alpha)

    def __len__(self) -> int:
        return self.t.shape[0]

    def time(self, i: int, x: Tensor) -> Tensor:
        """t_i as a [batch] tensor for the score (one value expanded over the batch)."""
        return self.t[i:i + 1].expand(x.shape[0])

    def at(self, i: int, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(alpha, std, lambda) at t_i, shaped to broadcast against x."""
        return (batch_view(self.alpha[i:i + 1], x), batch_view(self.std[i:i + 1], x),
                batch_view(self.lam[i:i + 1], x))

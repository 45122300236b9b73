"""The sub-VP SDE of Song et al. (2021), eq. 12."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .base import SDE
from .vp import LinearBeta


class SubVPSDE(LinearBeta, SDE):
    """dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw (Song et al. 2021, eq. 12).

    Same mean coefficient alpha(t) as the VPSDE with the same betas, and std(t) = 1 - alpha(t)^2
    (eq. 29), below the VP std at every t (hence "sub-VP"); the prior is N(0, I).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self._init_linear_beta(beta_min, beta_max)

    def beta(self, t) -> Tensor:
        """The noise rate beta(t), [batch]."""
        return self._beta(self.time(t))

    def coefficients(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        beta = self._beta(t)
        # exp(-2 int_0^t beta) = alpha(t)^4
        discount = -torch.expm1(4.0 * self._log_alpha(t))
        return -0.5 * beta, torch.sqrt(beta * discount)

    def _marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        return torch.exp(log_alpha), -torch.expm1(2.0 * log_alpha)

"""The variance-exploding SDE of Song et al. (2021), eq. 9 (the SMLD / NCSN family)."""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor

from solvers.validation import check_real

from .base import SDE


class VESDE(SDE):
    """dx = sigma(t) sqrt(2 log(sigma_max/sigma_min)) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^t.

    Song et al. 2021, eq. 30. As in score_sde, the marginal std is sigma(t) itself
    (std(0) = sigma_min: data are taken as already perturbed by sigma_min), the mean
    coefficient is 1, and the prior is N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min = check_real("sigma_min", sigma_min, positive=True)
        self.sigma_max = check_real("sigma_max", sigma_max, positive=True)
        if not self.sigma_min < self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, "
                             f"sigma_max={sigma_max}")
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def config(self) -> dict:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def coefficients(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        # g(t)^2 = d sigma(t)^2 / dt = 2 sigma(t)^2 log(sigma_max / sigma_min)
        return torch.zeros_like(t), self.sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def _marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

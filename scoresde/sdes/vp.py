"""Continuous variance-preserving schedules: linear beta (VPSDE) and cosine (CosineVPSDE)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from solvers.validation import check_real

from .base import VPTypeSDE


class LinearBeta:
    """The linear noise rate beta(t) = beta_min + t (beta_max - beta_min) on [0, 1], shared
    by the VP and sub-VP SDEs (Song et al. 2021, App. B)."""

    def _init_linear_beta(self, beta_min: float, beta_max: float) -> None:
        self.beta_min = check_real("beta_min", beta_min, nonnegative=True)
        self.beta_max = check_real("beta_max", beta_max, positive=True)
        if not self.beta_min < self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got beta_min={beta_min}, "
                             f"beta_max={beta_max}")

    def config(self) -> dict:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max, "N": self.N}

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        # log alpha(t) = -1/2 int_0^t beta = -t^2 (b1 - b0)/4 - t b0/2 (Song et al. 2021, eq. 33)
        return -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


class VPSDE(LinearBeta, VPTypeSDE):
    """VP SDE with linear beta(t) = beta_min + t (beta_max - beta_min) on [0, 1].

    dx = -beta(t)/2 x dt + sqrt(beta(t)) dw (Song et al. 2021, eq. 11); the continuous
    limit of DDPM with beta_i = beta(i/N)/N.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self._init_linear_beta(beta_min, beta_max)


class CosineVPSDE(VPTypeSDE):
    """VP SDE with the cosine schedule of Nichol & Dhariwal (2021), eq. 17, in continuous time.

    alphabar(t) = h(t)/h(0), h(t) = cos^2(pi/2 (t + s)/(1 + s)); beta(t) = -d/dt log alphabar
    = pi/(1 + s) tan(pi/2 (t + s)/(1 + s)). Nichol & Dhariwal clip the discrete beta_i at
    0.999 to avoid the singularity at t = 1; in continuous time we clip beta(t) at
    beta_max (999 = 0.999 N for N = 1000): beyond the clip time t_c, log alphabar falls
    linearly with slope -beta_max. T stays 1.
    """

    def __init__(self, s: float = 0.008, beta_max: float = 999.0, N: int = 1000):
        super().__init__(N)
        self.s = check_real("s", s, positive=True)
        self.beta_max = check_real("beta_max", beta_max, positive=True)
        k = math.pi / (1.0 + self.s)
        if not self.beta_max > k * math.tan(0.5 * math.pi * self.s / (1.0 + self.s)):
            raise ValueError(f"beta_max={beta_max} is below beta(0) of the cosine schedule; "
                             f"it must exceed {k * math.tan(0.5 * k * self.s):.4g}")
        # beta(t_c) = beta_max  <=>  pi/2 (t_c + s)/(1 + s) = atan(beta_max / k)
        self.t_clip = min(1.0, 2.0 / k * math.atan(self.beta_max / k) - self.s)
        self._log_h0 = 2.0 * math.log(math.cos(0.5 * k * self.s))

    def config(self) -> dict:
        return {"s": self.s, "beta_max": self.beta_max, "N": self.N}

    def _log_alphabar_unclipped(self, t: Tensor) -> Tensor:
        theta = 0.5 * math.pi * (t + self.s) / (1.0 + self.s)
        return (2.0 * torch.log(torch.cos(theta)) - self._log_h0).clamp(max=0.0)

    def _beta(self, t: Tensor) -> Tensor:
        theta = 0.5 * math.pi * (t.clamp(max=self.t_clip) + self.s) / (1.0 + self.s)
        return torch.where(t < self.t_clip, math.pi / (1.0 + self.s) * torch.tan(theta),
                           torch.full_like(t, self.beta_max))

    def _log_alpha(self, t: Tensor) -> Tensor:
        tc = torch.full_like(t, self.t_clip)
        inside = self._log_alphabar_unclipped(t.clamp(max=self.t_clip))
        beyond = self._log_alphabar_unclipped(tc) - self.beta_max * (t - tc).clamp(min=0.0)
        return 0.5 * torch.where(t <= self.t_clip, inside, beyond)

"""The standard error of a mean, written once for likelihoods, bits/dim and the CLI."""
from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor


def standard_error(values: Tensor, dim: int = -1) -> Tensor:
    """std(values, ddof=1) / sqrt(n) along ``dim`` (n = values.shape[dim]): the standard
    error of the mean of n independent estimates; NaN where n = 1."""
    n = values.shape[dim]
    if n < 2:
        return torch.full_like(values.select(dim, 0), float("nan"))
    return values.std(dim, unbiased=True) / math.sqrt(n)


def mean_stderr(values: Tensor) -> Tuple[float, float]:
    """(mean, standard error) of all entries of ``values`` as Python floats, in float64."""
    values = values.detach().to(torch.float64).reshape(-1)
    return float(values.mean()), float(standard_error(values))

"""Closed-form test problems shared by the solvers tests."""
from __future__ import annotations

import math

import torch
from torch import Tensor

DTYPE = torch.float64

# dx/dt = a(t) A x with a(t) = 1 + t: non-autonomous, so wrong stage times lower the order.
# Since a(t) A commutes with itself at all times, x(t) = expm((alpha(t) - alpha(s)) A) x(s),
# alpha(t) = t + t^2 / 2.
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.3]], dtype=DTYPE)
X0 = torch.tensor([[1.0, 0.0], [0.5, 2.0], [-1.0, 0.3]], dtype=DTYPE)


def linear_field(t: Tensor, x: Tensor) -> Tensor:
    return (1 + t) * (x @ A.T.to(x.dtype))


def linear_solution(x_s: Tensor, s: float, t: float) -> Tensor:
    """State at time t of the linear ODE through x_s at time s (either order of s, t)."""
    alpha = lambda u: u + u * u / 2
    return x_s @ torch.linalg.matrix_exp((alpha(t) - alpha(s)) * A).T.to(x_s.dtype)


def ou_moments(x0: float, theta: float, sigma: float, duration: float) -> tuple[float, float]:
    """Mean and variance of dx = -theta x dt + sigma dW after ``duration``, from x0 fixed."""
    mean = x0 * math.exp(-theta * duration)
    var = sigma**2 * (1 - math.exp(-2 * theta * duration)) / (2 * theta)
    return mean, var


def fitted_slope(hs, errors) -> float:
    """Least-squares slope of log(error) against log(h)."""
    lx = torch.log(torch.tensor(hs, dtype=DTYPE))
    ly = torch.log(torch.tensor(errors, dtype=DTYPE))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())

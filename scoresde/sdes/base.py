"""The forward-SDE interface shared by every noise schedule.

Every SDE here is linear with scalar coefficients,

    dx = f(t) x dt + g(t) dw,                          (Song et al. 2021, eq. 5)

so that x_t | x_0 ~ N(alpha(t) x_0, std(t)^2 I). A subclass gives two things: the
coefficients (f, g) and the marginal coefficients (alpha, std); every other method
(drift/diffusion, marginals, prior, exact discretization, log-SNR and its half
lambda = log(alpha/std)) is written once here.
"""
from __future__ import annotations

import abc
import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from solvers.validation import (_describe, _got, check_int, check_real, check_shape, check_state,
                                is_real_number)

from .._shapes import batch_view

#: A time argument: a float or a [batch] tensor in [0, T].
TimeLike = Union[float, int, Tensor]

# Times computed in float32 (e.g. a linspace ending at T) may overshoot [0, T] by a few
# ulps; such values are accepted and clamped. Anything further out is an error.
_TIME_SLACK = 1e-6


def check_time(t: TimeLike, T: float, *, batch: Optional[int] = None,
               like: Optional[Tensor] = None, name: str = "t") -> Tensor:
    """Validate a time argument in [0, T] and return it as a [batch] tensor (``SDE.time``).

    Args:
        t: a float, a 0-d tensor or a [batch] tensor of times in [0, T].
        T: the end time of the SDE.
        batch: the batch size to broadcast to (None: keep t's own length, 1 for scalars).
        like: a tensor whose dtype and device the result takes (default: t's own, or
            torch's default dtype on the CPU for Python numbers).
        name: the argument name used in error messages.

    Returns:
        A floating [batch] tensor.
    """
    dtype = like.dtype if like is not None and like.is_floating_point() else None
    device = like.device if like is not None else None
    if isinstance(t, Tensor):
        if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real tensor, got dtype {t.dtype}")
        tt = t.to(dtype=dtype or (t.dtype if t.is_floating_point()
                                  else torch.get_default_dtype()), device=device)
    elif is_real_number(t):
        tt = torch.tensor(float(t), dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        raise TypeError(f"{name} must be a float or a [batch] tensor, {_got(t)}")
    if tt.dim() > 1:
        raise ValueError(f"{name} must be a float or a 1-D [batch] tensor, got shape "
                         f"{tuple(tt.shape)}")
    if tt.dim() == 1 and batch is not None and tt.shape[0] not in (batch, 1):
        raise ValueError(f"{name} has shape {tuple(tt.shape)} but the state has batch "
                         f"size {batch}; pass a float or a tensor of shape [{batch}]")
    if torch.isnan(tt).any():
        raise ValueError(f"{name} must lie in [0, T] = [0, {T:g}], got {_describe(t)}"
                         + (", which contains NaN" if isinstance(t, Tensor) else ""))
    slack = _TIME_SLACK * max(T, 1.0)
    if (tt < -slack).any() or (tt > T + slack).any():
        raise ValueError(f"{name} must lie in [0, T] = [0, {T:g}], got "
                         f"{_describe(t)} (min {tt.min().item():g}, max {tt.max().item():g})")
    tt = tt.clamp(0.0, T)
    n = batch if batch is not None else (tt.shape[0] if tt.dim() == 1 else 1)
    return tt.reshape(-1).expand(n) if tt.numel() == 1 else tt


class SDE(abc.ABC):
    """A linear forward SDE on [0, T] with a Gaussian prior N(0, prior_std^2 I).

    Attributes:
        T: end time (1 for every schedule here).
        N: default number of discretization steps (Song et al. 2021, App. E).
    """

    T: float = 1.0

    def __init__(self, N: int = 1000):
        self.N = check_int("N", N, minimum=1)

    # -- what a schedule defines -----------------------------------------------------
    @abc.abstractmethod
    def coefficients(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """(f(t), g(t)), each [batch], for a validated [batch] time tensor."""

    @abc.abstractmethod
    def _marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        """(alpha(t), std(t)), each [batch], for a validated [batch] time tensor."""

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior N(0, prior_std^2 I) at t = T."""
        return 1.0

    def config(self) -> dict:
        """The constructor arguments, for checkpoints and ``repr``."""
        return {}

    # -- the shared interface --------------------------------------------------------
    def time(self, t: TimeLike, *, batch: Optional[int] = None,
             like: Optional[Tensor] = None) -> Tensor:
        """Validate ``t`` (float or [batch] tensor in [0, T]) and return a [batch] tensor."""
        return check_time(t, self.T, batch=batch, like=like)

    def sde(self, x: Tensor, t: TimeLike) -> Tuple[Tensor, Tensor]:
        """Drift f(t) x (shaped like x) and diffusion g(t) ([batch]) at x, t."""
        check_state("x", x)
        t = self.time(t, batch=x.shape[0], like=x)
        f, g = self.coefficients(t)
        return batch_view(f, x) * x, g

    def marginal_coeffs(self, t: TimeLike) -> Tuple[Tensor, Tensor]:
        """(alpha(t), std(t)), each [batch]: x_t = alpha x_0 + std z, z ~ N(0, I)."""
        return self._marginal_coeffs(self.time(t))

    def marginal_prob(self, x0: Tensor, t: TimeLike) -> Tuple[Tensor, Tensor]:
        """Mean (shaped like x0) and std ([batch]) of the transition x_t | x_0."""
        check_state("x0", x0)
        t = self.time(t, batch=x0.shape[0], like=x0)
        alpha, std = self._marginal_coeffs(t)
        return batch_view(alpha, x0) * x0, std

    def log_snr(self, t: TimeLike) -> Tensor:
        """log(alpha^2 / std^2), [batch]: the log signal-to-noise ratio (Kingma et al. 2021);
        log_snr = 2 lambda with lambda = :meth:`half_log_snr`."""
        return self._log_snr(self.time(t))

    def _log_snr(self, t: Tensor) -> Tensor:
        """:meth:`log_snr` for a validated [batch] time tensor."""
        alpha, std = self._marginal_coeffs(t)
        return 2.0 * (torch.log(alpha) - torch.log(std))

    def half_log_snr(self, t: TimeLike) -> Tensor:
        """lambda(t) = log(alpha / std) = log_snr / 2, [batch]: DPM-Solver's time variable
        (Lu et al. 2022, Sec. 3.1); +inf where std = 0 (t = 0 of the VP schedules)."""
        return self._half_log_snr(self.time(t))

    def _half_log_snr(self, t: Tensor) -> Tensor:
        """:meth:`half_log_snr` for a validated [batch] time tensor."""
        alpha, std = self._marginal_coeffs(t)
        return torch.log(alpha / std)

    def prior_sampling(self, shape: Sequence[int], generator: Optional[torch.Generator] = None,
                       dtype: Optional[torch.dtype] = None,
                       device: Optional[torch.device] = None) -> Tensor:
        """A draw from the prior N(0, prior_std^2 I) of the given shape [batch, *dims]."""
        shape = check_shape("shape", shape)
        if generator is not None and device is None:
            device = generator.device
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std * z

    def prior_logp(self, z: Tensor) -> Tensor:
        """[batch] log-density (nats) of z under the prior N(0, prior_std^2 I)."""
        check_state("z", z)
        d = z[0].numel()
        s2 = self.prior_std ** 2
        sq = z.reshape(z.shape[0], -1).pow(2).sum(-1)
        return -0.5 * d * math.log(2 * math.pi * s2) - 0.5 * sq / s2

    def discretize(self, x: Tensor, t: TimeLike, dt: Union[float, Tensor, None] = None
                   ) -> Tuple[Tensor, Tensor]:
        """One forward step from t - dt to t as x_t = x_{t-dt} + f + G z (Song et al. 2021, App. E).

        We use the exact transition of the linear SDE rather than its Euler step: with
        a = alpha(t)/alpha(t-dt), f = (a - 1) x and G^2 = std(t)^2 - a^2 std(t-dt)^2.
        For VP this is Song et al.'s f = (sqrt(1 - beta_i) - 1) x, G = sqrt(beta_i) with
        beta_i = 1 - alphabar(t)/alphabar(t-dt) (DDPM's beta at index times); for VE it is
        their G = sqrt(sigma_i^2 - sigma_{i-1}^2).

        Args:
            x: state [batch, *dims] at time t.
            t: float or [batch] times in [0, T].
            dt: step length > 0, a float or [batch] tensor (default T / N); t - dt is
                clamped at 0.
        Returns:
            f shaped like x and G of shape [batch].
        """
        check_state("x", x)
        t = self.time(t, batch=x.shape[0], like=x)
        if dt is None:
            dt = self.T / self.N
        elif isinstance(dt, Tensor):
            if not bool((dt > 0).all()):
                raise ValueError(f"dt must be > 0, got {dt.min().item()}")
        else:
            dt = check_real("dt", dt, positive=True)
        return self._discretize(x, t, dt)

    def _discretize(self, x: Tensor, t: Tensor, dt: Union[float, Tensor]
                    ) -> Tuple[Tensor, Tensor]:
        """:meth:`discretize` for a validated [batch] (or [1]) time t and step dt > 0."""
        s = (t - dt).clamp(min=0.0)
        alpha_t, std_t = self._marginal_coeffs(t)
        alpha_s, std_s = self._marginal_coeffs(s)
        a = alpha_t / alpha_s
        G2 = (std_t ** 2 - a ** 2 * std_s ** 2).clamp(min=0.0)
        return batch_view(a - 1.0, x) * x, torch.sqrt(G2)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items()
                         if not isinstance(v, (list, Tensor)))
        return f"{type(self).__name__}({args})"


class VPTypeSDE(SDE):
    """A variance-preserving SDE: f = -beta(t)/2, g = sqrt(beta(t)), std^2 = 1 - alpha^2.

    A schedule gives ``log_alpha(t)`` = log of the mean coefficient = (1/2) log alphabar(t)
    and ``beta(t)`` = -2 d/dt log_alpha(t) (Song et al. 2021, eq. 11 and App. B).
    """

    @abc.abstractmethod
    def _log_alpha(self, t: Tensor) -> Tensor:
        """log alpha(t) = (1/2) log alphabar(t) for a validated [batch] tensor."""

    @abc.abstractmethod
    def _beta(self, t: Tensor) -> Tensor:
        """beta(t) for a validated [batch] tensor."""

    def beta(self, t: TimeLike) -> Tensor:
        """The noise rate beta(t), [batch]."""
        return self._beta(self.time(t))

    def alphas_cumprod(self, t: TimeLike) -> Tensor:
        """alphabar(t) = alpha(t)^2, [batch]; DDPM's cumulative product of (1 - beta_i)."""
        return torch.exp(2.0 * self._log_alpha(self.time(t)))

    def coefficients(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        beta = self._beta(t)
        return -0.5 * beta, torch.sqrt(beta)

    def _marginal_coeffs(self, t: Tensor) -> Tuple[Tensor, Tensor]:
        log_alpha = self._log_alpha(t)
        # std = sqrt(1 - alphabar), with expm1 for accuracy as t -> 0; abs() makes it +0, not
        # -0 (= -expm1(0)), at t = 0, so that lambda = log(alpha/std) is +inf there.
        return (torch.exp(log_alpha),
                torch.sqrt((-torch.expm1(2.0 * log_alpha)).clamp(min=0.0)).abs())

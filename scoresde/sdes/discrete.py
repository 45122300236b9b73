"""A discrete DDPM noise schedule seen as a continuous-time VP SDE.

DDPM (Ho et al. 2020) fixes betas beta_0..beta_{N-1} and alphabar_i = prod_{j<=i} (1 - beta_j).
We place index i at time t_i = (i + 1)/N (so t_{N-1} = T = 1) and define a continuous
log alphabar(t) that passes through log alphabar_i at every t_i (and through 0 at t = 0)
by monotone piecewise-cubic Hermite interpolation (PCHIP; Fritsch & Carlson 1980). Then

    beta(t) = -d/dt log alphabar(t)    is continuous and >= 0, and
    alphas_cumprod(t_i) = alphabar_i   exactly,

so the VP SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dw has, at each index time, exactly the
DDPM marginal q(x_i | x_0) = N(sqrt(alphabar_i) x_0, (1 - alphabar_i) I). Continuous-time
solvers and likelihoods therefore apply to a model trained on integer timesteps; the
derivation is in docs/sdes.md.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from solvers.validation import _got, as_real_tensor, check_int, check_real

from .base import TimeLike, VPTypeSDE


def _pchip_slopes(y: Tensor) -> Tensor:
    """Slopes dy/du at unit-spaced knots y_0..y_N (Fritsch–Carlson, scipy's PchipInterpolator).

    Interior: harmonic mean of the neighbouring secants, 0 where they change sign.
    Ends: the three-point formula, limited so that monotonicity is preserved.
    """
    delta = y[1:] - y[:-1]
    d = torch.zeros_like(y)
    if delta.numel() == 1:
        d[:] = delta[0]
        return d
    left, right = delta[:-1], delta[1:]
    same_sign = (left * right) > 0
    harmonic = 2.0 / (1.0 / torch.where(same_sign, left, torch.ones_like(left))
                      + 1.0 / torch.where(same_sign, right, torch.ones_like(right)))
    d[1:-1] = torch.where(same_sign, harmonic, torch.zeros_like(left))

    def end(d0: Tensor, d1: Tensor) -> Tensor:
        s = (3.0 * d0 - d1) / 2.0
        if torch.sign(s) != torch.sign(d0):
            return torch.zeros_like(s)
        if torch.sign(d0) != torch.sign(d1) and s.abs() > 3.0 * d0.abs():
            return 3.0 * d0
        return s

    d[0] = end(delta[0], delta[1])
    d[-1] = end(delta[-1], delta[-2])
    return d


class DiscreteVPSDE(VPTypeSDE):
    """A DDPM schedule (any betas in (0, 1)) as a VP SDE on [0, 1].

    Args:
        betas: N betas in (0, 1): a 1-D tensor, NumPy array or sequence of numbers.

    Index i in {0..N-1} sits at time t_i = (i + 1)/N; ``index_to_time`` and
    ``time_to_index`` convert exactly (rounding, never truncation).
    """

    def __init__(self, betas: Union[Tensor, list, tuple]):
        betas = _open_unit_table("betas", betas)
        super().__init__(betas.numel())
        self.betas = betas
        self._alphas_cumprod = torch.cumprod(1.0 - betas, 0)
        # knots u = 0..N (u = t N) of log alphabar, with log alphabar(0) = 0
        self._knots = torch.cat([betas.new_zeros(1), torch.cumsum(torch.log1p(-betas), 0)])
        self._slopes = _pchip_slopes(self._knots)
        self._cache = {}

    @classmethod
    def linear(cls, N: int = 1000, beta_start: Optional[float] = None,
               beta_end: Optional[float] = None) -> "DiscreteVPSDE":
        """DDPM's linear schedule (Ho et al. 2020, Sec. 4): betas = linspace(beta_start, beta_end, N).

        Defaults scale with N as beta_start = 0.1/N, beta_end = 20/N (1e-4 and 0.02 at
        N = 1000, DDPM's values), so that N -> infinity tends to VPSDE(0.1, 20).
        """
        N = check_int("N", N, minimum=1)
        b0 = 0.1 / N if beta_start is None else check_real("beta_start", beta_start)
        b1 = 20.0 / N if beta_end is None else check_real("beta_end", beta_end)
        for name, given, value in (("beta_start", beta_start, b0), ("beta_end", beta_end, b1)):
            if given is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must lie in the open interval (0, 1), got {value}")
        return cls(torch.linspace(b0, b1, N, dtype=torch.float64))

    @classmethod
    def cosine(cls, N: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DiscreteVPSDE":
        """Nichol & Dhariwal (2021) eq. 17: beta_i = min(1 - abar(t_{i+1})/abar(t_i), max_beta)."""
        N = check_int("N", N, minimum=1)
        s = check_real("s", s, positive=True)
        u = torch.arange(N + 1, dtype=torch.float64) / N
        abar = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1.0 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        return cls(betas)

    def config(self) -> dict:
        return {"betas": self.betas.tolist()}

    def __repr__(self) -> str:
        return (f"DiscreteVPSDE(N={self.N}, betas[0]={self.betas[0].item():.4g}, "
                f"betas[-1]={self.betas[-1].item():.4g})")

    # -- index <-> time ---------------------------------------------------------------
    def index_to_time(self, i: Union[int, Tensor]) -> Tensor:
        """Time t_i = (i + 1)/N of DDPM index i in {0..N-1}."""
        i = torch.as_tensor(i)
        if i.is_floating_point():
            raise TypeError(f"i must be an integer index, got dtype {i.dtype}")
        if (i < 0).any() or (i >= self.N).any():
            raise ValueError(f"i must lie in {{0..{self.N - 1}}}, got {i.tolist()}")
        return (i.to(torch.float64) + 1.0) / self.N

    def time_to_index(self, t: TimeLike) -> Tensor:
        """Nearest DDPM index round(t N - 1), clamped to {0..N-1}, as torch.long."""
        return self._index(self.time(t))

    def _index(self, t: Tensor) -> Tensor:
        """:meth:`time_to_index` for a validated [batch] time tensor (what a network trained
        on integer timesteps receives)."""
        return torch.round(t * self.N - 1.0).clamp(0, self.N - 1).long()

    def _fractional_index(self, t: Tensor) -> Tensor:
        """The index as a float, t N - 1 clamped at 0 (index i at t_i = (i + 1)/N), for a
        validated [batch] time tensor."""
        return (t * self.N - 1.0).clamp(min=0.0)

    # -- the interpolated schedule ----------------------------------------------------
    def _table(self, like: Tensor):
        key = (like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = (self._knots.to(like), self._slopes.to(like),
                                self._alphas_cumprod.to(like))
        return self._cache[key]

    def _hermite(self, t: Tensor, derivative: bool) -> Tensor:
        y, d, _ = self._table(t)
        u = t * self.N
        k = u.floor().clamp(0, self.N - 1)
        s = u - k
        k = k.long()
        y0, y1, d0, d1 = y[k], y[k + 1], d[k], d[k + 1]
        if derivative:  # d/du of the Hermite cubic
            return ((6 * s * s - 6 * s) * (y0 - y1) + (3 * s * s - 4 * s + 1) * d0
                    + (3 * s * s - 2 * s) * d1)
        s2, s3 = s * s, s * s * s
        return ((2 * s3 - 3 * s2 + 1) * y0 + (s3 - 2 * s2 + s) * d0
                + (-2 * s3 + 3 * s2) * y1 + (s3 - s2) * d1)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * self._hermite(t, derivative=False)

    def _beta(self, t: Tensor) -> Tensor:
        # beta(t) = -d/dt log alphabar(t) = -N d/du log alphabar
        return (-self.N * self._hermite(t, derivative=True)).clamp(min=0.0)


def _open_unit_table(name: str, values: Union[Tensor, list, tuple]) -> Tensor:
    """``values`` as a non-empty 1-D float64 CPU tensor with every entry in (0, 1), else a
    ValueError naming ``name``, the first bad index and its value (betas, alphas_cumprod)."""
    table = as_real_tensor(name, values, torch.float64, "cpu")
    if table.dim() != 1 or table.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got shape "
                         f"{tuple(table.shape)}")
    bad = ~((table > 0) & (table < 1))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"{name} must lie in the open interval (0, 1); {name}[{i}] = "
                         f"{table[i].item()}")
    return table


# -- the alphas_cumprod table (diffusers' ``scheduler.alphas_cumprod``) -----------------------
def betas_from_alphas_cumprod(table: Union[Tensor, list, tuple]) -> Tensor:
    """The betas of a table alphabar_0 > ... > alphabar_{N-1} in (0, 1), float64 [N]:
    beta_0 = 1 - alphabar_0, beta_i = 1 - alphabar_i/alphabar_{i-1} (Ho et al. 2020, Sec. 2:
    alphabar_i = prod_{j<=i} (1 - beta_j))."""
    table = _open_unit_table("alphas_cumprod", table)
    if (table[1:] >= table[:-1]).any():
        i = int((table[1:] >= table[:-1]).nonzero()[0]) + 1
        raise ValueError(f"alphas_cumprod must be strictly decreasing; alphas_cumprod[{i}] = "
                         f"{table[i].item()} >= alphas_cumprod[{i - 1}] = "
                         f"{table[i - 1].item()}")
    return 1.0 - table / torch.cat([table.new_ones(1), table[:-1]])


def sde_from_alphas_cumprod(table: Union[Tensor, list, tuple]) -> DiscreteVPSDE:
    """The DiscreteVPSDE whose ``alphas_cumprod`` is ``table`` (to float64 rounding), e.g.
    diffusers' ``scheduler.alphas_cumprod``; index i sits at t_i = (i + 1)/N."""
    return DiscreteVPSDE(betas_from_alphas_cumprod(table))


def alphas_cumprod(sde: VPTypeSDE, N: Optional[int] = None) -> Tensor:
    """The table alphabar_i = alpha(t_i)^2, float64 [N], as diffusers' ``alphas_cumprod``.

    A DiscreteVPSDE gives its own table (``N`` must be None or its N); any other VP-type
    SDE is read at t_i = (i + 1)/N, i = 0..N-1 (so ``N`` is required).
    """
    if not isinstance(sde, VPTypeSDE):
        raise TypeError(f"sde must be a VP-type SDE (alphabar = alpha^2 needs std^2 = 1 - "
                        f"alpha^2), {_got(sde)}")
    if isinstance(sde, DiscreteVPSDE):
        if N is not None and N != sde.N:
            raise ValueError(f"N must be None or the DiscreteVPSDE's N = {sde.N}, got {N}")
        return sde._alphas_cumprod.clone()
    if N is None:
        raise ValueError(f"N (the number of DDPM timesteps) is required for a "
                         f"{type(sde).__name__}; e.g. N=1000")
    N = check_int("N", N, minimum=1)
    t = torch.arange(1, N + 1, dtype=torch.float64) / N
    return torch.exp(2.0 * sde._log_alpha(t))

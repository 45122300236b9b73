"""Training losses: continuous denoising score matching and DDPM's simple loss.

Both are written in the noise ("epsilon") parametrization. With x_t = alpha(t) x_0 + std(t) z,
z ~ N(0, I), the conditional score is grad log p(x_t | x_0) = -z / std(t), and for any
network parametrization (``ScoreModel.eps`` converts x0-, v- and score-predictions)

    || s(x_t, t) + z / std ||^2 = || eps(x_t, t) - z ||^2 / std^2 .             (*)

Per example the loss is a squared Euclidean norm summed over all data dimensions
(``reduce`` then averages or sums over the batch, or returns the [batch] values).

Randomness comes only from ``generator``, drawn in this order:
  1. the times: one [batch] uniform tensor (``torch.rand``) for ``dsm_loss``, or one
     [batch] integer tensor (``torch.randint(0, N)``) for ``ddpm_loss``;
  2. the noise: one standard normal tensor shaped like x0 (``torch.randn``);
  3. only with ``cond`` and ``p_uncond > 0``: one [batch] uniform tensor for the condition
     dropout (classifier-free guidance training, Ho & Salimans 2022, Alg. 1: each label is
     replaced by the null label -1 with probability p_uncond).
Draws are made on the generator's device (x0's device when no generator is given) in
x0's dtype and then moved to x0's device, so a CPU generator makes the loss reproducible
on any device.
"""
from __future__ import annotations

import math
import weakref
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ._shapes import batch_view
from ._validation import check_choice, check_real, check_score_and_sde, check_state
from .nets.embedding import NULL_LABEL
from .sdes import SDE, DiscreteVPSDE

WEIGHTINGS = ("none", "likelihood")
REDUCTIONS = ("mean", "sum", "none")


# -- random draws ---------------------------------------------------------------------------
def _draw_device(generator: Optional[torch.Generator], like: Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def _uniform(n: int, generator: Optional[torch.Generator], like: Tensor) -> Tensor:
    u = torch.rand(n, generator=generator, dtype=like.dtype, device=_draw_device(generator, like))
    return u.to(like.device)


def _normal_like(x: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                    device=_draw_device(generator, x))
    return z.to(x.device)


# -- helpers ----------------------------------------------------------------------------------
def _eps_prediction(model: Callable, x: Tensor, t: Tensor, std: Tensor,
                    cond: Optional[Tensor] = None) -> Tensor:
    """The model's noise prediction: ``model.eps`` for a ScoreModel, else -std * score
    (called with ``cond`` as the third argument when given)."""
    args = (x, t) if cond is None else (x, t, cond)
    eps_fn = getattr(model, "eps", None)
    if callable(eps_fn):
        return eps_fn(*args)
    return -batch_view(std, x) * model(*args)


def _drop_labels(cond: Optional[Tensor], p_uncond: float, generator: Optional[torch.Generator],
                 like: Tensor) -> Optional[Tensor]:
    """Condition dropout (Ho & Salimans 2022, Alg. 1, line 3): each label replaced by the
    null label -1 with probability ``p_uncond`` (one [batch] uniform draw when p > 0)."""
    if cond is None or p_uncond == 0.0:
        return cond
    u = _uniform(cond.shape[0], generator, like)
    return torch.where(u.to(cond.device) < p_uncond, torch.full_like(cond, NULL_LABEL), cond)


def _check_cond(cond: Optional[Tensor], p_uncond: float, x0: Tensor) -> float:
    if cond is not None and (not isinstance(cond, Tensor) or cond.dim() == 0
                             or cond.shape[0] != x0.shape[0]):
        raise ValueError(f"cond must be a [batch] tensor of labels with batch {x0.shape[0]} "
                         f"(that of x0), got {cond!r}")
    p = check_real("p_uncond", p_uncond, nonnegative=True)
    if not p < 1.0:
        raise ValueError(f"p_uncond must be in [0, 1), got {p_uncond}")
    return p


def _reduce(per_example: Tensor, reduce: str) -> Tensor:
    if reduce == "mean":
        return per_example.mean()
    if reduce == "sum":
        return per_example.sum()
    return per_example


def _check_common(model, sde, x0, reduce) -> None:
    check_score_and_sde(model, sde, name="model")
    check_state("x0", x0, min_dim=2)
    check_choice("reduce", reduce, REDUCTIONS)


def _check_rows(rows: Optional[Tuple[int, int]], x0: Tensor) -> Optional[Tuple[int, int]]:
    if rows is None:
        return None
    ok = (isinstance(rows, (tuple, list)) and len(rows) == 2
          and all(isinstance(r, int) and not isinstance(r, bool) for r in rows)
          and 0 <= rows[0] <= rows[1] <= x0.shape[0])
    if not ok:
        raise ValueError(f"rows must be (first, stop) with 0 <= first <= stop <= batch = "
                         f"{x0.shape[0]}, got {rows!r}")
    return int(rows[0]), int(rows[1])


# -- importance sampling of t for the likelihood weighting ------------------------------------
class LikelihoodTimeSampler:
    """Draws t on [eps, T] with density q(t) close to h(t) / Z, h(t) = g(t)^2 / std(t)^2.

    This is the importance distribution of Song, Durkan, Murray & Ermon (2021), Sec. 5
    ("Maximum likelihood training of score-based diffusion models"): with it the
    likelihood-weighted loss becomes Z * ||eps(x_t, t) - z||^2 by (*), and the 1/std^2
    blow-up at small t disappears from the estimator.

    h is tabulated once on a fine grid (geometric and uniform points merged, in float64);
    q is piecewise constant on the grid intervals with the trapezoid mass of h on each,
    and t is drawn by inverting the piecewise-linear CDF with one uniform per example.
    ``weight(t)`` returns h(t) / (q(t) (T - eps)), evaluated with the SDE's exact h, so
    E_q[weight(t) L(t)] = E_{t ~ U(eps, T)}[h(t) L(t)] holds exactly for any L; the weight
    equals Z / (T - eps) up to the grid's interpolation error. Works for every SDE: it only
    uses ``sde.sde`` (for g) and ``sde.marginal_coeffs`` (for std). It holds a weak
    reference to the SDE (so the cache in :func:`likelihood_time_sampler` frees it).
    """

    def __init__(self, sde: SDE, eps: float, grid_size: int = 4096):
        self._sde = weakref.ref(sde)  # no strong reference: the cache must not keep sde alive
        self.eps = float(eps)
        T = float(sde.T)
        geo = torch.logspace(math.log10(self.eps), math.log10(T), grid_size, dtype=torch.float64)
        lin = torch.linspace(self.eps, T, grid_size, dtype=torch.float64)
        grid = torch.unique(torch.cat([geo, lin]).clamp(self.eps, T))  # sorted
        h = self._h(grid)
        if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
            raise ValueError(f"g(t)^2/std(t)^2 of {sde!r} is not finite and non-negative on "
                             f"[eps, T] = [{self.eps:g}, {T:g}]; increase eps")
        mass = 0.5 * (h[1:] + h[:-1]) * (grid[1:] - grid[:-1])  # trapezoid rule per interval
        self.normalizer = float(mass.sum())  # Z = int_eps^T g^2 / std^2 dt
        cdf = torch.cat([mass.new_zeros(1), torch.cumsum(mass, 0)]) / self.normalizer
        cdf[-1] = 1.0
        self._grid, self._cdf = grid, cdf
        self._density = mass / self.normalizer / (grid[1:] - grid[:-1])  # q on each interval
        self._tables: Dict[torch.device, Tuple[Tensor, Tensor, Tensor]] = {}

    @property
    def sde(self) -> SDE:
        sde = self._sde()
        if sde is None:
            raise RuntimeError("the SDE of this LikelihoodTimeSampler no longer exists")
        return sde

    def _h(self, t: Tensor) -> Tensor:
        """h(t) = g(t)^2 / std(t)^2 for a [n] time tensor (dtype and device of t)."""
        sde = self.sde
        _, g = sde.sde(t.new_zeros(t.shape[0], 1), t)
        _, std = sde.marginal_coeffs(t)
        return (g / std) ** 2

    def _table(self, device: torch.device):
        if device not in self._tables:
            self._tables[device] = (self._grid.to(device), self._cdf.to(device),
                                    self._density.to(device))
        return self._tables[device]

    def icdf(self, u: Tensor) -> Tensor:
        """t = Q^{-1}(u) for uniforms u in [0, 1) (any floating dtype; result in u's dtype)."""
        grid, cdf, _ = self._table(u.device)
        u64 = u.to(torch.float64)
        k = (torch.searchsorted(cdf, u64, right=True) - 1).clamp(0, grid.shape[0] - 2)
        frac = (u64 - cdf[k]) / (cdf[k + 1] - cdf[k]).clamp(min=torch.finfo(torch.float64).tiny)
        t = grid[k] + frac.clamp(0.0, 1.0) * (grid[k + 1] - grid[k])
        return t.to(u.dtype)

    def density(self, t: Tensor) -> Tensor:
        """q(t) of the sampler (piecewise constant), in t's dtype."""
        grid, _, dens = self._table(t.device)
        k = (torch.searchsorted(grid, t.to(torch.float64), right=True) - 1)
        return dens[k.clamp(0, dens.shape[0] - 1)].to(t.dtype)

    def weight(self, t: Tensor) -> Tensor:
        """h(t) / (q(t) (T - eps)): the unbiasing weight for the U(eps, T) objective."""
        return self._h(t) / (self.density(t) * (float(self.sde.T) - self.eps))


_SAMPLERS: "weakref.WeakKeyDictionary[SDE, Dict[float, LikelihoodTimeSampler]]" = \
    weakref.WeakKeyDictionary()


def likelihood_time_sampler(sde: SDE, eps: float = 1e-5) -> LikelihoodTimeSampler:
    """The importance sampler for ``dsm_loss``, built once per SDE object and eps (cached
    for as long as the SDE lives)."""
    try:
        per_sde = _SAMPLERS.setdefault(sde, {})
    except TypeError:  # an unhashable SDE subclass: no caching
        return LikelihoodTimeSampler(sde, eps)
    eps = float(eps)
    if eps not in per_sde:
        per_sde[eps] = LikelihoodTimeSampler(sde, eps)
    return per_sde[eps]


# -- the losses -------------------------------------------------------------------------------
def dsm_loss(model: Callable, sde: SDE, x0: Tensor, *, weighting: str = "none",
             importance_sampling: bool = False, eps: float = 1e-5,
             generator: Optional[torch.Generator] = None, reduce: str = "mean",
             rows: Optional[Tuple[int, int]] = None, cond: Optional[Tensor] = None,
             p_uncond: float = 0.0) -> Tensor:
    """Continuous-time denoising score matching (Song et al. 2021, eq. 7), eps-parametrized.

    t ~ U(eps, T), z ~ N(0, I), x_t = alpha(t) x_0 + std(t) z and

        loss = lambda(t) || s(x_t, t) + z / std(t) ||^2,

    with lambda(t) = std(t)^2 for ``weighting="none"`` (Song et al. 2021, Sec. 3.3; by (*)
    the loss is || eps(x_t, t) - z ||^2, DDPM's simple loss in continuous time) and
    lambda(t) = g(t)^2 for ``weighting="likelihood"`` (Song, Durkan, Murray & Ermon 2021,
    Thm. 1: this weighting makes the time integral of the loss an upper bound on the
    negative log-likelihood up to a constant), i.e. loss = g^2/std^2 || eps - z ||^2.

    With ``importance_sampling=True`` (likelihood weighting only), t is drawn from
    q(t) ~ g(t)^2 / std(t)^2 on [eps, T] (Song, Durkan, Murray & Ermon 2021, Sec. 5) and
    the loss is weighted by h(t)/(q(t)(T - eps)) ~ Z/(T - eps) (see
    :class:`LikelihoodTimeSampler`), an unbiased estimator of the same objective.

    Args:
        model: a :class:`scoresde.ScoreModel` (``model.eps(x, t)`` is used), or any callable
            score ``model(x, t)``.
        sde: the forward SDE.
        x0: data batch [batch, *dims].
        weighting: "none" or "likelihood".
        importance_sampling: sample t from the likelihood weighting's importance density.
        eps: smallest time (t ~ U(eps, T)).
        generator: the only source of randomness (see the module docstring for the order).
        reduce: "mean" or "sum" over the batch, or "none" for the [batch] losses.
        rows: (first, stop): the loss of these rows of the batch only, their draws being
            the whole batch's (data parallelism: each rank evaluates its rows of the draws
            one process makes; ``reduce`` then runs over those rows).
        cond: [batch] class labels for a conditional model (called as model(x, t, cond)).
        p_uncond: condition dropout: the probability that a label is replaced by the null
            label -1, which trains the unconditional model of classifier-free guidance.
    """
    _check_common(model, sde, x0, reduce)
    rows = _check_rows(rows, x0)
    p_uncond = _check_cond(cond, p_uncond, x0)
    check_choice("weighting", weighting, WEIGHTINGS)
    eps = check_real("eps", eps, positive=True)
    T = float(sde.T)
    if not eps < T:
        raise ValueError(f"eps must be in (0, T) = (0, {T:g}), got {eps}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling=True needs weighting='likelihood' (it samples t "
                         "from the likelihood weighting's density); got "
                         f"weighting={weighting!r}")
    b = x0.shape[0]
    u = _uniform(b, generator, x0)                                    # draw 1: times
    if importance_sampling:
        sampler = likelihood_time_sampler(sde, eps)
        t = sampler.icdf(u)
    else:
        t = eps + (T - eps) * u
    z = _normal_like(x0, generator)                                   # draw 2: noise
    cond = _drop_labels(cond, p_uncond, generator, x0)                # draw 3: dropout
    if rows is not None:
        x0, t, z = x0[rows[0]:rows[1]], t[rows[0]:rows[1]], z[rows[0]:rows[1]]
        cond = None if cond is None else cond[rows[0]:rows[1]]
        b = x0.shape[0]
    mean, std = sde.marginal_prob(x0, t)
    x_t = mean + batch_view(std, x0) * z
    residual = _eps_prediction(model, x_t, t, std, cond) - z
    per_example = residual.reshape(b, -1).pow(2).sum(1)              # || eps - z ||^2
    if weighting == "likelihood":
        if importance_sampling:
            per_example = per_example * sampler.weight(t)
        else:
            _, g = sde.sde(x_t, t)
            per_example = per_example * (g / std) ** 2               # g^2 / std^2
    return _reduce(per_example, reduce)


def ddpm_loss(model: Callable, sde: DiscreteVPSDE, x0: Tensor, *,
              generator: Optional[torch.Generator] = None, reduce: str = "mean",
              rows: Optional[Tuple[int, int]] = None, cond: Optional[Tensor] = None,
              p_uncond: float = 0.0) -> Tensor:
    """DDPM's simple loss (Ho et al. 2020, eq. 14) for a discrete schedule.

    i ~ U{0, ..., N-1}, z ~ N(0, I), x_i = sqrt(alphabar_i) x_0 + sqrt(1 - alphabar_i) z with
    alphabar_i = prod_{j<=i} (1 - beta_j), and loss = || eps(x_i, t_i) - z ||^2 at the index
    time t_i = (i + 1)/N. A :class:`scoresde.ScoreModel` on a DiscreteVPSDE hands the
    network the integer index i (its default ``time_input="index"``).

    Args:
        model: a ScoreModel (or callable score) built on ``sde``.
        sde: a :class:`scoresde.DiscreteVPSDE`.
        x0: data batch [batch, *dims].
        generator: the only source of randomness (indices first, then the noise).
        reduce: "mean" or "sum" over the batch, or "none" for the [batch] losses.
        rows: (first, stop): only these rows of the whole batch's draws (as ``dsm_loss``).
        cond, p_uncond: class labels and condition dropout, as for :func:`dsm_loss`.
    """
    _check_common(model, sde, x0, reduce)
    rows = _check_rows(rows, x0)
    p_uncond = _check_cond(cond, p_uncond, x0)
    if not isinstance(sde, DiscreteVPSDE):
        raise TypeError(f"ddpm_loss needs a DiscreteVPSDE (integer timesteps), got "
                        f"{type(sde).__name__}; use dsm_loss for continuous SDEs")
    b = x0.shape[0]
    dev = _draw_device(generator, x0)
    i = torch.randint(0, sde.N, (b,), generator=generator, device=dev).to(x0.device)  # draw 1
    z = _normal_like(x0, generator)                                                   # draw 2
    cond = _drop_labels(cond, p_uncond, generator, x0)                                # draw 3
    if rows is not None:
        x0, i, z = x0[rows[0]:rows[1]], i[rows[0]:rows[1]], z[rows[0]:rows[1]]
        cond = None if cond is None else cond[rows[0]:rows[1]]
        b = x0.shape[0]
    alphas_cumprod = sde._alphas_cumprod.to(x0.device)[i]   # float64
    sqrt_ab = batch_view(alphas_cumprod.sqrt().to(x0.dtype), x0)
    std = (1.0 - alphas_cumprod).sqrt().to(x0.dtype)
    x_i = sqrt_ab * x0 + batch_view(std, x0) * z
    t = sde.index_to_time(i).to(dtype=x0.dtype, device=x0.device)
    residual = _eps_prediction(model, x_i, t, std, cond) - z
    return _reduce(residual.reshape(b, -1).pow(2).sum(1), reduce)


LOSSES = {"dsm": dsm_loss, "ddpm": ddpm_loss}

__all__ = ["dsm_loss", "ddpm_loss", "LikelihoodTimeSampler", "likelihood_time_sampler",
           "LOSSES", "WEIGHTINGS"]

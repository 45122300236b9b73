"""k-diffusion denoisers <-> our scores, both ways (Karras et al. 2022, "EDM").

k-diffusion's models are denoisers D(x~, sigma) ~ E[x_0 | x~] in sigma space, x~ = x_0 +
sigma z. Any of our SDEs (x_t = alpha(t) x_0 + std(t) z) is that space after scaling:

    x~ = x_t / alpha,   sigma = std / alpha,   t = time_from_sigma(sde, sigma)
    D(x~, sigma) = (x_t + std^2 score(x_t, t)) / alpha          (Tweedie; EDM eq. 3)
    score(x_t, t) = (alpha D(x_t/alpha, std/alpha) - x_t) / std^2  (the same, solved for it)

``to_denoiser(score, sde)`` gives k-diffusion's samplers a model (``sample_heun(model, x,
sigmas)`` with x = x~ at sigmas[0]); ``from_denoiser(model, sde)`` makes a score of a
denoiser, on the VESDE (alpha = 1, sigma = std) by default, and with ``sigma_data`` wraps a
raw network F in EDM's preconditioning (EDM Table 1, eq. 7):

    D(x~, sigma) = c_skip x~ + c_out F(c_in x~, c_noise),  c_skip = sd^2/(sigma^2 + sd^2),
    c_out = sigma sd/sqrt(sigma^2 + sd^2),  c_in = 1/sqrt(sigma^2 + sd^2),  c_noise = log(sigma)/4.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from solvers.validation import check_callable, check_real

from .._shapes import batch_view
from .._validation import check_score_and_sde
from ..grids import time_from_sigma
from ..score import ScoreFn, ScoreModel, call_score, x0_from_score
from ..sdes import SDE, VESDE

#: EDM's noise range (Karras et al. 2022, Table 1): the default VESDE of from_denoiser
EDM_SIGMA_MIN, EDM_SIGMA_MAX = 0.002, 80.0


def edm_preconditioning(sigma: Tensor, sigma_data: float):
    """(c_skip, c_out, c_in, c_noise) of EDM (Karras et al. 2022, Table 1) at sigma."""
    total = sigma ** 2 + sigma_data ** 2
    return (sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(),
            0.25 * torch.log(sigma))


class Denoiser(nn.Module):
    """k-diffusion's ``model(x~, sigma) -> D`` of a score on an SDE (``to_denoiser``).

    ``sigma`` is a [batch] tensor (or a number) in [sigma(0), sigma(T)] of the SDE; D has
    x~'s shape. The time of each sigma is ``time_from_sigma`` (closed form for VPSDE and
    VESDE, bisection otherwise).
    """

    def __init__(self, score: ScoreFn, sde: SDE):
        super().__init__()
        check_score_and_sde(score, sde)
        self.score, self.sde = score, sde

    def forward(self, x: Tensor, sigma: Any) -> Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        t = time_from_sigma(self.sde, sigma.expand(x.shape[0]) if sigma.dim() == 0 else sigma)
        alpha, std = self.sde._marginal_coeffs(t)
        alpha, std = batch_view(alpha, x), batch_view(std, x)
        xt = alpha * x
        return x0_from_score(xt, call_score(self.score, xt, t), alpha, std)


class DenoiserNet(nn.Module):
    """``net(x_t, t) -> x0`` of a denoiser D(x~, sigma), for ``ScoreModel(prediction=
    "sample", time_input="t")``: D(x_t/alpha, std/alpha), with EDM's preconditioning of a
    raw network F when ``sigma_data`` is given."""

    def __init__(self, model: Callable[[Tensor, Tensor], Tensor], sde: SDE,
                 sigma_data: Optional[float] = None):
        super().__init__()
        self.model, self.sde, self.sigma_data = model, sde, sigma_data

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        alpha, std = self.sde._marginal_coeffs(t)
        sigma = std / alpha                                     # [batch]
        xs = x / batch_view(alpha, x)
        if self.sigma_data is None:
            return self.model(xs, sigma)
        c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, self.sigma_data)
        out = self.model(batch_view(c_in, x) * xs, c_noise)
        return batch_view(c_skip, x) * xs + batch_view(c_out, x) * out


def to_denoiser(score: ScoreFn, sde: SDE) -> Denoiser:
    """k-diffusion's ``model(x~, sigma)`` for a score on ``sde``: D = Tweedie's x0 at the time
    of sigma, x_t = alpha x~ (module docstring). Run any k-diffusion sampler with it, e.g.
    ``sample_heun(to_denoiser(score, sde), x_T / alpha(T), sigmas)``, sigmas in
    [sigma(0), sigma(T)] (``sigma_from_time``) and ending at 0."""
    return Denoiser(score, sde)


def from_denoiser(model: Callable[[Tensor, Tensor], Tensor], sde: Optional[SDE] = None, *,
                  sigma_data: Optional[float] = None) -> ScoreModel:
    """A ScoreModel of a k-diffusion-style denoiser ``model(x~, sigma) -> x0``.

    Args:
        model: the denoiser D(x~, sigma) (x~ [batch, *dims], sigma [batch]); with
            ``sigma_data`` the raw network F(c_in x~, c_noise) that EDM's preconditioning
            turns into D.
        sde: the SDE the score lives on (default ``VESDE(0.002, 80)``, EDM's range: x_t = x~,
            std = sigma); any SDE works, x~ = x_t/alpha, sigma = std/alpha.
        sigma_data: EDM's data standard deviation (0.5 for images in [-1, 1]); None when
            ``model`` already is the denoiser.

    Returns:
        ``ScoreModel(DenoiserNet(model, sde, sigma_data), sde, prediction="sample",
        time_input="t")``: score(x, t) = (alpha D - x)/std^2.
    """
    check_callable("model", model, "model(x, sigma) -> tensor shaped like x")
    if sde is None:
        sde = VESDE(EDM_SIGMA_MIN, EDM_SIGMA_MAX)
    if sigma_data is not None:
        sigma_data = check_real("sigma_data", sigma_data, positive=True)
    return ScoreModel(DenoiserNet(model, sde, sigma_data), sde, prediction="sample",
                      time_input="t")

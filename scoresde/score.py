"""Score parametrizations: turn a noise-, data-, v- or score-predicting network into a score.

With x_t = alpha x_0 + std eps (alpha, std from ``sde.marginal_coeffs``), the four targets
are related by (Ho et al. 2020; Salimans & Ho 2022, App. D; Song et al. 2021, eq. 7):

    score(x, t) = -eps / std                        (epsilon prediction)
    eps         = (x - alpha x0) / std              (sample / x0 prediction)
    eps         = (std x + alpha v) / (alpha^2 + std^2),  v = alpha eps - std x0
                                                    (v prediction; alpha^2 + std^2 = 1 for VP)
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

import solvers

from ._shapes import attached_coefficients, batch_view, scalar_time
from ._validation import (TimeLike, _describe, check_choice, check_instance, check_real,
                          check_score_and_sde, check_state, first_nonfinite)
from .sdes import DiscreteVPSDE, SDE

ScoreFn = Callable[[Tensor, Tensor], Tensor]

PREDICTIONS = ("epsilon", "sample", "v_prediction", "score")
TIME_INPUTS = ("scaled", "t", "sigma", "index", "fractional_index")


class ScoreModel(nn.Module):
    """A score function s(x, t) = grad_x log p_t(x) built from a network.

    Args:
        net: callable ``net(x, t_in) -> tensor shaped like x`` with ``t_in`` a [batch] tensor;
            a conditional network is also called as ``net(x, t_in, cond)`` with ``cond`` a
            [batch] tensor of labels (``scoresde.guidance.NULL_LABEL`` = -1 selecting the
            learned null token), e.g. ``MLP(dim, num_classes=10)``.
        sde: the forward SDE the network was trained with.
        prediction: what the network predicts: "epsilon" (the noise), "sample" (x_0),
            "v_prediction" (v = alpha eps - std x_0) or "score".
        time_input: what the network receives as ``t_in``: "index" (torch.long DDPM index
            round(t N - 1); default for a DiscreteVPSDE), "fractional_index" (t N - 1 as a
            float), "scaled" (t * time_scale; default for continuous SDEs, as score_sde's
            t * 999), "t", or "sigma" (the marginal std(t), as in NCSN/EDM-style networks).
        time_scale: the factor for "scaled" (default 999).

    Calling ``model(x, t)`` returns the score shaped like x; ``model.eps(x, t)`` the noise
    prediction and ``model.x0(x, t)`` the denoised estimate. Each takes an optional
    ``cond`` (``model(x, t, cond)``), handed to the network as its third argument; without
    it the network is called as ``net(x, t_in)``.
    """

    def __init__(self, net: Callable[[Tensor, Tensor], Tensor], sde: SDE,
                 prediction: str = "epsilon", time_input: Optional[str] = None,
                 time_scale: float = 999.0):
        super().__init__()
        check_score_and_sde(net, sde, name="net")
        self.net = net
        self.sde = sde
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        if time_input is None:
            time_input = "index" if isinstance(sde, DiscreteVPSDE) else "scaled"
        self.time_input = check_choice("time_input", time_input, TIME_INPUTS)
        if self.time_input in ("index", "fractional_index") and not isinstance(sde, DiscreteVPSDE):
            raise ValueError(f"time_input={time_input!r} needs a DiscreteVPSDE, got "
                             f"{type(sde).__name__}; use 'scaled', 't' or 'sigma'")
        self.time_scale = check_real("time_scale", time_scale, positive=True)

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, prediction={self.prediction!r}, time_input={self.time_input!r}"

    def network_time(self, t: Tensor) -> Tensor:
        """The [batch] time input the network receives for validated times t."""
        if self.time_input == "index":   # one time expanded over the batch: rounded once
            return self.sde._index(scalar_time(t)).expand(t.shape)
        if self.time_input == "fractional_index":
            return self.sde._fractional_index(t)
        if self.time_input == "scaled":
            return t * self.time_scale
        if self.time_input == "sigma":
            return self.sde._marginal_coeffs(t)[1]
        return t

    def _output(self, x: Tensor, t: TimeLike, cond: Optional[Tensor] = None):
        check_state("x", x)
        return self._raw(x, self.sde.time(t, batch=x.shape[0], like=x), cond)

    def _raw(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None):
        """Network output, alpha and std (broadcastable to x) for a valid [batch] time t."""
        t_in = self.network_time(t)
        out = self.net(x, t_in) if cond is None else self.net(x, t_in, cond)
        check_instance("net(x, t)", out, Tensor, f"a tensor shaped like x {tuple(x.shape)}")
        if out.shape != x.shape:
            raise ValueError(f"net(x, t) must return a tensor shaped like x {tuple(x.shape)}, "
                             f"got shape {tuple(out.shape)}")
        coeffs = attached_coefficients(t, self.sde)   # a sampler's grid time: known
        alpha, std = coeffs if coeffs is not None else self.sde._marginal_coeffs(scalar_time(t))
        return out, batch_view(alpha, x), batch_view(std, x)

    def eps(self, x: Tensor, t: TimeLike, cond: Optional[Tensor] = None) -> Tensor:
        """The noise prediction eps(x, t), shaped like x."""
        out, alpha, std = self._output(x, t, cond)
        return _to_eps(self.prediction, out, x, alpha, std)

    def x0(self, x: Tensor, t: TimeLike, cond: Optional[Tensor] = None) -> Tensor:
        """The denoised estimate x0 = (x - std eps)/alpha (Tweedie's formula), shaped like x."""
        out, alpha, std = self._output(x, t, cond)
        if self.prediction == "sample":
            return out
        return x0_from_eps(x, _to_eps(self.prediction, out, x, alpha, std), alpha, std)

    def forward(self, x: Tensor, t: TimeLike, cond: Optional[Tensor] = None) -> Tensor:
        """The score grad_x log p_t(x) (or grad_x log p_t(x | cond)), shaped like x."""
        return self._score(*self._output(x, t, cond), x)

    def score_unchecked(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        """``forward`` for a t that is already a valid [batch] time tensor of x's dtype and
        device, as the samplers pass (their grids are checked once at the entry point): the
        same arithmetic without the per-call checks of x and t, which cost host syncs."""
        return self._score(*self._raw(x, t, cond), x)

    def _score(self, out: Tensor, alpha: Tensor, std: Tensor, x: Tensor) -> Tensor:
        if self.prediction == "score":
            return out
        return -_to_eps(self.prediction, out, x, alpha, std) / std


def unchecked(score: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """What the samplers call with their validated times: ``score.score_unchecked`` for a
    plain ScoreModel (no subclass overriding forward, no hooks), else ``score`` itself;
    either way with its first output checked in full (``FirstCallChecked``: a floating
    tensor shaped like x with finite entries)."""
    if (isinstance(score, ScoreModel) and type(score).forward is ScoreModel.forward
            and not score._forward_hooks and not score._forward_pre_hooks):
        return FirstCallChecked(score.score_unchecked)
    return FirstCallChecked(score)


# -- conversions between parametrizations: written once here, called by every sampler -------
def eps_from_score(score: Tensor, std: Tensor) -> Tensor:
    """The noise prediction of a score, eps = -std score (Song et al. 2021, eq. 7)."""
    return -std * score


def x0_from_eps(x: Tensor, eps: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """The data prediction of a noise prediction, x0 = (x - std eps)/alpha (x = alpha x0 + std eps)."""
    return (x - std * eps) / alpha


def x0_from_score(x: Tensor, score: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    """Tweedie's formula E[x0 | x_t] = (x + std^2 score)/alpha (Efron 2011; Song et al.
    2021, App. G; EDM's denoiser D, Karras et al. 2022, eq. 3)."""
    return (x + std ** 2 * score) / alpha


def _to_eps(prediction: str, out: Tensor, x: Tensor, alpha: Tensor, std: Tensor) -> Tensor:
    if prediction == "epsilon":
        return out
    if prediction == "sample":
        return (x - alpha * out) / std
    if prediction == "v_prediction":
        return (std * x + alpha * out) / (alpha ** 2 + std ** 2)
    return -std * out  # "score"


def score_from_eps(eps_net: Callable[[Tensor, Tensor], Tensor], sde: SDE,
                   **kwargs) -> ScoreModel:
    """The score s(x, t) = -eps(x, t)/std(t) of a noise-predicting network (Song et al. 2021, eq. 7).

    Keyword arguments go to :class:`ScoreModel` (e.g. ``time_input``).
    """
    return ScoreModel(eps_net, sde, prediction="epsilon", **kwargs)


# -- calling a score -----------------------------------------------------------------------
def call_score(score: ScoreFn, x: Tensor, t: Tensor, cond: Optional[Tensor] = None) -> Tensor:
    """Evaluate score(x, t) (score(x, t, cond) when cond is given) with t a [batch] tensor
    and check the result's shape."""
    s = score(x, t) if cond is None else score(x, t, cond)
    if not isinstance(s, Tensor):
        raise TypeError(f"score(x, t) must return a tensor shaped like x {tuple(x.shape)}, got "
                        f"{_describe(s)} of type {type(s).__name__}")
    if s.shape != x.shape:
        raise ValueError(f"score(x, t) must return a tensor shaped like x {tuple(x.shape)}, "
                         f"got shape {tuple(s.shape)}")
    return s


class NonFiniteScoreError(solvers.NonFiniteStateError, ValueError):
    """The score returned NaN or inf at its first call, at the initial point of a solve.

    A ``solvers.NonFiniteStateError`` (step 0, at the time of the call; named by the entry
    point like any solver failure) and a ``ValueError``: the score given is not usable.
    """


class FirstCallChecked:
    """A score whose first output is checked in full: a floating tensor shaped like x with
    finite entries, else an error naming the score, what it returned and what is expected.

    Later outputs pass unchecked here (``call_score`` checks their shape; the solvers check
    the state for NaN/inf after every step): the finiteness check costs a host sync, which
    is paid once per solve, not once per step.
    """

    def __init__(self, score: ScoreFn):
        self.score = score
        self.checked = False

    def __call__(self, x: Tensor, t: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        s = call_score(self.score, x, t, cond)
        if not self.checked:
            if not s.is_floating_point():
                raise TypeError(f"score(x, t) must return a floating-point tensor like x "
                                f"({x.dtype}), got dtype {s.dtype}")
            found = first_nonfinite(s.detach())
            if found is not None:
                index, value = found
                when = float(t.reshape(-1)[0]) if isinstance(t, Tensor) else float(t)
                raise NonFiniteScoreError(0, when, f"score(x, t) returned {value} (entry "
                                                   f"{list(index)}) at its first call; it must "
                                                   f"return finite values")
            self.checked = True
        return s

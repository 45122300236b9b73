"""Input errors: ValueError/TypeError naming the argument (DESIGN.md, numerical conventions).

One test per case; each message must name the offending argument (as a whole word). Here:
the time argument at every entry point that takes one, and the oracles. The constructors of
the SDEs, ScoreModel and every other entry point are in the invalid-input matrix,
tests/scoresde/test_invalid_inputs.py.
"""
from __future__ import annotations

import re

import pytest
import torch

from scoresde.oracles import GaussianData, GaussianMixture
from scoresde.score import ScoreModel
from scoresde.sdes import DiscreteVPSDE, VESDE, VPSDE

ERRORS = (ValueError, TypeError)


def _names(*names: str) -> str:
    """A regex matching a message that contains every one of ``names`` as a whole word."""
    return "(?s)" + "".join(rf"(?=.*(?<![\w.]){re.escape(n)}(?!\w))" for n in names)


# --------------------------------------------------------------------------------------
# time arguments, at every entry point that takes one
# --------------------------------------------------------------------------------------
def _entry_points():
    vp = VPSDE()
    ve = VESDE()
    ddpm = DiscreteVPSDE.linear(100)
    oracle = GaussianData(torch.zeros(2), torch.eye(2), sde=vp)
    model = ScoreModel(lambda x, t: torch.zeros_like(x), ddpm, prediction="epsilon")
    return {
        "VPSDE.marginal_prob": lambda x, t: vp.marginal_prob(x, t),
        "VPSDE.sde": lambda x, t: vp.sde(x, t),
        "VESDE.marginal_prob": lambda x, t: ve.marginal_prob(x, t),
        "VESDE.discretize": lambda x, t: ve.discretize(x, t),
        "DiscreteVPSDE.marginal_prob": lambda x, t: ddpm.marginal_prob(x, t),
        "DiscreteVPSDE.sde": lambda x, t: ddpm.sde(x, t),
        "ScoreModel": lambda x, t: model(x, t),
        "GaussianData.score": lambda x, t: oracle.score(x, t),
        "GaussianData.log_prob": lambda x, t: oracle.log_prob(x, t),
    }


ENTRY = list(_entry_points())


@pytest.fixture(params=ENTRY)
def entry(request):
    return _entry_points()[request.param]


def test_t_batch_mismatch(entry):
    x = torch.zeros(4, 2)
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, torch.full((5,), 0.5))


def test_t_two_dimensional(entry):
    x = torch.zeros(4, 2)
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, torch.full((4, 1), 0.5))


def test_t_negative(entry):
    x = torch.zeros(4, 2)
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, torch.tensor([0.5, -0.1, 0.5, 0.5]))


def test_t_beyond_T(entry):
    x = torch.zeros(4, 2)
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, torch.tensor([0.5, 0.5, 1.5, 0.5]))
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, 1.01)


def test_t_nan(entry):
    x = torch.zeros(4, 2)
    with pytest.raises(ERRORS, match=_names("t")):
        entry(x, torch.tensor([0.5, float("nan"), 0.5, 0.5]))


def test_t_ok_at_the_ends(entry):
    """The closed interval [eps, T] is allowed (the errors above are not spurious)."""
    x = torch.zeros(4, 2)
    out = entry(x, torch.tensor([1e-3, 0.5, 1.0, 1.0]))
    assert out is not None


# --------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", [[[1.0, 2.0], [2.0, 1.0]],     # indefinite
                                 [[1.0, 1.0], [1.0, 1.0]],     # singular
                                 [[-1.0, 0.0], [0.0, 1.0]]])   # negative
def test_gaussian_data_cov_not_positive_definite(cov):
    with pytest.raises(ERRORS, match=_names("cov")):
        GaussianData(torch.zeros(2), torch.tensor(cov))


def test_mixture_weights_not_summing_to_one():
    with pytest.raises(ERRORS, match=_names("weights")):
        GaussianMixture(torch.tensor([0.5, 0.6]), torch.zeros(2, 1), torch.ones(2, 1, 1))


def test_mixture_weights_negative():
    with pytest.raises(ERRORS, match=_names("weights")):
        GaussianMixture(torch.tensor([1.2, -0.2]), torch.zeros(2, 1), torch.ones(2, 1, 1))


def test_gaussian_data_mean_cov_shape_mismatch():
    with pytest.raises(ERRORS, match=_names("cov")):
        GaussianData(torch.zeros(2), torch.eye(3))


def test_mixture_means_weights_shape_mismatch():
    with pytest.raises(ERRORS, match=_names("means")):
        GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(3, 2), torch.eye(2).repeat(2, 1, 1))


def test_mixture_covs_shape_mismatch():
    with pytest.raises(ERRORS, match=_names("covs")):
        GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.eye(3).repeat(2, 1, 1))


def test_oracle_state_dimension_mismatch():
    oracle = GaussianData(torch.zeros(2), torch.eye(2), sde=VPSDE())
    with pytest.raises(ERRORS, match=_names("x")):
        oracle.log_prob(torch.zeros(4, 3), 0.5)
    with pytest.raises(ERRORS, match=_names("x")):
        oracle.score(torch.zeros(4, 3), 0.5)

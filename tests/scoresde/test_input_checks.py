"""Input errors: ValueError/TypeError naming the argument (DESIGN.md, numerical conventions).

One test per case; each message must name the offending argument (as a whole word) and,
for scalar arguments, the value received.
"""
from __future__ import annotations

import re

import pytest
import torch

from scoresde.oracles import GaussianData, GaussianMixture
from scoresde.score import ScoreModel
from scoresde.sdes import DiscreteVPSDE, SubVPSDE, VESDE, VPSDE

ERRORS = (ValueError, TypeError)


def _names(*names: str) -> str:
    """A regex matching a message that contains every one of ``names`` as a whole word."""
    return "(?s)" + "".join(rf"(?=.*(?<![\w.]){re.escape(n)}(?!\w))" for n in names)


def _number(v: float) -> str:
    """A regex for the float v as Python or %g would print it."""
    return "|".join(re.escape(s) for s in {repr(v), f"{v:g}", str(v)})


# --------------------------------------------------------------------------------------
# SDE constructors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [VPSDE, SubVPSDE])
@pytest.mark.parametrize("bmin, bmax", [(20.0, 0.1), (1.5, 1.5)])
def test_beta_min_not_below_beta_max(cls, bmin, bmax):
    with pytest.raises(ERRORS, match=_names("beta_min", "beta_max")):
        cls(beta_min=bmin, beta_max=bmax)


@pytest.mark.parametrize("cls", [VPSDE, SubVPSDE])
def test_negative_beta_min(cls):
    with pytest.raises(ERRORS, match=_names("beta_min")) as info:
        cls(beta_min=-0.1, beta_max=20.0)
    assert re.search(_number(-0.1), str(info.value))


@pytest.mark.parametrize("sigma_min", [0.0, -1.0])
def test_sigma_min_not_positive(sigma_min):
    with pytest.raises(ERRORS, match=_names("sigma_min")) as info:
        VESDE(sigma_min=sigma_min, sigma_max=50.0)
    assert re.search(_number(sigma_min), str(info.value))


@pytest.mark.parametrize("smin, smax", [(1.0, 0.5), (2.0, 2.0)])
def test_sigma_max_not_above_sigma_min(smin, smax):
    with pytest.raises(ERRORS, match=_names("sigma_min", "sigma_max")):
        VESDE(sigma_min=smin, sigma_max=smax)


@pytest.mark.parametrize("betas", [[0.1, 0.0, 0.2], [0.1, 1.0], [-0.01, 0.1], [0.2, 1.5],
                                   [0.1, float("nan")]])
def test_betas_outside_open_unit_interval(betas):
    with pytest.raises(ERRORS, match=_names("betas")):
        DiscreteVPSDE(torch.tensor(betas))


@pytest.mark.parametrize("betas", [torch.full((2, 3), 0.01), torch.tensor(0.01),
                                   torch.zeros(0)])
def test_betas_not_1d(betas):
    with pytest.raises(ERRORS, match=_names("betas")):
        DiscreteVPSDE(betas)


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
# score parametrization
# --------------------------------------------------------------------------------------
def test_unknown_prediction_type():
    with pytest.raises(ERRORS, match=_names("prediction")) as info:
        ScoreModel(lambda x, t: x, VPSDE(), prediction="noise_level")
    assert "noise_level" in str(info.value)


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

"""k-diffusion denoisers <-> our scores (issue 14): the sigma <-> t conversion, both
directions against the exact Gaussian oracle, the round trips, EDM's preconditioning, and
k-diffusion's own sample_heun run on our model, all in float64."""
from __future__ import annotations

import pytest
import torch

import scoresde as sd
from scoresde.grids import time_from_noise_ratio
from scoresde.interop import edm_preconditioning

F64 = torch.float64
MU = torch.tensor([1.0, -0.5], dtype=F64)
COV = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
SDES = [sd.VPSDE(), sd.VESDE(0.01, 50.0), sd.CosineVPSDE(), sd.SubVPSDE(),
        sd.DiscreteVPSDE.linear(1000)]


def exact_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[x0 | x~ = x0 + sigma z] for x0 ~ N(MU, COV): MU + COV (COV + sigma^2 I)^-1 (x~ - MU)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
    gain = COV @ torch.linalg.inv(COV + sigma[:, None, None] ** 2 * torch.eye(2, dtype=F64))
    return MU + (gain @ (x - MU)[..., None])[..., 0]


def points(n: int = 64, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)


def relmax(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_time_from_sigma_inverts_sigma_from_time(sde):
    t = torch.linspace(1e-3, 1.0, 201, dtype=F64)
    sigma = sd.sigma_from_time(sde, t)
    back = sd.time_from_sigma(sde, sigma)
    assert (back - t).abs().max().item() < 1e-10
    assert relmax(sd.sigma_from_time(sde, back), sigma) < 1e-10


def test_time_from_sigma_closed_forms_equal_bisection():
    for sde in (sd.VPSDE(), sd.VESDE(0.01, 50.0)):
        sigma = torch.logspace(-1.5, 1.5, 50, dtype=F64)
        assert (sd.time_from_sigma(sde, sigma)
                - time_from_noise_ratio(sde, sigma, t_min=0.0)).abs().max().item() < 1e-12


def test_time_from_sigma_keeps_shape_dtype_and_refuses_out_of_range():
    sde = sd.VPSDE()
    s = torch.full((3, 1), 2.0, dtype=torch.float32)
    t = sd.time_from_sigma(sde, s)
    assert t.shape == (3, 1) and t.dtype == torch.float32
    hi = float(sd.sigma_from_time(sde, 1.0))
    with pytest.raises(ValueError, match="sigma must lie in"):
        sd.time_from_sigma(sde, torch.tensor([hi * 1.01], dtype=F64))
    # a float32-rounded sigma(T) is accepted and clamped
    assert sd.time_from_sigma(sde, torch.tensor([hi], dtype=torch.float32)).item() == 1.0


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_to_denoiser_is_the_exact_posterior_mean(sde):
    """Our oracle's score through to_denoiser equals E[x0 | x~] in closed form."""
    data = sd.GaussianData(MU, COV, sde=sde)
    D = sd.to_denoiser(data.score, sde)
    lo = float(sd.sigma_from_time(sde, 1e-3))
    hi = float(sd.sigma_from_time(sde, 1.0))
    for sigma in torch.logspace(torch.log10(torch.tensor(lo)), torch.log10(torch.tensor(hi)), 7,
                                dtype=F64):
        x = points()
        assert relmax(D(x, sigma), exact_denoiser(x, sigma)) < 1e-10
    # per-sample sigmas, as k-diffusion passes sigma * s_in
    x = points(4)
    sig = torch.tensor([lo * 2, 0.5, 1.0, hi / 2], dtype=F64)
    assert relmax(D(x, sig), torch.cat([exact_denoiser(x[i:i + 1], sig[i]) for i in range(4)])) \
        < 1e-10


@pytest.mark.parametrize("sde", [sd.VESDE(0.002, 80.0), sd.VPSDE(), sd.CosineVPSDE()],
                         ids=lambda s: type(s).__name__)
def test_from_denoiser_is_the_exact_score(sde):
    """The exact denoiser through from_denoiser is the oracle's score on that SDE."""
    data = sd.GaussianData(MU, COV, sde=sde)
    score = sd.from_denoiser(exact_denoiser, sde)
    for t in (1e-3, 0.05, 0.3, 0.7, 1.0):
        x = points(seed=1)
        tb = torch.full((x.shape[0],), t, dtype=F64)
        assert relmax(score(x, tb), data.score(x, tb)) < 1e-10


def test_from_denoiser_default_is_edms_vesde():
    score = sd.from_denoiser(exact_denoiser)
    assert isinstance(score.sde, sd.VESDE)
    assert (score.sde.sigma_min, score.sde.sigma_max) == (0.002, 80.0)


def test_edm_preconditioning_of_a_raw_network():
    """A raw F with D = c_skip x~ + c_out F(c_in x~, c_noise) (EDM Table 1) gives the exact
    score with sigma_data; the coefficients satisfy EDM's unit-variance conditions."""
    sd_ = 0.5

    def raw(x_in, c_noise):
        sigma = torch.exp(4.0 * c_noise)
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma, sd_)
        xs = x_in / c_in[:, None]
        return (exact_denoiser(xs, sigma) - c_skip[:, None] * xs) / c_out[:, None]

    sde = sd.VESDE(0.002, 80.0)
    data = sd.GaussianData(MU, COV, sde=sde)
    score = sd.from_denoiser(raw, sde, sigma_data=sd_)
    for t in (0.01, 0.5, 0.99):
        x = points(seed=2)
        tb = torch.full((x.shape[0],), t, dtype=F64)
        assert relmax(score(x, tb), data.score(x, tb)) < 1e-10
    sigma = torch.logspace(-2, 1.5, 9, dtype=F64)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sd_)
    # Var[c_in x~] = 1 and c_skip^2 sd^2 ... (EDM eq. 7-8): c_out^2 + c_skip^2 sigma^2 ...
    assert torch.allclose(c_in ** 2 * (sd_ ** 2 + sigma ** 2), torch.ones_like(sigma),
                          rtol=1e-14)
    assert torch.allclose(c_out ** 2, (sd_ ** 2 * sigma ** 2) / (sd_ ** 2 + sigma ** 2),
                          rtol=1e-14)
    assert torch.allclose(c_noise, torch.log(sigma) / 4, rtol=1e-14)


@pytest.mark.parametrize("sde", [sd.VPSDE(), sd.VESDE(0.01, 50.0)],
                         ids=lambda s: type(s).__name__)
def test_round_trips(sde):
    data = sd.GaussianData(MU, COV, sde=sde)
    x = points(seed=3)
    # denoiser -> score -> denoiser
    D2 = sd.to_denoiser(sd.from_denoiser(exact_denoiser, sde), sde)
    for sigma in (0.05, 1.0, 10.0):
        assert relmax(D2(x, torch.tensor(sigma, dtype=F64)), exact_denoiser(x, sigma)) < 1e-10
    # score -> denoiser -> score
    s2 = sd.from_denoiser(sd.to_denoiser(data.score, sde), sde)
    for t in (0.01, 0.5, 1.0):
        tb = torch.full((x.shape[0],), t, dtype=F64)
        assert relmax(s2(x, tb), data.score(x, tb)) < 1e-10


@pytest.mark.parametrize("levels", [3, 10, 50])
def test_kdiffusion_sample_heun_on_our_model_equals_heun_karras(levels):
    """k-diffusion's own sample_heun with to_denoiser equals our heun_karras on the same
    Karras sigmas (Karras et al. 2022, Alg. 1), from the same x_T."""
    try:
        from benchmarks.kdiffusion_loader import load_kdiffusion_sampling
        K = load_kdiffusion_sampling()
    except ImportError as err:
        pytest.skip(str(err))
    sde, eps = sd.VPSDE(), 1e-3
    data = sd.GaussianData(MU, COV, sde=sde)
    x_T = sde.prior_sampling((64, 2), generator=torch.Generator().manual_seed(4), dtype=F64)
    ours = sd.sample(data.score, sde, (64, 2), "heun_karras", x_T=x_T, steps=2 * levels - 1,
                     eps=eps).x
    s_min, s_max = (float(v) for v in sd.sigma_from_time(sde, torch.tensor([eps, 1.0],
                                                                           dtype=F64)))
    default = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # k-diffusion's grids use torch.linspace
    try:
        sigmas = K.get_sigmas_karras(levels, s_min, s_max, rho=7.0, device="cpu")
    finally:
        torch.set_default_dtype(default)
    alpha_T = sde.marginal_coeffs(torch.tensor([1.0], dtype=F64))[0]
    theirs = K.sample_heun(sd.to_denoiser(data.score, sde), x_T / alpha_T, sigmas,
                           disable=True)
    assert relmax(theirs, ours) < 1e-10

"""bits_per_dim and dequantize (issue #4): the offset, the bound, and input checks.

The model is a Gaussian oracle fitted to the (dequantized) data; its closed-form density at
time eps (scipy) gives the bits/dim the ODE must reproduce:
    bpd = (-log p(y') / D + log 256 - log(b - a)) / log 2,   y' = a + (b - a)(x + u)/256.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import scoresde as sd
from scoresde.likelihood import bits_per_dim, dequantize, log_likelihood

EPS = 1e-5


def random_images(n: int, D: int, seed: int) -> torch.Tensor:
    """Random correlated 8-bit 'images' [n, D] (uint8): a Gaussian field, clipped and rounded."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(D, D, generator=g) / math.sqrt(D)
    z = torch.randn(n, D, generator=g) @ (a + torch.eye(D)).T
    return (127.5 + 45.0 * z).round().clamp(0, 255).to(torch.uint8)


def fitted_oracle(y: torch.Tensor, sde):
    return sd.GaussianData(y.mean(0), torch.cov(y.T), sde=sde)


def closed_form_bpd(oracle, sde, y, scale, truth, name):
    a, s = float(truth.alpha(name, EPS)), float(truth.std(name, EPS))
    cov = a ** 2 * oracle.covs[0].numpy() + s ** 2 * np.eye(y.shape[1])
    logp = multivariate_normal(mean=a * oracle.means[0].numpy(), cov=cov).logpdf(y.numpy())
    return (-logp / y.shape[1] + math.log(256) - math.log(scale)) / math.log(2)


def test_dequantize_lies_in_the_bins_and_follows_the_generator():
    x = torch.tensor([[0, 1, 128, 255]], dtype=torch.uint8).repeat(500, 1)
    y = dequantize(x, generator=torch.Generator().manual_seed(0))
    levels = x.double()
    assert y.dtype == torch.float64
    assert ((y >= levels / 256) & (y < (levels + 1) / 256)).all()
    assert torch.equal(y, dequantize(x, generator=torch.Generator().manual_seed(0)))
    u = y * 256 - levels  # uniform on [0, 1): mean 1/2, variance 1/12
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.01
    # float input k/255 (torchvision ToTensor) is the same data
    y_float = dequantize(x.double() / 255, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, y_float)


@pytest.mark.parametrize("data_range, scale", [("[-1,1]", 2.0), ("[0,1]", 1.0)])
def test_bits_per_dim_matches_closed_form_and_is_positive(data_range, scale, build_sde, truth):
    sde = build_sde("vp")
    x = random_images(24, 6, seed=1)
    lo = -1.0 if data_range == "[-1,1]" else 0.0
    y = lo + scale * dequantize(x, generator=torch.Generator().manual_seed(2))
    oracle = fitted_oracle(y, sde)
    res = bits_per_dim(oracle.score, sde, x, data_range=data_range,
                       generator=torch.Generator().manual_seed(2), rtol=1e-6, atol=1e-6)
    # the same solve as log_likelihood of the continuous data y', plus the offset
    ll = log_likelihood(oracle.score, sde, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(res.logp, ll.logp, rtol=0, atol=1e-12)
    # against the closed form, with the exact p_T in place of the prior (as in
    # test_likelihood.py): that isolates the ODE error; the raw error includes the prior's
    a_T, s_T = float(truth.alpha("vp", 1.0)), float(truth.std("vp", 1.0))
    p_T = multivariate_normal(mean=a_T * oracle.means[0].numpy(),
                              cov=a_T ** 2 * oracle.covs[0].numpy() + s_T ** 2 * np.eye(6))
    corrected = res.bpd.numpy() + (ll.prior_logp.numpy() - p_T.logpdf(ll.z.numpy())) / (
        6 * math.log(2))
    expected = closed_form_bpd(oracle, sde, y, scale, truth, "vp")
    err, raw = np.abs(corrected - expected), np.abs(res.bpd.numpy() - expected)
    print(f"{data_range}: mean bpd {res.mean:.4f} +- {res.stderr:.4f}, max |bpd error| "
          f"{err.max():.2e} (with the prior: {raw.max():.2e}), nfe {res.nfe}")
    assert err.max() < 1e-4 / math.log(2)
    assert (res.bpd > 0).all()
    assert res.bpd.shape == (24,) and res.logp.shape == (24,)
    assert res.mean == pytest.approx(res.bpd.mean().item())
    assert res.stderr == pytest.approx(res.bpd.std().item() / math.sqrt(24))
    assert res.stats["dims"] == 6 and res.stats["batches"] == 1


def test_offset_is_seven_bits_for_minus_one_one(build_sde):
    """For the same logp of the [-1,1] data, bpd = -logp/(D ln 2) + 7."""
    sde = build_sde("ve")
    x = random_images(8, 4, seed=3)
    y = -1.0 + 2.0 * dequantize(x, generator=torch.Generator().manual_seed(4))
    oracle = fitted_oracle(y, sde)
    res = bits_per_dim(oracle.score, sde, x, generator=torch.Generator().manual_seed(4),
                       rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.bpd, -res.logp / (4 * math.log(2)) + 7.0)
    assert (res.bpd > 0).all()


def test_batches_and_nfe_add_up(build_sde):
    sde = build_sde("vp")
    x = random_images(10, 3, seed=5)
    oracle = fitted_oracle(-1.0 + 2.0 * dequantize(x, torch.Generator().manual_seed(6)), sde)
    kw = dict(rtol=1e-6, atol=1e-6)
    whole = bits_per_dim(oracle.score, sde, x, generator=torch.Generator().manual_seed(6), **kw)
    split = bits_per_dim(oracle.score, sde, x, generator=torch.Generator().manual_seed(6),
                         batch_size=4, **kw)
    assert split.stats["batches"] == 3
    assert split.nfe == sum(s["nfe"] for s in split.stats["solves"])
    torch.testing.assert_close(split.bpd, whole.bpd, rtol=0, atol=1e-5)


def test_bin_centres_without_dequantization(build_sde, truth):
    sde = build_sde("vp")
    x = random_images(6, 3, seed=7)
    y = -1.0 + 2.0 * (x.double() + 0.5) / 256
    oracle = fitted_oracle(y, sde)
    res = bits_per_dim(oracle.score, sde, x, dequantize=False, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.bpd.numpy(), closed_form_bpd(oracle, sde, y, 2.0, truth, "vp"),
                               atol=5e-3)


def test_hutchinson_bits_per_dim(build_sde):
    sde = build_sde("vp")
    x = random_images(8, 4, seed=8)
    oracle = fitted_oracle(-1.0 + 2.0 * dequantize(x, torch.Generator().manual_seed(9)), sde)
    kw = dict(rtol=1e-5, atol=1e-5)
    exact = bits_per_dim(oracle.score, sde, x, generator=torch.Generator().manual_seed(9), **kw)
    hutch = bits_per_dim(oracle.score, sde, x, generator=torch.Generator().manual_seed(9),
                         trace="hutchinson", n_probes=64, **kw)
    assert abs(hutch.mean - exact.mean) < 3 * hutch.stderr


def test_bad_data_range():
    sde = sd.VPSDE()
    with pytest.raises(ValueError, match=r"data_range='\[0,255\]'.*'\[-1,1\]', '\[0,1\]'"):
        bits_per_dim(sd.GaussianData(torch.zeros(2), torch.eye(2), sde=sde).score, sde,
                     torch.zeros(1, 2, dtype=torch.uint8), data_range="[0,255]")


def test_integer_values_out_of_8bit_range():
    with pytest.raises(ValueError, match=r"8-bit values in 0..255, got min 0 and max 256"):
        dequantize(torch.tensor([[0, 256]]))


def test_float_values_not_multiples_of_1_over_255():
    with pytest.raises(ValueError, match=r"not multiples of 1/255"):
        dequantize(torch.tensor([[0.5, 0.25]]))


def test_float_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        dequantize(torch.tensor([[0.0, 255.0]]))


def test_bad_batch_size():
    sde = sd.VPSDE()
    score = sd.GaussianData(torch.zeros(2), torch.eye(2), sde=sde).score
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        bits_per_dim(score, sde, torch.zeros(1, 2, dtype=torch.uint8), batch_size=0)

"""benchmarks/kdiffusion_loader.py: k-diffusion's sampling.py loaded without its package.

The checks that need k-diffusion skip only when it is not installed
(``pip install --no-deps k-diffusion``; .ci/run installs it).
"""
from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from benchmarks import kdiffusion_loader as loader

SAMPLERS = ("sample_euler", "sample_heun", "sample_lms", "sample_dpmpp_2m",
            "sample_dpmpp_3m_sde", "sample_dpm_fast", "sample_dpm_adaptive",
            "get_sigmas_karras")

needs_kdiffusion = pytest.mark.skipif(
    importlib.util.find_spec("k_diffusion") is None,
    reason=f"k-diffusion is not installed ({loader.INSTALL})")


def _fresh_load():
    loader.load_kdiffusion_sampling.cache_clear()
    return loader.load_kdiffusion_sampling()


@needs_kdiffusion
def test_loader_returns_the_samplers():
    K = _fresh_load()
    missing = [name for name in SAMPLERS if not callable(getattr(K, name, None))]
    assert not missing, missing
    assert K.utils.append_dims is loader.append_dims


@needs_kdiffusion
def test_loading_leaves_sys_modules_as_it_was():
    before = dict(sys.modules)
    _fresh_load()
    added = sorted(set(sys.modules) - set(before))
    assert not [k for k in added if "diffusion" in k], added
    assert not [k for k in sys.modules if k.startswith(loader._PACKAGE)]
    assert sys.modules.get("k_diffusion") is before.get("k_diffusion")


@needs_kdiffusion
def test_sample_euler_is_euler_in_sigma_on_a_gaussian():
    # data N(0, s0^2) in sigma space: D(x, sigma) = x s0^2/(s0^2 + sigma^2), so the ODE
    # dx/dsigma = (x - D)/sigma = x sigma/(s0^2 + sigma^2) and one Euler step multiplies x
    # by 1 + (sigma_next - sigma) sigma/(s0^2 + sigma^2)
    K = _fresh_load()
    s0 = 0.7
    sigmas = torch.tensor([80.0, 20.0, 5.0, 1.5, 0.4, 0.05, 0.0], dtype=torch.float64)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    calls = []

    def denoiser(xs, sigma):
        calls.append(sigma)
        return xs * (s0 ** 2 / (s0 ** 2 + sigma ** 2))[:, None]

    out = K.sample_euler(denoiser, x, sigmas, disable=True)
    factor = 1.0
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        factor *= 1.0 + (s_next - s) * s / (s0 ** 2 + s ** 2)
    assert len(calls) == len(sigmas) - 1
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, x * factor, rtol=1e-12, atol=1e-12)


def test_missing_kdiffusion_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "k_diffusion", None)   # find_spec then answers None
    loader.load_kdiffusion_sampling.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install --no-deps k-diffusion"):
            loader.load_kdiffusion_sampling()
    finally:
        loader.load_kdiffusion_sampling.cache_clear()

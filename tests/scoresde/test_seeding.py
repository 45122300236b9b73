"""Per-sample seeding (sample(seed=), log_likelihood(seed=)): sample i depends on (seed, i)
alone, so the first k samples are the same bit for bit whatever the batch size, the
chunking (batch_size) or the offset they are drawn at (issue 15)."""
import pytest
import torch

import scoresde as sd
import solvers
from scoresde.likelihood.divergence import draw_probes
from scoresde.samplers import SOLVERS

F64 = torch.float64
SDE = sd.VPSDE()
DATA = sd.GaussianData(torch.tensor([1.0, -0.5], dtype=F64), torch.eye(2, dtype=F64) * 0.3,
                       sde=SDE)
DSDE = sd.DiscreteVPSDE.linear(N=20, beta_end=0.2)
DDATA = sd.GaussianData(torch.tensor([1.0, -0.5], dtype=F64), torch.eye(2, dtype=F64) * 0.3,
                        sde=DSDE)
# fixed-step solvers with options that make them draw noise where they can
OPTIONS = {"pc": {"norm": "sample", "steps": 12}, "ddim": {"eta": 1.0, "steps": 6},
           "heun_karras": {"steps": 9, "s_churn": 5.0}, "ddpm": {}}
FIXED = [n for n, s in SOLVERS.items() if not s.adaptive]


def _run(name, n, **kw):
    spec = SOLVERS[name]
    sde, data = (DSDE, DDATA) if spec.requires is not None else (SDE, DATA)
    opts = OPTIONS.get(name, {"steps": 12})
    return sd.sample(data.score, sde, (n, 2), name, seed=11, dtype=F64, **opts, **kw)


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_first_k_identical(name):
    big = _run(name, 8).x
    assert torch.equal(_run(name, 3).x, big[:3])                       # smaller batch
    assert torch.equal(_run(name, 8, batch_size=3).x, big)             # chunked
    assert torch.equal(_run(name, 5, sample_offset=3).x, big[3:])      # rows 3..7 alone
    assert not torch.equal(big[0], big[1])
    assert not torch.equal(sd.sample(DATA.score, SDE, (8, 2), "euler_maruyama", seed=12,
                                     steps=6, dtype=F64).x, _run("euler_maruyama", 8).x)


@pytest.mark.parametrize("name,opts", [("ode", {"rtol": 1e-4, "atol": 1e-4}),
                                       ("sde_adaptive", {"method": "milstein", "rtol": 0.1, "atol": 0.1}),
                                       ("pc", {"steps": 12})])
def test_chunk_aligned_identical(name, opts):
    """Adaptive solvers control the error of a chunk, pc's default norm='batch' averages
    over it: their samples are a function of the chunk, so equal chunks give equal samples
    wherever they sit (what distributed.sample relies on)."""
    big = sd.sample(DATA.score, SDE, (8, 2), name, seed=5, dtype=F64, batch_size=4, **opts)
    tail = sd.sample(DATA.score, SDE, (4, 2), name, seed=5, dtype=F64, sample_offset=4, **opts)
    assert torch.equal(tail.x, big.x[4:])


def test_prior_is_the_seeded_standard_normal_scaled():
    ve = sd.VESDE(sigma_max=5.0)
    res = sd.sample(lambda x, t: -x, ve, (4, 3), "ode_euler", seed=2, steps=1, dtype=F64,
                    return_trajectory=True)
    z = torch.empty(4, 3, dtype=F64)
    expected = 5.0 * solvers.SeededNoise(2, stream=solvers.noise.PRIOR).draw(z)
    assert torch.equal(res.trajectory[0], expected)


def test_generator_path_unchanged():
    """generator=: the prior first, then one randn per update, as before seeding existed."""
    g = torch.Generator().manual_seed(0)
    a = sd.sample(DATA.score, SDE, (4, 2), "euler_maruyama", generator=g, steps=5, dtype=F64)
    g = torch.Generator().manual_seed(0)
    x_T = SDE.prior_sampling((4, 2), generator=g, dtype=F64)
    b = sd.sample(DATA.score, SDE, (4, 2), "euler_maruyama", x_T=x_T, generator=g, steps=5)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_probes_per_sample(probe):
    x = DATA.sample(8, generator=torch.Generator().manual_seed(1))
    kw = dict(trace="hutchinson", probe=probe, n_probes=2, rtol=1e-4, atol=1e-4, seed=3)
    big = sd.log_likelihood(DATA.score, SDE, x, batch_size=4, **kw)
    tail = sd.log_likelihood(DATA.score, SDE, x[4:], sample_offset=4, **kw)
    assert torch.equal(tail.logp_per_probe, big.logp_per_probe[4:])
    # the probes themselves: the first rows of a batch, whatever its size
    p8 = draw_probes(probe, 3, x, seeded=solvers.SeededNoise(3, stream=solvers.noise.PROBES))
    p2 = draw_probes(probe, 3, x[:2], seeded=solvers.SeededNoise(3, stream=solvers.noise.PROBES))
    assert p8.shape == (3, 8, 2) and torch.equal(p2, p8[:, :2])
    # and an unbiased estimate still: mean over samples near the exact one
    exact = sd.log_likelihood(DATA.score, SDE, x, rtol=1e-4, atol=1e-4)
    assert (big.logp - exact.logp).abs().max() < 6 * big.stderr.max() + 1e-3

"""Training losses against closed forms for Gaussian data (float64, seeded)."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

import scoresde as sd
from scoresde.losses import ddpm_loss, dsm_loss, likelihood_time_sampler
from scoresde.nets import MLP

MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COV = torch.tensor([[1.5, 0.3], [0.3, 0.4]], dtype=torch.float64)
EIG = np.linalg.eigvalsh(COV.numpy())


def oracle_models(sde):
    """(exact score model, oracle, data sampler) for Gaussian data N(MEAN, COV) under sde."""
    oracle = sd.GaussianData(MEAN, COV, sde=sde)
    exact = sd.ScoreModel(lambda x, t: oracle.score(x, t), sde, prediction="score",
                          time_input="t")
    return exact, oracle


def expected_eps_error(truth, name, t):
    """E || E[z | x_t] - z ||^2 = tr(I - std^2 C^{-1}) = sum_j a^2 l_j / (a^2 l_j + std^2)
    for x_0 ~ N(mu, Sigma) with eigenvalues l_j, C = a^2 Sigma + std^2 I (Gaussian
    conditioning)."""
    a2 = truth.alpha(name, t) ** 2
    s2 = truth.std(name, t) ** 2
    return sum(a2 * lam / (a2 * lam + s2) for lam in EIG)


def mc_check(values, expected, what, k=4.0):
    mean = values.mean().item()
    se = values.std().item() / math.sqrt(values.numel())
    assert abs(mean - expected) < k * se, (f"{what}: MC mean {mean:.5f} vs closed form "
                                           f"{expected:.5f} (SE {se:.2e})")
    return mean, se


def test_dsm_none_weighting_matches_closed_form_minimum(build_sde, truth):
    sde = build_sde("vp")
    exact, oracle = oracle_models(sde)
    eps = 1e-3
    x0 = oracle.sample(40000, generator=torch.Generator().manual_seed(1))
    per = dsm_loss(exact, sde, x0, eps=eps, generator=torch.Generator().manual_seed(2),
                   reduce="none")
    assert per.shape == (40000,) and per.dtype == torch.float64
    target = integrate.quad(lambda t: expected_eps_error(truth, "vp", t), eps, 1.0)[0] / (1 - eps)
    mc_check(per, target, "none-weighted DSM at the optimum")

    # A perturbed network eps* + delta costs E||delta||^2 more (same t and z draws).
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    perturbed = sd.ScoreModel(lambda x, t: exact.eps(x, t) + delta, sde, time_input="t")
    per_p = dsm_loss(perturbed, sde, x0, eps=eps, generator=torch.Generator().manual_seed(2),
                     reduce="none")
    assert per_p.mean() > per.mean()
    mc_check(per_p - per, delta.pow(2).sum().item(), "excess loss of a perturbed network")


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_likelihood_weighting_plain_and_importance_sampled_agree(build_sde, truth, name):
    sde = build_sde(name)
    exact, oracle = oracle_models(sde)
    eps, n = 1e-3, 40000
    x0 = oracle.sample(n, generator=torch.Generator().manual_seed(3))

    def integrand(t):  # g^2 / std^2 * E||eps* - z||^2
        return (truth.diffusion(name, t) / truth.std(name, t)) ** 2 \
            * expected_eps_error(truth, name, t)
    target = integrate.quad(integrand, eps, 1.0, limit=200)[0] / (1 - eps)

    plain = dsm_loss(exact, sde, x0, weighting="likelihood", eps=eps,
                     generator=torch.Generator().manual_seed(4), reduce="none")
    imp = dsm_loss(exact, sde, x0, weighting="likelihood", importance_sampling=True, eps=eps,
                   generator=torch.Generator().manual_seed(5), reduce="none")
    m_plain, se_plain = mc_check(plain, target, f"{name}: likelihood-weighted DSM")
    m_imp, se_imp = mc_check(imp, target, f"{name}: importance-sampled likelihood DSM")
    assert abs(m_plain - m_imp) < 4 * math.hypot(se_plain, se_imp)
    if name != "ve":  # for VE g^2/std^2 is constant: importance sampling is uniform sampling
        assert se_imp < 0.5 * se_plain, "importance sampling should reduce the variance"


def test_importance_sampler_density_and_weight(build_sde, truth):
    sde = build_sde("vp")
    eps = 1e-4
    sampler = likelihood_time_sampler(sde, eps)
    assert likelihood_time_sampler(sde, eps) is sampler  # computed once per sde
    h = lambda t: (truth.diffusion("vp", t) / truth.std("vp", t)) ** 2  # noqa: E731
    Z = integrate.quad(h, eps, 1.0, limit=200, points=[1e-3, 1e-2, 1e-1])[0]
    assert sampler.normalizer == pytest.approx(Z, rel=1e-4)
    u = torch.rand(200000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    t = sampler.icdf(u)
    assert t.min() >= eps and t.max() <= 1.0
    mean_t = integrate.quad(lambda s: s * h(s), eps, 1.0, limit=200,
                            points=[1e-3, 1e-2, 1e-1])[0] / Z
    mc_check(t, mean_t, "mean of t under q ~ g^2/std^2")
    w = sampler.weight(t)
    assert torch.allclose(w, torch.full_like(w, Z / (1 - eps)), rtol=5e-3)


def test_dsm_draw_order_and_generator_only_randomness(build_sde):
    sde = build_sde("subvp")
    torch.manual_seed(0)
    net = MLP(2, hidden=16, depth=1)
    model = sd.ScoreModel(net, sde)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(7))
    eps = 1e-5
    torch.manual_seed(123)
    a = dsm_loss(model, sde, x0, eps=eps, generator=torch.Generator().manual_seed(8),
                 reduce="none")
    torch.manual_seed(456)  # the global RNG must not matter
    b = dsm_loss(model, sde, x0, eps=eps, generator=torch.Generator().manual_seed(8),
                 reduce="none")
    assert torch.equal(a, b)
    # Documented order: one [batch] uniform for t, then the noise shaped like x0.
    g = torch.Generator().manual_seed(8)
    t = eps + (1.0 - eps) * torch.rand(64, generator=g, dtype=torch.float64)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    alpha, std = sde.marginal_coeffs(t)
    x_t = alpha[:, None] * x0 + std[:, None] * z
    manual = (model.eps(x_t, t) - z).pow(2).sum(1)
    assert torch.allclose(a, manual, rtol=1e-12, atol=0)
    mean = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(8))
    total = dsm_loss(model, sde, x0, generator=torch.Generator().manual_seed(8), reduce="sum")
    assert mean.item() == pytest.approx(a.mean().item(), rel=1e-12)
    assert total.item() == pytest.approx(a.sum().item(), rel=1e-12)


def test_dsm_accepts_plain_score_callable(build_sde):
    sde = build_sde("ve")
    exact, oracle = oracle_models(sde)
    x0 = oracle.sample(256, generator=torch.Generator().manual_seed(9))
    for kw in ({}, {"weighting": "likelihood"}, {"weighting": "likelihood",
                                                  "importance_sampling": True}):
        a = dsm_loss(exact, sde, x0, generator=torch.Generator().manual_seed(1), **kw)
        b = dsm_loss(oracle.score, sde, x0, generator=torch.Generator().manual_seed(1), **kw)
        assert a.item() == pytest.approx(b.item(), rel=1e-10), kw


class RecordingNet(nn.Module):
    """eps network that records what it receives."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.seen = []

    def forward(self, x, t_in):
        self.seen.append((x.detach().clone(), t_in.clone()))
        return self.scale * x


def test_ddpm_loss_uses_integer_timesteps_and_eq14():
    sde = sd.DiscreteVPSDE.linear(N=1000)
    net = RecordingNet()
    model = sd.ScoreModel(net, sde)
    x0 = torch.randn(32, 3, 2, 2, generator=torch.Generator().manual_seed(10),
                     dtype=torch.float64)
    per = ddpm_loss(model, sde, x0, generator=torch.Generator().manual_seed(11), reduce="none")
    x_seen, t_seen = net.seen[-1]
    assert t_seen.dtype == torch.long
    g = torch.Generator().manual_seed(11)
    i = torch.randint(0, 1000, (32,), generator=g)
    z = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    assert torch.equal(t_seen, i)
    abar = torch.cumprod(1.0 - sde.betas, 0)[i].reshape(-1, 1, 1, 1)
    x_i = abar.sqrt() * x0 + (1.0 - abar).sqrt() * z  # Ho et al. 2020, eq. 14
    assert torch.allclose(x_seen, x_i, rtol=1e-14, atol=1e-14)
    assert torch.allclose(per, (0.5 * x_i - z).pow(2).sum((1, 2, 3)), rtol=1e-12, atol=0)
    loss = ddpm_loss(model, sde, x0, generator=torch.Generator().manual_seed(11))
    loss.backward()
    assert net.scale.grad is not None and net.scale.grad != 0


def test_loss_argument_errors(build_sde):
    sde = build_sde("vp")
    exact, oracle = oracle_models(sde)
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="importance_sampling"):
        dsm_loss(exact, sde, x0, importance_sampling=True)
    with pytest.raises(ValueError, match="weighting"):
        dsm_loss(exact, sde, x0, weighting="sigma")
    with pytest.raises(ValueError, match="reduce"):
        dsm_loss(exact, sde, x0, reduce="max")
    with pytest.raises(ValueError, match="eps"):
        dsm_loss(exact, sde, x0, eps=1.5)
    with pytest.raises(TypeError, match="DiscreteVPSDE"):
        ddpm_loss(exact, sde, x0)
    with pytest.raises(TypeError, match="x0"):
        dsm_loss(exact, sde, [[0.0, 0.0]])


def test_importance_sampler_cache_does_not_keep_the_sde_alive():
    import gc
    import weakref
    sde = sd.VPSDE(beta_min=0.2, beta_max=10.0)
    sampler = likelihood_time_sampler(sde, 1e-3)
    assert sampler.sde is sde
    ref = weakref.ref(sde)
    del sde
    gc.collect()
    assert ref() is None
    with pytest.raises(RuntimeError, match="no longer exists"):
        sampler.weight(torch.tensor([0.5]))

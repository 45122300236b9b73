import math

import pytest
import torch

from solvers import (GaussianNoise, ReplayNoise, Update, euler_maruyama_step, integrate,
                     langevin_corrector, predictor_corrector_step)

from solvers_problems import DTYPE

M, S = 1.5, 0.7  # target N(M, S^2) per coordinate


def gaussian_score(x, t):
    return -(x - M) / S**2


def stay(i, x, t0, t1, noise):
    """A predictor that does nothing: the chain is the corrector alone, at fixed target."""
    return Update(x)


def corrector_chain(x0, snr, moves, seed, n_corrector=5):
    step = predictor_corrector_step(stay, langevin_corrector(gaussian_score, snr), n_corrector)
    ts = torch.linspace(0, 1, moves // n_corrector + 1, dtype=DTYPE)
    return integrate(step, x0, ts, noise=GaussianNoise(torch.Generator().manual_seed(seed))).x


def assert_moments(x, mean, var, n_se=4.0):
    n = x.numel()
    assert abs(x.mean().item() - mean) < n_se * math.sqrt(var / n)
    assert abs(x.var().item() - var) < n_se * var * math.sqrt(2 / n)


def test_langevin_chain_converges_to_the_target():
    # Start far from the target; 1500 moves of relative size eps/S^2 ~ 2 snr^2 = 0.005 forget
    # the start (e^-7.5). The step rule's own bias, var * (4/d + snr^2) ~ 0.45% (see
    # test_per_sample_step_rule_bias_in_low_dimension), is below the 0.8% Monte-Carlo error.
    x0 = torch.randn(16, 2048, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    x = corrector_chain(x0, snr=0.05, moves=1500, seed=2)
    assert_moments(x, M, S**2)


def test_per_sample_step_rule_bias_in_low_dimension():
    # eps = 2 (snr ||z|| / ||g||)^2 uses the same draw z it then injects, and ||g|| of the
    # same sample: E[2 eps ||z||^2] carries E||z||^4 = d(d + 2) and E[1 / ||x - m||^2], so the
    # stationary variance is S^2 (1 + 4/d + snr^2) to first order (docs/solvers.md).
    d, snr = 32, 0.16
    x0 = M + S * torch.randn(1000, d, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    x = corrector_chain(x0, snr=snr, moves=600, seed=4)
    assert_moments(x, M, S**2 * (1 + 4 / d + snr**2))


def test_predictor_corrector_reverse_sde_reaches_the_data_distribution():
    # Data N(m, s0^2) under dx = sqrt(2t) dW has p_t = N(m, s0^2 + t^2) and score
    # -(x - m) / (s0^2 + t^2); run the reverse-time SDE dx = -2t score dt + sqrt(2t) dW-bar
    # from t = 1 to 0 with Euler--Maruyama + one Langevin move per step.
    m, s0, d = 1.0, 0.5, 2048
    score = lambda x, t: -(x - m) / (s0**2 + t**2)
    predictor = euler_maruyama_step(lambda t, x: -2 * t * score(x, t), lambda t, x: torch.sqrt(2 * t))
    step = predictor_corrector_step(predictor, langevin_corrector(score, snr=0.05), n_corrector=1)
    g = torch.Generator().manual_seed(0)
    x1 = m + math.sqrt(s0**2 + 1) * torch.randn(16, d, generator=g, dtype=DTYPE)
    x = integrate(step, x1, torch.linspace(1, 0, 101, dtype=DTYPE), noise=GaussianNoise(g)).x
    assert_moments(x, m, s0**2)


def test_one_corrector_move_is_the_formula_per_sample():
    x = torch.tensor([[1.0, 2.0], [0.0, -3.0]], dtype=DTYPE)
    z = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=DTYPE)
    score = lambda x, t: -x * t
    alpha = lambda t: 0.9
    t = torch.tensor(0.5, dtype=DTYPE)
    out = langevin_corrector(score, snr=0.2, alpha_fn=alpha)(x, t, ReplayNoise([z]))
    for i in range(2):  # Song et al. 2021, Algorithm 5, sample by sample
        g = -x[i] * 0.5
        eps = 2 * 0.9 * (0.2 * z[i].norm() / g.norm()) ** 2
        assert torch.allclose(out[i], x[i] + eps * g + torch.sqrt(2 * eps) * z[i], rtol=1e-14, atol=0)


def test_a_sample_does_not_depend_on_its_batch():
    gen = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(1, 3, 4, generator=gen, dtype=DTYPE) for _ in range(3))
    za, zb, zc = (torch.randn(1, 3, 4, generator=gen, dtype=DTYPE) for _ in range(3))
    corrector = langevin_corrector(gaussian_score, snr=0.16)
    t = torch.tensor(0.3, dtype=DTYPE)
    with_b = corrector(torch.cat([a, b]), t, ReplayNoise([torch.cat([za, zb])]))
    with_c = corrector(torch.cat([a, 10 * c]), t, ReplayNoise([torch.cat([za, zc])]))
    alone = corrector(a, t, ReplayNoise([za]))
    assert torch.allclose(with_b[0], with_c[0], rtol=1e-14, atol=0)
    assert torch.allclose(with_b[0], alone[0], rtol=1e-14, atol=0)


def test_correctors_at_the_current_time_then_the_predictor():
    """score_sde's order (pc_sampler): correct at t_i, then predict t_i -> t_{i+1}."""
    calls = []

    def predictor(i, x, t0, t1, noise):
        calls.append(("P", i, t0.item(), t1.item()))
        return Update(x + 1)

    def corrector(x, t, noise):
        calls.append(("C", t.item()))
        return 2 * x

    step = predictor_corrector_step(predictor, corrector, n_corrector=2)
    out = step(0, torch.ones(2, 1, dtype=DTYPE), torch.tensor(1.0, dtype=DTYPE),
               torch.tensor(0.5, dtype=DTYPE), None)
    assert calls == [("C", 1.0), ("C", 1.0), ("P", 0, 1.0, 0.5)]
    assert out.noise_scale is None and torch.all(out.mean == 5.0)
    bare = predictor_corrector_step(predictor, None, n_corrector=3)
    assert torch.all(bare(0, torch.ones(1, 1), torch.tensor(0.0), torch.tensor(1.0), None).mean == 2.0)


def test_batch_norms_give_one_step_size_for_the_batch():
    """norm="batch" (score_sde): the step uses the batch means of the per-sample norms."""
    x = torch.tensor([[1.0, 2.0], [0.0, -3.0]], dtype=DTYPE)
    z = torch.tensor([[0.5, -1.0], [2.0, 0.1]], dtype=DTYPE)
    score = lambda x, t: -x * t
    t = torch.tensor(0.5, dtype=DTYPE)
    out = langevin_corrector(score, snr=0.2, alpha_fn=lambda t: 0.9, norm="batch")(
        x, t, ReplayNoise([z]))
    g = -x * 0.5
    eps = 2 * 0.9 * (0.2 * z.norm(dim=1).mean() / g.norm(dim=1).mean()) ** 2
    assert torch.allclose(out, x + eps * g + torch.sqrt(2 * eps) * z, rtol=1e-14, atol=0)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_invalid_corrector_count(bad):
    with pytest.raises((TypeError, ValueError), match="n_corrector"):
        predictor_corrector_step(stay, None, n_corrector=bad)


@pytest.mark.parametrize("bad", [0.0, -0.1, "0.1"])
def test_invalid_snr(bad):
    with pytest.raises((TypeError, ValueError), match="snr"):
        langevin_corrector(gaussian_score, snr=bad)

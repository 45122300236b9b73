import math

import pytest
import torch

from solvers import (FIXED_SDE_METHODS, GaussianNoise, NonFiniteStateError, RecordingNoise, ReplayNoise,
                     SolverError, broadcast_diffusion, euler_maruyama_step, sdeint_fixed)

from solvers_problems import DTYPE, fitted_slope, ou_moments

THETA, SIGMA, X_START = 1.0, 1.0, 1.0


def ou(direction: float):
    """OU drift/diffusion contracting in the direction of travel (reverse time: t decreasing)."""
    drift = lambda t, x: -direction * THETA * x
    diffusion = lambda t, x: torch.full((x.shape[0],), SIGMA, dtype=x.dtype)
    return drift, diffusion


@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0)])
def test_euler_maruyama_weak_order_one(t0, t1):
    # Every step size sees the same fine Brownian path (coarse increments are sums of fine
    # ones) with antithetic pairs (z, -z), so the sample mean of this linear SDE is exactly
    # its expectation. For the variance, the Monte-Carlo error is removed by coupling: the
    # exact OU transition over the fine steps, x <- e^{-theta d} x + sigma sqrt((1 - e^{-2 theta d})
    # / (2 theta)) xi, driven by the same normals, has exactly the closed-form law, and its
    # sample variance carries nearly the same sampling error as the Euler--Maruyama runs.
    n_fine, half = 32, 12_000
    z = torch.randn(n_fine, half, 1, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    z = torch.cat([z, -z], dim=1)
    duration = abs(t1 - t0)
    mean_exact, var_exact = ou_moments(X_START, THETA, SIGMA, duration)
    decay = math.exp(-THETA * duration / n_fine)
    x_coupled = torch.full((2 * half, 1), X_START, dtype=DTYPE)
    for xi in z:
        x_coupled = decay * x_coupled + SIGMA * math.sqrt((1 - decay**2) / (2 * THETA)) * xi
    var_coupled = x_coupled.var().item()
    # antithetic partners have equal squared deviations: `half` independent terms
    assert abs(var_coupled - var_exact) < 4 * var_exact * math.sqrt(2 / half)

    direction = 1.0 if t1 > t0 else -1.0
    drift, diffusion = ou(direction)
    x0 = torch.full((2 * half, 1), X_START, dtype=DTYPE)
    hs, mean_err, var_err = [], [], []
    for n in (4, 8, 16, 32):
        block = n_fine // n
        coarse = z.reshape(n, block, 2 * half, 1).sum(1) / math.sqrt(block)
        sol = sdeint_fixed(drift, diffusion, x0, torch.linspace(t0, t1, n + 1, dtype=DTYPE),
                           noise=ReplayNoise(coarse))
        hs.append(duration / n)
        mean_err.append(abs(sol.x.mean().item() - mean_exact))
        var_err.append(abs(sol.x.var().item() - var_coupled))
        # Euler--Maruyama's mean for this SDE is known exactly: x0 (1 - theta h)^n.
        assert sol.x.mean().item() == pytest.approx(X_START * (1 - THETA * duration / n) ** n, rel=1e-12)
    assert abs(fitted_slope(hs, mean_err) - 1) < 0.3, mean_err
    assert abs(fitted_slope(hs, var_err) - 1) < 0.3, var_err


def test_same_seed_same_samples_bit_for_bit():
    drift, diffusion = ou(1.0)
    x0 = torch.zeros(64, 3, dtype=DTYPE)
    ts = torch.linspace(0, 1, 21, dtype=DTYPE)
    run = lambda seed: sdeint_fixed(drift, diffusion, x0, ts,
                                    noise=GaussianNoise(torch.Generator().manual_seed(seed))).x
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_draws_follow_the_randomness_contract():
    # One torch.randn(x.shape, generator=g, dtype, device) per step, in order.
    drift, diffusion = ou(1.0)
    x0 = torch.zeros(5, 2, dtype=DTYPE)
    recorder = RecordingNoise(GaussianNoise(torch.Generator().manual_seed(3)))
    sdeint_fixed(drift, diffusion, x0, [0.0, 0.5, 1.0], noise=recorder)
    g = torch.Generator().manual_seed(3)
    expected = [torch.randn((5, 2), generator=g, dtype=DTYPE) for _ in range(2)]
    assert len(recorder.draws) == 2
    assert all(torch.equal(a, b) for a, b in zip(recorder.draws, expected))


def test_replay_reproduces_a_recorded_run_exactly():
    drift = lambda t, x: torch.sin(x) * t
    diffusion = lambda t, x: 0.5 + 0.1 * x.abs()  # state-dependent, like x
    x0 = torch.randn(16, 4, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    ts = torch.linspace(1, 0, 11, dtype=DTYPE)
    recorder = RecordingNoise(GaussianNoise(torch.Generator().manual_seed(5)))
    first = sdeint_fixed(drift, diffusion, x0, ts, noise=recorder)
    replay = ReplayNoise(recorder.draws)
    second = sdeint_fixed(drift, diffusion, x0, ts, noise=replay)
    assert torch.equal(first.x, second.x)
    with pytest.raises(SolverError, match="exhausted: all 10 given tensors were used"):
        replay.draw(x0)


def test_one_step_is_the_formula_in_reverse_time():
    x = torch.tensor([[1.0, -2.0]], dtype=DTYPE)
    z = torch.tensor([[0.3, -0.7]], dtype=DTYPE)
    step = euler_maruyama_step(lambda t, x: t * x, lambda t, x: 2 * t)
    mean, scale = step(0, x, torch.tensor(0.8, dtype=DTYPE), torch.tensor(0.6, dtype=DTYPE), None)
    out = mean + scale * z
    expected = x + 0.8 * x * (0.6 - 0.8) + 2 * 0.8 * math.sqrt(0.2) * z
    assert torch.allclose(out, expected, rtol=1e-14, atol=0)


def test_stats_count_drift_and_diffusion_calls():
    drift, diffusion = ou(1.0)
    sol = sdeint_fixed(drift, diffusion, torch.zeros(3, 1, dtype=DTYPE), torch.linspace(0, 1, 8, dtype=DTYPE),
                       noise=GaussianNoise(torch.Generator().manual_seed(0)))
    assert sol.stats == {"steps": 7, "nfe": 7, "nfe_diffusion": 7}


@pytest.mark.parametrize("g_shape", [(), (6,), (6, 1, 1), (6, 2, 3), (2, 3)])
def test_accepted_diffusion_shapes(g_shape):
    x = torch.ones(6, 2, 3, dtype=DTYPE)
    g = broadcast_diffusion(torch.full(g_shape, 2.0, dtype=DTYPE), x)
    assert (g * x).shape == x.shape and torch.all(g * x == 2.0)


@pytest.mark.parametrize("g_shape", [(5,), (6, 2), (6, 2, 4)])
def test_rejected_diffusion_shapes(g_shape):
    with pytest.raises(ValueError, match=rf"diffusion returned shape {g_shape}".replace("(", r"\(").replace(")", r"\)")):
        broadcast_diffusion(torch.ones(g_shape, dtype=DTYPE), torch.ones(6, 2, 3, dtype=DTYPE))


def test_nan_drift_is_reported_with_step_and_time():
    drift = lambda t, x: torch.full_like(x, float("nan")) if t < 0.45 else -x
    with pytest.raises(NonFiniteStateError) as info:
        sdeint_fixed(drift, lambda t, x: 1.0, torch.zeros(2, 1, dtype=DTYPE), torch.linspace(1, 0, 11, dtype=DTYPE),
                     noise=GaussianNoise(torch.Generator().manual_seed(0)))
    # the drift is evaluated at the step's start: first NaN in the step 0.4 -> 0.3, step 7.
    assert info.value.step == 7 and info.value.t == pytest.approx(0.3)


def test_missing_noise_and_unknown_method():
    drift, diffusion = ou(1.0)
    with pytest.raises(ValueError, match="needs a noise source"):
        sdeint_fixed(drift, diffusion, torch.zeros(2, 1), [0.0, 1.0], noise=None)
    with pytest.raises(ValueError, match="euler_maruyama"):
        sdeint_fixed(drift, diffusion, torch.zeros(2, 1), [0.0, 1.0], noise=GaussianNoise(), method="heun")
    assert list(FIXED_SDE_METHODS) == ["euler_maruyama"]

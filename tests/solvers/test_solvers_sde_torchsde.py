import math
import warnings

import pytest
import torch

from solvers import TORCHSDE_METHODS, CountingFunction, MaxStepsError, NonFiniteStateError, sdeint_torchsde

from solvers_problems import DTYPE, ou_moments

N_PATHS = 20_000


def ou(direction: float):
    """dx = -theta x dt + dW with theta = 1, contracting in the direction of travel."""
    return (lambda t, x: -direction * x), (lambda t, x: torch.ones(x.shape[0], dtype=x.dtype))


@pytest.fixture(autouse=True)
def _quiet_torchsde():
    # torchsde warns that adaptive Euler is only guaranteed for additive noise (ours is
    # additive, but declared diagonal) and when an adaptive step hits dt_min.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


@pytest.mark.parametrize("method", sorted(TORCHSDE_METHODS))
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0)])
@pytest.mark.parametrize("adaptive", [False, True])
def test_reaches_closed_form_moments(method, t0, t1, adaptive):
    direction = 1.0 if t1 > t0 else -1.0
    drift, diffusion = ou(direction)
    x0 = torch.ones(N_PATHS, 1, dtype=DTYPE)
    options = dict(dt=0.05, rtol=2e-3, atol=2e-3) if adaptive else dict(dt=1 / 64)
    sol = sdeint_torchsde(drift, diffusion, x0, t0, t1, method=method, adaptive=adaptive,
                          generator=torch.Generator().manual_seed(0), **options)
    mean, var = ou_moments(1.0, 1.0, 1.0, 1.0)
    se_mean, se_var = math.sqrt(var / N_PATHS), var * math.sqrt(2 / N_PATHS)
    assert abs(sol.x.mean().item() - mean) < 4 * se_mean
    assert abs(sol.x.var().item() - var) < 4 * se_var
    if adaptive:
        assert sol.stats["steps"] == sol.stats["accepted"] + sol.stats["rejected"] >= 1
    else:
        assert sol.stats["steps"] == 64


@pytest.mark.parametrize("method", sorted(TORCHSDE_METHODS))
def test_same_generator_seed_is_bit_identical(method):
    drift = lambda t, x: -x * t
    diffusion = lambda t, x: 0.3 + 0 * x
    x0 = torch.randn(32, 2, 3, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    run = lambda seed: sdeint_torchsde(drift, diffusion, x0, 1.0, 0.0, method=method, dt=0.05,
                                       generator=torch.Generator().manual_seed(seed)).x
    first = run(11)
    assert first.shape == x0.shape
    assert torch.equal(first, run(11))
    assert not torch.equal(first, run(12))


@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0), (1000.0, 999.0), (-3.0, 7.0)])
@pytest.mark.parametrize("dt, n_steps", [(0.1, 10), (0.3, 4), (1 / 3, 3), (0.01, 100), (5.0, 1)])
def test_fixed_mode_takes_exactly_the_requested_steps(t0, t1, dt, n_steps):
    # torchsde alone takes 11 steps for dt = 0.1 on [0, 1] (the last one ~1e-16 long).
    dt = dt * abs(t1 - t0)
    counted = CountingFunction(lambda t, x: -x)
    sol = sdeint_torchsde(counted, lambda t, x: 1.0, torch.zeros(4, 1, dtype=DTYPE), t0, t1,
                          method="euler", dt=dt, generator=torch.Generator().manual_seed(0))
    assert sol.stats["steps"] == n_steps
    # one evaluation per step, plus torchsde's shape check at t0
    assert sol.stats["nfe"] == counted.calls == n_steps + 1


def test_reverse_time_drift_sees_decreasing_times_inside_the_interval():
    times = []

    def drift(t, x):
        times.append(t.item())
        return -x

    sdeint_torchsde(drift, lambda t, x: 1.0, torch.zeros(4, 1, dtype=DTYPE), 1.0, 0.25, method="euler",
                    dt=0.25, generator=torch.Generator().manual_seed(0))
    # torchsde's shape check at t0, then the left end of each step (the steps are enlarged
    # by a relative 4 n eps so that exactly n of them reach the end)
    assert times == pytest.approx([1.0, 1.0, 0.75, 0.5], rel=1e-14)


def test_reverse_time_euler_step_is_the_formula():
    # One step of size 0.5 from t = 1 to 0.5: x1 = x0 + b(1, x0) (0.5 - 1) + g dW, |dW| ~ N(0, 0.5);
    # with g = 0 the step is deterministic.
    x0 = torch.tensor([[2.0], [-1.0]], dtype=DTYPE)
    sol = sdeint_torchsde(lambda t, x: t * x, lambda t, x: 0.0, x0, 1.0, 0.5, method="euler", dt=0.5)
    assert torch.allclose(sol.x, x0 + 1.0 * x0 * (0.5 - 1.0), rtol=1e-15, atol=0)


def test_max_steps_raises_in_adaptive_mode():
    drift, diffusion = ou(-1.0)
    with pytest.raises(MaxStepsError) as info:
        sdeint_torchsde(drift, diffusion, torch.zeros(8, 1, dtype=DTYPE), 1.0, 0.0, method="euler", dt=0.01,
                        adaptive=True, rtol=1e-6, atol=1e-6, max_steps=5,
                        generator=torch.Generator().manual_seed(0))
    err = info.value
    assert err.max_steps == 5 and err.t_end == 0.0 and 0.0 < err.t < 1.0


def test_fixed_mode_checks_max_steps_up_front():
    calls = CountingFunction(lambda t, x: -x)
    with pytest.raises(ValueError, match="dt=0.01 needs 100 steps .* max_steps=99"):
        sdeint_torchsde(calls, lambda t, x: 1.0, torch.zeros(2, 1, dtype=DTYPE), 1.0, 0.0, method="euler",
                        dt=0.01, max_steps=99)
    assert calls.calls == 0


def test_nan_drift_names_step_and_time():
    drift = lambda t, x: torch.full_like(x, float("nan")) if t < 0.45 else -x
    with pytest.raises(NonFiniteStateError) as info:
        sdeint_torchsde(drift, lambda t, x: 1.0, torch.zeros(2, 1, dtype=DTYPE), 1.0, 0.0, method="euler", dt=0.1,
                        generator=torch.Generator().manual_seed(0))
    # steps start at 1.0, 0.9, ...; the drift at the start of step 7 (t = 0.4) is NaN
    assert info.value.step == 7 and info.value.t == pytest.approx(0.4)
    assert "step 7 (t=0.4)" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="heun"), ValueError, "euler, milstein, srk, reversible_heun"),
        (dict(dt=-0.1), ValueError, "dt must be a positive finite number"),
        (dict(t1=1.0), ValueError, "t0 and t1 must differ"),
        (dict(adaptive=True, rtol=-1.0), ValueError, "rtol"),
        (dict(adaptive=True, dt_min=0.5), ValueError, "dt_min must be at most dt"),
        (dict(max_steps=0), ValueError, "max_steps"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    args = dict(method="euler", dt=0.1, t1=0.0)
    args.update(kwargs)
    t1 = args.pop("t1")
    with pytest.raises(error, match=match):
        sdeint_torchsde(lambda t, x: -x, lambda t, x: 1.0, torch.zeros(2, 1, dtype=DTYPE), 1.0, t1, **args)

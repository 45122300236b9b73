import math
import pickle

import pytest
import torch

from solvers import (ADAPTIVE_ODE_METHODS, CountingFunction, MaxStepsError, NonFiniteStateError,
                     SolverError, odeint_adaptive)
from solvers.interval_field import IntervalField

from solvers_problems import DTYPE, X0, linear_field, linear_solution

METHODS = sorted(ADAPTIVE_ODE_METHODS)
DIRECTIONS = [(0.0, 1.0), (1.0, 0.0)]

# Global error / tolerance allowed. fehlberg2 (RKF1(2)) controls the error of its
# first-order formula, whose error constant Fehlberg made tiny on purpose, and advances with
# the second-order one: its estimate understates the real error by ~2 orders of magnitude.
ERROR_FACTOR = {name: 20.0 for name in METHODS}
ERROR_FACTOR["fehlberg2"] = 1000.0


def start_and_exact(t0, t1):
    x_start = linear_solution(X0, 0.0, t0)
    return x_start, linear_solution(x_start, t0, t1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t0, t1", DIRECTIONS)
def test_accuracy_follows_tolerance(method, t0, t1):
    x_start, exact = start_and_exact(t0, t1)
    errors, nfes = [], []
    for tol in (1e-3, 1e-6):
        counted = CountingFunction(linear_field)
        sol = odeint_adaptive(counted, x_start, t0, t1, method=method, rtol=tol, atol=tol)
        error = (sol.x - exact).abs().max().item()
        assert error <= ERROR_FACTOR[method] * tol, (method, tol, error)
        assert sol.stats["nfe"] == counted.calls
        errors.append(error)
        nfes.append(sol.stats["nfe"])
    assert errors[1] < errors[0]
    assert nfes[1] > nfes[0]


@pytest.mark.parametrize("method", METHODS)
def test_step_statistics_are_consistent(method):
    sol = odeint_adaptive(linear_field, X0, 0.0, 2.0, method=method, rtol=1e-6, atol=1e-6)
    stats = sol.stats
    assert stats["accepted"] >= 1
    if stats["rejected"] is None:
        assert ADAPTIVE_ODE_METHODS[method].backend == "scipy"
        assert stats["steps"] == stats["accepted"]
    else:
        assert stats["steps"] == stats["accepted"] + stats["rejected"]


@pytest.mark.parametrize("method, stages", [("dopri5", 6), ("RK45", 6), ("RK23", 3), ("DOP853", 12)])
def test_attempt_count_matches_evaluations(method, stages):
    # FSAL pairs cost `stages` new evaluations per attempt, accepted or rejected, plus
    # f(t0) and the trial evaluation of the first-step choice: an independent check of
    # the accepted/rejected bookkeeping.
    sol = odeint_adaptive(linear_field, X0, 0.0, 3.0, method=method, rtol=1e-8, atol=1e-8,
                          first_step=0.5)
    assert sol.stats["rejected"] >= 1
    assert sol.stats["nfe"] == 1 + stages * sol.stats["steps"]


def test_scipy_and_torchdiffeq_agree():
    tol = 1e-8
    a = odeint_adaptive(linear_field, X0, 1.0, 0.0, method="dopri5", rtol=tol, atol=tol)
    b = odeint_adaptive(linear_field, X0, 1.0, 0.0, method="RK45", rtol=tol, atol=tol)
    c = odeint_adaptive(linear_field, X0, 1.0, 0.0, method="DOP853", rtol=tol, atol=tol)
    assert (a.x - b.x).abs().max().item() < 20 * tol
    assert (a.x - c.x).abs().max().item() < 20 * tol


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t0, t1", [(0.2, 0.9), (1.0, 1e-3)])
@pytest.mark.parametrize("first_step", [None, "span"])
def test_field_never_evaluated_outside_the_interval(method, t0, t1, first_step):
    lo, hi = min(t0, t1), max(t0, t1)
    direction = 1.0 if t1 > t0 else -1.0
    seen = []

    def field(t, x):
        value = t.item()
        if not lo <= value <= hi:
            raise AssertionError(f"field evaluated at t={value!r} outside [{lo}, {hi}]")
        seen.append(value)
        return -direction * 10.0 * x * (1 + t)  # decays fast in the direction of travel

    step = abs(t1 - t0) if first_step == "span" else None
    sol = odeint_adaptive(field, X0, t0, t1, method=method, rtol=1e-3, atol=1e-6, first_step=step,
                          t_eval=[t0 + 0.5 * (t1 - t0), t1])
    assert t0 in seen and min(seen) >= lo and max(seen) <= hi
    exact = X0 * math.exp(-10.0 * abs((t1 + t1 * t1 / 2) - (t0 + t0 * t0 / 2)))
    assert (sol.x - exact).abs().max().item() < 1e-2 * ERROR_FACTOR[method]


def test_interval_guard_flags_a_backend_that_leaves_the_interval():
    guard = IntervalField(lambda t, x: x * t, X0, 0.0, 1.0)
    out = guard(torch.tensor(1.5, dtype=DTYPE), X0)
    assert torch.equal(out, X0)  # the field saw t = 1, the end point
    with pytest.raises(SolverError, match="outside"):
        guard.check_interval("test")
    ok = IntervalField(lambda t, x: x, X0, 0.0, 1.0)
    ok(torch.tensor(1.0 + 1e-16, dtype=DTYPE), X0)  # rounding-level: clamped silently
    ok.check_interval("test")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t0, t1", DIRECTIONS)
def test_max_steps_raises(method, t0, t1):
    with pytest.raises(MaxStepsError) as info:
        odeint_adaptive(linear_field, X0, t0, t1, method=method, rtol=1e-10, atol=1e-10, max_steps=3)
    err = info.value
    assert err.max_steps == 3 and err.t_end == t1
    assert min(t0, t1) <= err.t <= max(t0, t1) and err.t != t1
    assert "max_steps=3" in str(err) and "rtol" in str(err)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("t0, t1", DIRECTIONS)
def test_nan_field_raises_with_step_and_time(method, t0, t1):
    def field(t, x):
        bad = t > 0.5 if t1 > t0 else t < 0.5
        return torch.full_like(x, float("nan")) if bad else -x

    with pytest.raises(NonFiniteStateError) as info:
        odeint_adaptive(field, X0, t0, t1, method=method, rtol=1e-6, atol=1e-6)
    err = info.value
    assert (err.t > 0.5) if t1 > t0 else (err.t < 0.5)
    assert err.step >= 1
    assert f"step {err.step} " in str(err) and f"t={err.t:.6g}" in str(err)


def test_nan_at_the_start_is_step_zero():
    with pytest.raises(NonFiniteStateError) as info:
        odeint_adaptive(lambda t, x: x / 0 * 0, X0, 0.3, 0.0)
    assert info.value.step == 0 and info.value.t == pytest.approx(0.3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=-1e-3), "rtol must be a positive finite number, got -0.001"),
        (dict(atol=0.0), "atol must be a positive finite number, got 0.0"),
        (dict(rtol=float("nan")), "rtol"),
        (dict(max_steps=0), "max_steps must be a positive int, got 0"),
        (dict(first_step=2.0), "first_step must be at most"),
        (dict(t_eval=[0.5, 2.0]), "t_eval"),
        (dict(t_eval=[0.6, 0.5]), "t_eval must be strictly monotone"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        odeint_adaptive(linear_field, X0, 0.0, 1.0, **kwargs)


def test_equal_end_points_and_bad_types():
    with pytest.raises(ValueError, match="t0 and t1 must differ"):
        odeint_adaptive(linear_field, X0, 0.5, 0.5)
    with pytest.raises(TypeError, match="max_steps"):
        odeint_adaptive(linear_field, X0, 0.0, 1.0, max_steps=10.5)
    with pytest.raises(TypeError, match="x0"):
        odeint_adaptive(linear_field, X0.tolist(), 0.0, 1.0)


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_field_output_contract_is_checked(method):
    with pytest.raises(ValueError, match=r"returned \(3,\) torch.float64 for a state \(3, 2\)"):
        odeint_adaptive(lambda t, x: x.sum(1), X0, 0.0, 1.0, method=method)
    with pytest.raises(ValueError, match="of its dtype"):
        odeint_adaptive(lambda t, x: x.float(), X0, 0.0, 1.0, method=method)


def test_unknown_method_lists_every_name():
    with pytest.raises(ValueError) as info:
        odeint_adaptive(linear_field, X0, 0.0, 1.0, method="rk45")
    for name in METHODS:
        assert name in str(info.value)


@pytest.mark.parametrize("method", ["dopri5", "RK45", "DOP853", "LSODA"])
def test_t_eval_reports_states_along_the_way(method):
    t_eval = [1.0, 0.7, 0.25, 0.0]
    sol = odeint_adaptive(linear_field, X0, 1.0, 0.0, method=method, rtol=1e-8, atol=1e-8, t_eval=t_eval)
    assert sol.ts.tolist() == t_eval and sol.xs.shape == (4, *X0.shape)
    assert torch.equal(sol.xs[0], X0) and torch.equal(sol.xs[-1], sol.x)
    for t, x in zip(t_eval, sol.xs):
        assert (x - linear_solution(X0, 1.0, t)).abs().max().item() < 1e-6


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_float32_state_keeps_its_dtype(method):
    sol = odeint_adaptive(linear_field, X0.float(), 0.0, 1.0, method=method, rtol=1e-4, atol=1e-4)
    assert sol.x.dtype == torch.float32
    assert (sol.x.double() - linear_solution(X0, 0.0, 1.0)).abs().max().item() < 1e-3


def test_higher_dimensional_state_and_progress_bar():
    x0 = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    sol = odeint_adaptive(lambda t, x: -x, x0, 0.0, 1.0, method="bosh3", progress=True)
    assert sol.x.shape == x0.shape
    assert (sol.x - x0 * math.exp(-1)).abs().max().item() < 1e-4

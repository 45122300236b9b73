"""Solves end with an error naming the solver, the step and the time: never a hang, never a
silent NaN/inf result (the solvers' side of tests/scoresde/test_termination.py)."""
import pickle
import re

import pytest
import torch

import solvers
from solvers import (MaxStepsError, NonFiniteStateError, SolverError, naming_solver, odeint_adaptive,
                     odeint_fixed, sdeint_fixed, sdeint_torchsde)

DTYPE = torch.float64
BIG = torch.finfo(DTYPE).max
X0 = torch.ones(2, 3, dtype=DTYPE)
STEP_AND_T = re.compile(r"step (\d+) \(t=([-+.\deE]+)\)")


def nan_field(t, x):
    return torch.full_like(x, float("nan")) if t < 0.5 else -x


def test_the_entry_point_names_the_solver_and_pickling_keeps_it():
    with pytest.raises(NonFiniteStateError) as info:
        odeint_adaptive(nan_field, X0, 1.0, 0.0, method="bosh3")
    err = info.value
    assert err.solver == "odeint_adaptive(method='bosh3')"
    assert str(err).startswith("odeint_adaptive(method='bosh3'): non-finite state at step ")
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.solver, copy.step, copy.t, str(copy)) == \
        (type(err), err.solver, err.step, err.t, str(err))
    budget = MaxStepsError(5, 0.5, 0.0).attribute("f(method='x')")
    assert str(pickle.loads(pickle.dumps(budget))) == str(budget)
    assert str(budget).startswith("f(method='x'): max_steps=5 was hit at t=0.5")


def test_the_outermost_name_wins_and_other_exceptions_pass_through():
    with pytest.raises(MaxStepsError) as info:
        with naming_solver("outer()"):
            with naming_solver("inner()"):
                raise MaxStepsError(3, 0.25, 0.0)
    assert info.value.solver == "outer()" and str(info.value).startswith("outer(): max_steps=3")
    with pytest.raises(ValueError) as plain:
        with naming_solver("outer()"):
            raise ValueError("not a solver failure")
    assert str(plain.value) == "not a solver failure"
    assert SolverError("bare").solver is None and str(SolverError("bare")) == "bare"


@pytest.mark.parametrize("solve, name", [
    (lambda: odeint_fixed(nan_field, X0, torch.linspace(1, 0, 11, dtype=DTYPE), method="heun"),
     "odeint_fixed(method='heun')"),
    (lambda: sdeint_fixed(nan_field, lambda t, x: 0.1, X0, torch.linspace(1, 0, 11, dtype=DTYPE),
                          noise=solvers.GaussianNoise(torch.Generator().manual_seed(0))),
     "sdeint_fixed(method='euler_maruyama')"),
    (lambda: sdeint_torchsde(nan_field, lambda t, x: 0.1, X0, 1.0, 0.0, method="euler", dt=0.1,
                             generator=torch.Generator().manual_seed(0)),
     "sdeint_torchsde(method='euler', adaptive=False)"),
])
def test_fixed_step_and_torchsde_entry_points_name_themselves(solve, name):
    with pytest.raises(NonFiniteStateError) as info:
        solve()
    assert str(info.value).startswith(name + ": non-finite state at step ")
    step, t = STEP_AND_T.search(str(info.value)).groups()
    assert int(step) >= 1 and float(t) < 0.5 + 1e-9


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("method", sorted(solvers.ADAPTIVE_ODE_METHODS))
def test_a_state_that_overflows_under_a_finite_field_is_caught(method):
    """dx/dt = BIG/2 from BIG/2: the state overflows near t = 1 while the field stays finite;
    the solve names the step and time where the state (or scipy's linear algebra) went
    non-finite instead of returning inf."""
    with pytest.raises(NonFiniteStateError) as info:
        odeint_adaptive(lambda t, x: torch.full_like(x, BIG / 2), torch.full((2, 2), 0.502 * BIG),
                        0.0, 1.0, method=method)
    err = info.value
    assert 0.0 <= err.t <= 1.0 and f"step {err.step} (t={err.t:.6g})" in str(err)
    assert "NaN/inf" in str(err)
    if method == "Radau":  # its Newton iterate overflows inside scipy.linalg (a ValueError there)
        assert "linear algebra met NaN/inf" in str(err)


def test_lsoda_stalling_at_a_zero_step_ends_at_once():
    """LSODA reports success for steps of size 0 on dx/dt = 5e30 x; the solve stops at the
    first such step instead of spending max_steps on it."""
    with pytest.raises(SolverError) as info:
        odeint_adaptive(lambda t, x: 5e30 * x, X0, 1.0, 0.0, method="LSODA", max_steps=10_000)
    msg = str(info.value)
    assert "did not advance the time" in msg and "step 1 (t=1)" in msg, msg
    assert msg.startswith("odeint_adaptive(method='LSODA'): scipy LSODA gave up")


@pytest.mark.parametrize("method", ["dopri5", "RK45"])
def test_step_size_underflow_names_step_and_time(method):
    with pytest.raises(SolverError) as info:
        odeint_adaptive(lambda t, x: 5e30 * x, X0, 1.0, 0.0, method=method)
    msg = str(info.value)
    assert type(info.value) is SolverError and "gave up at step" in msg, msg
    step, t = STEP_AND_T.search(msg).groups()
    assert int(step) >= 1 and float(t) == 1.0


def test_the_returned_state_of_an_adaptive_solve_is_checked(monkeypatch):
    """Whatever a backend hands back (here a fake one returning inf) is checked."""
    def fake(guard, x0, times, **kwargs):
        return torch.stack([x0, x0 * float("inf")]), {"nfe": 1, "steps": 3, "accepted": 3, "rejected": 0}

    monkeypatch.setattr(solvers.ode_adaptive, "solve_torchdiffeq", fake)
    with pytest.raises(NonFiniteStateError) as info:
        odeint_adaptive(lambda t, x: -x, X0, 1.0, 0.0)
    assert (info.value.step, info.value.t) == (3, 0.0)
    assert "the solution at this output time is NaN/inf" in str(info.value)


def test_the_end_state_of_a_torchsde_solve_is_checked():
    """One Euler step from 0.6 BIG with drift BIG/2: the drift is finite where it is
    evaluated (the start); only the end state overflows."""
    with pytest.raises(NonFiniteStateError) as info:
        sdeint_torchsde(lambda t, x: torch.full_like(x, BIG / 2), lambda t, x: 0.0,
                        torch.full((2, 1), 0.6 * BIG), 0.0, 1.0, method="euler", dt=1.0,
                        generator=torch.Generator().manual_seed(0))
    assert (info.value.step, info.value.t) == (1, 1.0)
    assert str(info.value).startswith("sdeint_torchsde(method='euler', adaptive=False): ")


# -- the fixed-grid loop's divergence bound ------------------------------------------------------
def _explicit_euler_on_stiff(max_abs):
    """Forward Euler on dx/dt = -1e6 x with h = 0.1: |x| grows by 1e5 per step (unstable)."""
    from solvers import Update, integrate
    x0 = torch.ones(3, 2, dtype=torch.float64)

    def step(i, x, t0, t1, noise):
        return Update(x + (t1 - t0) * (-1e6 * x))
    return integrate(step, x0, torch.linspace(0.0, 1.0, 11, dtype=torch.float64),
                     max_abs=max_abs)


def test_fixed_grid_loop_stops_a_diverging_state_at_max_abs():
    with pytest.raises(solvers.DivergedStateError,
                       match=r"diverged at step 7 \(t=0\.7\): max \|x\| = 1e\+35 > max_abs = 1e\+30") as info:
        _explicit_euler_on_stiff(1e30)
    assert isinstance(info.value, solvers.NonFiniteStateError)
    assert info.value.step == 7 and info.value.peak == pytest.approx((1e5 - 1) ** 7, rel=1e-9)
    with pytest.raises(solvers.DivergedStateError, match=r"step 2 \(t=0\.2\)"):
        _explicit_euler_on_stiff(1e8)


def test_fixed_grid_loop_without_a_bound_returns_what_the_scheme_computes():
    x = _explicit_euler_on_stiff(None).x                       # (1 - 1e5)^10 ~ 1e50
    assert torch.isfinite(x).all() and x.abs().max().item() == pytest.approx(
        (1e5 - 1) ** 10, rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad, error", [(float("nan"), "non-finite state"), (float("-inf"), "non-finite state"),
                                        (-5e3, "diverged")])
def test_fixed_grid_loop_catches_the_bad_entry_in_every_precision(dtype, bad, error):
    """The per-step check finds one bad entry (NaN, -inf, or beyond max_abs = 1e3) among
    finite ones at the step that made it, in half precision too."""
    from solvers import Update, integrate
    x0 = torch.linspace(-1.0, 1.0, 24, dtype=dtype).reshape(4, 6)

    def step(i, x, t0, t1, noise):
        y = x.clone()
        if i == 2:
            y[2, 3] = bad
        return Update(y)
    with pytest.raises(solvers.NonFiniteStateError, match=rf"{error}.*step 3 ") as info:
        integrate(step, x0, torch.linspace(0.0, 1.0, 6, dtype=torch.float64), max_abs=1e3)
    assert info.value.step == 3


def test_the_state_peak_compares_with_the_bound_in_a_wide_dtype():
    """On an accelerator the flags compare the peak with max_abs on the device: a float16
    peak of inf must not pass a bound of 1e30 (float16 would round the bound to inf)."""
    from solvers.loop import MAX_ABS, _peak_abs
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.tensor([[1.0, -2.0], [0.5, float("-inf")]], dtype=dtype)
        assert not bool(_peak_abs(x) <= MAX_ABS)
        assert _peak_abs(torch.tensor([[1.0, -3.0]], dtype=dtype)).item() == 3.0
        assert _peak_abs(torch.tensor([[float("nan"), 1.0]], dtype=dtype)).isnan()

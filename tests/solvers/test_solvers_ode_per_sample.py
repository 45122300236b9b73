"""solvers.odeint_per_sample: Dormand--Prince 5(4) with a step size per sample."""
import math

import pytest
import torch
from scipy.integrate import solve_ivp

from solvers import (DOPRI5, ButcherTableau, CountingFunction, MaxStepsError,
                     NonFiniteStateError, odeint_adaptive, odeint_per_sample)
from solvers.loop import integrate
from solvers.ode_fixed import rk_step

F64 = torch.float64


def riccati(t, x):
    """dx/dt = -x^2: x(t) = x0 / (1 + x0 (t - t0)); large x0 is the hard sample."""
    return -x * x


def riccati_exact(x0, t0, t1):
    return x0 / (1 + x0 * (t1 - t0))


def decay(t, x):
    """dx/dt = -t x (rows independent, t per row): x(t) = x0 exp(-(t^2 - t0^2) / 2)."""
    return -t.reshape(-1, *([1] * (x.dim() - 1))) * x


def _fixed_error(tableau: ButcherTableau, n: int) -> float:
    """Max error of n fixed steps of ``tableau`` on dx/dt = x over [0, 1] (x(1) = e x0)."""
    x0 = torch.tensor([[1.0], [0.5]], dtype=F64)
    ts = torch.linspace(0.0, 1.0, n + 1, dtype=F64)
    sol = integrate(rk_step(lambda t, x: x, tableau), x0, ts, max_abs=None)
    return float((sol.x - math.e * x0).abs().max())


def _slope(errs, ns):
    xs, ys = [math.log(n) for n in ns], [math.log(e) for e in errs]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return -sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


def test_dopri5_tableau_orders_5_and_4():
    """As fixed-step methods, b fits order 5 and the embedded b* = b - e order 4."""
    tab = DOPRI5.tableau
    b_star = tuple(b - e for b, e in zip(tab.b, DOPRI5.error))
    emb = ButcherTableau("dopri5-embedded", 4, tab.c, tab.a, b_star, tab.source)
    ns = (8, 16, 32)
    assert _slope([_fixed_error(tab, n) for n in ns], ns) == pytest.approx(5.0, abs=0.25)
    assert _slope([_fixed_error(emb, n) for n in ns], ns) == pytest.approx(4.0, abs=0.25)


@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_closed_form_and_per_sample_steps(tol):
    """Each sample meets the tolerance against the closed form, and the hard sample
    (x0 = 20) takes more steps than the easy ones instead of setting everyone's steps."""
    x0 = torch.tensor([[0.1], [0.5], [1.0], [20.0]], dtype=F64)
    sol = odeint_per_sample(riccati, x0, 0.0, 1.0, rtol=tol, atol=tol)
    err = (sol.x - riccati_exact(x0, 0.0, 1.0)).abs().squeeze(1)
    assert float(err.max()) < 20 * tol
    nfe = sol.stats["nfe_per_sample"]
    assert nfe.shape == (4,) and nfe.dtype == torch.int64
    assert int(nfe[3]) > int(nfe[0])
    assert int(nfe.max()) == sol.stats["nfe"]            # the hardest is in every call
    assert sol.stats["rows_evaluated"] == int(nfe.sum()) < 4 * sol.stats["nfe"]
    assert sol.stats["accepted"] == int(sol.stats["accepted_per_sample"].sum())
    # NFE per sample: 2 to start (f0 and the initial-step trial), then 6 per attempt (FSAL)
    attempts = sol.stats["accepted_per_sample"] + sol.stats["rejected_per_sample"]
    assert torch.equal(nfe, 2 + 6 * attempts)


def van_der_pol(t, x):
    """dx/dt = y, dy/dt = -x + 5 (1 - x^2) y: a limit cycle with sharp turns (rejections)."""
    return torch.stack([x[:, 1], -x[:, 0] + 5.0 * (1 - x[:, 0] ** 2) * x[:, 1]], 1)


@pytest.mark.parametrize("field, y0, t1, tol, first_step", [
    (riccati, [20.0], 2.0, 1e-8, 0.5),        # a first step far too large: 4 rejections
    (riccati, [2.0], 2.0, 1e-6, None),
    (van_der_pol, [2.0, 0.0], 10.0, 1e-6, None),   # 11 rejections
    (van_der_pol, [2.0, 0.0], 10.0, 1e-6, 0.3),    # 13 rejections
])
def test_one_sample_is_scipys_rk45(field, y0, t1, tol, first_step):
    """One sample takes scipy's RK45 steps exactly (independent code of the same method:
    Dormand-Prince 5(4) with the 1980 error estimate, HNW's first step and controller with
    facmax = 1 after a rejection): the same evaluations, accepted and rejected steps, and
    the end state to rounding."""
    def f_np(t, y):
        return field(torch.tensor([t], dtype=F64), torch.from_numpy(y)[None].to(F64))[0].numpy()

    kw = {} if first_step is None else {"first_step": first_step}
    ref = solve_ivp(f_np, (0.0, t1), y0, method="RK45", rtol=tol, atol=tol, **kw)
    sol = odeint_per_sample(field, torch.tensor([y0], dtype=F64), 0.0, t1, rtol=tol, atol=tol,
                            **kw)
    accepted = len(ref.t) - 1
    start = 1 if first_step else 2        # f(t0), and the initial-step trial when chosen
    assert sol.stats["nfe"] == ref.nfev
    assert sol.stats["accepted"] == accepted
    assert sol.stats["rejected"] == (ref.nfev - start) // 6 - accepted
    torch.testing.assert_close(sol.x[0], torch.tensor(ref.y[:, -1], dtype=F64),
                               rtol=1e-12, atol=1e-12)


def test_tolerance_proportionality():
    """The global error of a 5(4) pair in local-extrapolation mode falls about in
    proportion to the tolerance: 1e-3 less tolerance, 10^2.3..10^3.7 less error."""
    x0 = torch.tensor([[0.3], [2.0]], dtype=F64)
    errs = []
    for tol in (1e-5, 1e-8):
        sol = odeint_per_sample(riccati, x0, 0.0, 2.0, rtol=tol, atol=tol)
        errs.append(float((sol.x - riccati_exact(x0, 0.0, 2.0)).abs().max()))
    assert 10 ** 2.3 < errs[0] / errs[1] < 10 ** 3.7


def test_per_row_time_and_backwards():
    """The field sees one time per row; solving backwards returns to the start."""
    x0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    fwd = odeint_per_sample(decay, x0, 0.2, 1.5, rtol=1e-9, atol=1e-9)
    want = x0 * math.exp(-(1.5 ** 2 - 0.2 ** 2) / 2)
    torch.testing.assert_close(fwd.x, want, rtol=1e-8, atol=1e-8)
    back = odeint_per_sample(decay, fwd.x, 1.5, 0.2, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(back.x, x0, rtol=1e-8, atol=1e-8)


def test_same_result_as_the_global_step_solver():
    """Per-sample and batch-wide error control agree to the tolerance (both against the
    closed form, and with each other)."""
    x0 = torch.linspace(0.2, 4.0, 6, dtype=F64)[:, None]
    tol = 1e-7
    ps = odeint_per_sample(riccati, x0, 0.0, 1.0, rtol=tol, atol=tol).x
    gl = odeint_adaptive(riccati, x0, 0.0, 1.0, method="dopri5", rtol=tol, atol=tol).x
    assert float((ps - gl).abs().max()) < 20 * tol
    exact = riccati_exact(x0, 0.0, 1.0)
    assert float((ps - exact).abs().max()) < 20 * tol


def test_one_step_is_the_dopri5_tableau():
    """With first_step equal to the span, the solve is one step of the tableau (the same
    as the fixed-step loop's rk_step with it) and costs 1 + 6 evaluations."""
    x0 = torch.tensor([[0.5], [1.5]], dtype=F64)
    sol = odeint_per_sample(riccati, x0, 0.0, 0.25, rtol=1e3, atol=1e3, first_step=0.25)
    one = integrate(rk_step(riccati, DOPRI5.tableau), x0, torch.tensor([0.0, 0.25], dtype=F64),
                    max_abs=None)
    torch.testing.assert_close(sol.x, one.x, rtol=1e-14, atol=1e-15)
    assert sol.stats["nfe"] == 1 + 6


def test_max_steps_per_sample():
    x0 = torch.tensor([[0.1], [50.0]], dtype=F64)
    with pytest.raises(MaxStepsError, match="max_steps=3"):
        odeint_per_sample(riccati, x0, 0.0, 1.0, rtol=1e-10, atol=1e-10, max_steps=3)


def test_non_finite_names_the_time():
    def bad(t, x):
        return torch.where(t[:, None] > 0.5, torch.full_like(x, math.nan), -x)
    with pytest.raises(NonFiniteStateError, match=r"t=0\.[5-9]"):
        odeint_per_sample(bad, torch.ones(2, 1, dtype=F64), 0.0, 1.0)


def test_float32_counts_and_device_follow_input():
    x0 = torch.tensor([[0.5], [2.0]], dtype=torch.float32)
    f = CountingFunction(riccati)
    sol = odeint_per_sample(f, x0, 0.0, 1.0, rtol=1e-5, atol=1e-5)
    assert sol.x.dtype == torch.float32 and sol.stats["nfe"] == f.calls
    assert float((sol.x - riccati_exact(x0, 0.0, 1.0)).abs().max()) < 1e-4


@pytest.mark.parametrize("kw, match", [
    (dict(rtol=0.0), "rtol"), (dict(atol=-1.0), "atol"), (dict(max_steps=0), "max_steps"),
    (dict(first_step=2.0), "first_step"),
    (dict(row_data=torch.ones(3, 1, dtype=F64)), r"row_data.*\[2, \.\.\.\].*\(3, 1\)"),
])
def test_invalid_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        odeint_per_sample(riccati, torch.ones(2, 1, dtype=F64), 0.0, 1.0, **kw)


def test_row_data_travels_with_the_rows():
    """dx/dt = -k_i x with a rate k_i per sample given as row_data: each row gets its own
    rate while samples leave the batch at different steps (x_i(1) = x_i(0) exp(-k_i)), and
    the rates the field saw were always those of the rows it was handed."""
    x0 = torch.tensor([[1.0], [2.0], [0.5], [3.0]], dtype=F64)
    rates = torch.tensor([[0.1], [8.0], [0.5], [3.0]], dtype=F64)
    seen = []

    def field(t, x, k):
        seen.append(k.shape[0] == x.shape[0])
        return -k * x
    sol = odeint_per_sample(field, x0, 0.0, 1.0, rtol=1e-9, atol=1e-9, row_data=rates)
    torch.testing.assert_close(sol.x, x0 * torch.exp(-rates), rtol=0, atol=1e-8)
    nfe = sol.stats["nfe_per_sample"]
    assert int(nfe.min()) < int(nfe.max()) and all(seen)

import pytest
import torch

from solvers import FIXED_ODE_METHODS, CountingFunction, odeint_fixed, rk_step
from solvers.ode_fixed import ButcherTableau

from solvers_problems import DTYPE, X0, fitted_slope, linear_field, linear_solution


@pytest.mark.parametrize("method", sorted(FIXED_ODE_METHODS))
@pytest.mark.parametrize("t0, t1", [(0.0, 1.0), (1.0, 0.0)])
def test_convergence_order_matches_declared(method, t0, t1):
    tableau = FIXED_ODE_METHODS[method]
    x_start = X0 if t0 == 0.0 else linear_solution(X0, 0.0, t0)
    exact = linear_solution(x_start, t0, t1)
    steps = [8, 16, 32, 64]
    errors = []
    for n in steps:
        sol = odeint_fixed(linear_field, x_start, torch.linspace(t0, t1, n + 1, dtype=DTYPE), method=method)
        errors.append((sol.x - exact).abs().max().item())
    slope = fitted_slope([1 / n for n in steps], errors)
    assert abs(slope - tableau.order) < 0.3, (method, slope, errors)


@pytest.mark.parametrize("method", sorted(FIXED_ODE_METHODS))
def test_nfe_is_the_number_of_calls(method):
    counted = CountingFunction(linear_field)
    sol = odeint_fixed(counted, X0, torch.linspace(0, 1, 11, dtype=DTYPE), method=method)
    assert sol.stats["nfe"] == counted.calls == 10 * FIXED_ODE_METHODS[method].stages
    assert sol.stats["steps"] == 10


def test_stage_times_stay_in_the_step():
    times = []

    def field(t, x):
        times.append(t.item())
        return -x

    step = rk_step(field, FIXED_ODE_METHODS["rk4"])
    t0, t1 = torch.tensor(0.3, dtype=DTYPE), torch.tensor(0.1, dtype=DTYPE)
    step(0, X0, t0, t1, None)
    assert times == [0.3, t0.item() + 0.5 * (0.1 - 0.3), t0.item() + 0.5 * (0.1 - 0.3), 0.1]


def test_one_euler_step_is_the_formula():
    x = torch.tensor([[2.0]], dtype=DTYPE)
    sol = odeint_fixed(lambda t, x: t * x, x, [0.5, 0.25], method="euler")
    assert sol.x.item() == 2.0 + (0.25 - 0.5) * 0.5 * 2.0


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError) as info:
        odeint_fixed(linear_field, X0, [0.0, 1.0], method="rk5")
    for name in FIXED_ODE_METHODS:
        assert name in str(info.value)


def test_inconsistent_tableau_is_rejected():
    with pytest.raises(ValueError, match="row 1"):
        ButcherTableau("bad", 2, (0.0, 0.5), ((), (0.4,)), (0.0, 1.0), "test")
    with pytest.raises(ValueError, match="b sums"):
        ButcherTableau("bad", 2, (0.0, 0.5), ((), (0.5,)), (0.5, 0.6), "test")


def test_field_with_wrong_shape_is_reported():
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        odeint_fixed(lambda t, x: x.sum(1), X0, [0.0, 1.0])


def test_float32_stays_float32():
    sol = odeint_fixed(linear_field, X0.float(), torch.linspace(0, 1, 5), method="heun", save_trajectory=True)
    assert sol.x.dtype == torch.float32 and sol.xs.dtype == torch.float32 and sol.ts.dtype == torch.float32


def test_time_grid_in_any_natural_form_gives_the_same_solution():
    """ts as a tensor, a list, a NumPy array or a list of 0-d tensors: one conversion
    (as_real_tensor), the same Euler solution bit for bit; the exact one is x0 e^{-t}."""
    import numpy as np

    grid = np.linspace(0.0, 1.0, 11)
    field = lambda t, x: -x  # noqa: E731
    x0 = torch.ones(3, 2, dtype=torch.float64)
    forms = [torch.from_numpy(grid), grid.tolist(), grid, [torch.tensor(t) for t in grid]]
    sols = [odeint_fixed(field, x0, ts, method="euler").x for ts in forms]
    for sol in sols[1:]:
        assert torch.equal(sol, sols[0])
    torch.testing.assert_close(sols[0], x0 * 0.9 ** 10, rtol=1e-14, atol=0)  # (1 - h)^n
    with pytest.raises(TypeError, match=r"ts must be real numbers.*\['0', '1'\].*list"):
        odeint_fixed(field, x0, ["0", "1"], method="euler")

import math
import pickle

import pytest
import torch

from solvers import NonFiniteStateError, Solution, Update, integrate

from solvers_problems import DTYPE

X0 = torch.ones(3, 2, dtype=DTYPE)


def halve(i, x, t0, t1, noise):
    return Update(x / 2)


def test_steps_follow_the_grid_in_either_direction():
    seen = []

    def step(i, x, t0, t1, noise):
        seen.append((t0.item(), t1.item(), t0.dtype, t0.shape, noise))
        return Update(x + (t1 - t0))

    sol = integrate(step, X0, [1.0, 0.75, 0.25], noise="N")
    assert [(a, b) for a, b, *_ in seen] == [(1.0, 0.75), (0.75, 0.25)]
    assert all(dt is DTYPE and shape == () and n == "N" for *_, dt, shape, n in seen)
    assert torch.allclose(sol.x, X0 - 0.75) and sol.stats == {"steps": 2}
    assert sol.ts is None and sol.xs is None


def test_non_finite_state_names_step_and_time():
    def step(i, x, t0, t1, noise):
        return Update(x * float("inf") if t1 < 0.35 else x)

    with pytest.raises(NonFiniteStateError) as info:
        integrate(step, X0, torch.linspace(1, 0, 11, dtype=DTYPE))
    err = info.value
    assert err.step == 7 and err.t == pytest.approx(0.3)
    assert "step 7 (t=0.3)" in str(err)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.step, copy.t, str(copy)) == (err.step, err.t, str(err))


def test_callback_once_per_step_with_the_new_time_and_state():
    calls = []
    ts = torch.linspace(0, 2, 5, dtype=DTYPE)
    sol = integrate(halve, X0, ts, callback=lambda i, t, x: calls.append((i, t, x.clone())))
    assert [(i, t) for i, t, _ in calls] == [(1, 0.5), (2, 1.0), (3, 1.5), (4, 2.0)]
    assert all(isinstance(t, float) for _, t, _ in calls)
    assert all(torch.equal(x, X0 / 2**i) for i, _, x in calls)
    assert torch.equal(calls[-1][2], sol.x)


def test_save_trajectory_shapes_and_values():
    x0 = torch.ones(4, 2, 3, dtype=DTYPE)
    ts = torch.linspace(1, 0, 6, dtype=DTYPE)
    sol = integrate(halve, x0, ts, save_trajectory=True, progress=True, desc="test")
    assert isinstance(sol, Solution)
    assert sol.xs.shape == (6, 4, 2, 3) and torch.equal(sol.ts, ts)
    assert torch.equal(sol.xs[0], x0) and torch.equal(sol.xs[-1], sol.x)
    assert torch.equal(sol.xs[:, 0, 0, 0], 0.5 ** torch.arange(6, dtype=DTYPE))


@pytest.mark.parametrize(
    "ts, match",
    [
        ([0.0], "at least 2"),
        ([0.0, 0.5, 0.4], "strictly increasing or strictly decreasing"),
        ([0.0, 0.0, 1.0], "strictly increasing or strictly decreasing"),
        ([0.0, float("nan"), 1.0], "finite"),
        ([0.0, math.inf], "finite"),
        (torch.zeros(2, 2), "1-D"),
    ],
)
def test_bad_time_grids(ts, match):
    with pytest.raises(ValueError, match=match):
        integrate(halve, X0, ts)


def test_times_merged_by_float32_rounding_are_rejected():
    with pytest.raises(ValueError, match="float32"):
        integrate(halve, X0.float(), torch.tensor([1.0, 1.0 + 1e-12, 2.0], dtype=torch.float64))


def test_bad_inputs_and_step_shape():
    with pytest.raises(TypeError, match="ts must be"):
        integrate(halve, X0, "0 to 1")
    with pytest.raises(TypeError, match="x0 must have a floating dtype"):
        integrate(halve, torch.ones(2, dtype=torch.int64), [0.0, 1.0])
    with pytest.raises(ValueError, match=r"step 1 returned shape \(3,\)"):
        integrate(lambda i, x, t0, t1, noise: Update(x.sum(1)), X0, [0.0, 1.0])


def test_the_step_gets_its_index_and_the_loop_draws_the_noise():
    """step(i, ...) with i = 0..n-1; mean + scale * z with one draw per noisy update, and
    the final update's noise dropped when final_noise=False."""
    from solvers import ReplayNoise
    seen = []

    def step(i, x, t0, t1, noise):
        seen.append(i)
        return Update(x + 1, torch.full_like(x, 0.5))

    zs = [torch.full_like(X0, 2.0), torch.full_like(X0, 4.0), torch.full_like(X0, 8.0)]
    out = integrate(step, X0, [0.0, 1.0, 2.0, 3.0], noise=ReplayNoise(zs)).x
    assert seen == [0, 1, 2] and torch.all(out == 1 + 3 + 0.5 * (2 + 4 + 8))
    noise = ReplayNoise(zs)
    out = integrate(step, X0, [0.0, 1.0, 2.0, 3.0], noise=noise, final_noise=False).x
    assert noise.used == 2 and torch.all(out == 1 + 3 + 0.5 * (2 + 4))
    with pytest.raises(ValueError, match="needs a noise source"):
        integrate(step, X0, [0.0, 1.0])

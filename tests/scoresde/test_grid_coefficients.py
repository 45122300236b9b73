"""Per-solve precomputation in the samplers: the same bits as computing at every step."""
import torch

import scoresde as sd
from scoresde import grids
from scoresde.samplers.grid import Grid
from scoresde.sdes import VPTypeSDE

SDES = [sd.VPSDE(), sd.CosineVPSDE(), sd.SubVPSDE(), sd.VESDE(sigma_min=0.01, sigma_max=50.0),
        sd.DiscreteVPSDE.linear(1000)]


def _bisect_all_iterations(fn, targets, lo, hi, increasing, iters=100):
    """The bisection run for all its iterations (no early exit)."""
    a, b = torch.full_like(targets, lo), torch.full_like(targets, hi)
    for _ in range(iters):
        m = 0.5 * (a + b)
        below = fn(m) < targets
        go_right = below if increasing else ~below
        a, b = torch.where(go_right, m, a), torch.where(go_right, b, m)
    return 0.5 * (a + b)


def test_bisection_stops_at_its_fixed_point_with_the_same_bits():
    for sde in SDES:
        sig = torch.logspace(-2.5, 1.5, 23, dtype=torch.float64)
        sig = sig[sig < float(grids.noise_ratio(sde, torch.tensor([sde.T], dtype=torch.float64)))]
        want = _bisect_all_iterations(lambda t: grids._noise_ratio(sde, t), sig, 1e-12, sde.T,
                                      True)
        assert torch.equal(grids.time_from_noise_ratio(sde, sig), want), type(sde).__name__


class CountingVPSDE(sd.VPSDE):
    calls = 0

    def _marginal_coeffs(self, t):
        CountingVPSDE.calls += 1
        return super()._marginal_coeffs(t)


def test_score_reads_the_grid_coefficients_bitwise():
    """A ScoreModel called at a grid time (Grid.time) takes alpha/std from the grid: no
    recomputation, and the same output bits as at a fresh tensor of the same time."""
    sde = CountingVPSDE()
    torch.manual_seed(0)
    model = sd.ScoreModel(sd.MLP(2).double(), sde, prediction="epsilon")
    x = torch.randn(5, 2, dtype=torch.float64)
    grid = Grid.build(sde, grids.time_grid(sde, 7, 1e-3, "quadratic"), x)
    for i in range(len(grid)):
        t = grid.time(i, x)
        before = CountingVPSDE.calls
        got = model.score_unchecked(x, t)
        assert CountingVPSDE.calls == before           # read, not recomputed
        fresh = torch.full((5,), float(grid.ts[i]), dtype=torch.float64)
        assert torch.equal(got, model.score_unchecked(x, fresh))
    other = sd.ScoreModel(model.net, sd.VPSDE(beta_max=10.0), prediction="epsilon")
    before = CountingVPSDE.calls
    other.score_unchecked(x, grid.time(2, x))           # another SDE: its own coefficients
    assert CountingVPSDE.calls == before


def test_grid_log_alpha_matches_per_step_values():
    for sde in SDES:
        x = torch.zeros(3, 2, dtype=torch.float64)
        grid = Grid.build(sde, grids.time_grid(sde, 9, 1e-3), x)
        if not isinstance(sde, VPTypeSDE):
            assert grid.log_alpha is None
            continue
        for i in range(len(grid)):
            assert torch.equal(grid.log_alpha[i:i + 1], sde._log_alpha(grid.t[i:i + 1]))

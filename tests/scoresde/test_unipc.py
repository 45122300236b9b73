"""UniPC (Zhao et al. 2023; issue 12): the corrector raises the order by one, for free.

UniPC-p (predictor UniP-p, corrector UniC-p) converges at order p + 1 on the Gaussian
oracle, against a tight adaptive solve of the same probability-flow ODE, and makes one
network evaluation per step (``steps`` of them)."""
import numpy as np
import pytest
import torch

import scoresde as sd
from scoresde.samplers import unipc


def _gaussian(sde):
    return sd.GaussianData(torch.tensor([1.0, -0.5], dtype=torch.float64),
                           torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64), sde=sde)


@pytest.mark.parametrize("order,grid,steps", [
    (1, "logsnr", [20, 40, 80]),
    (2, "logsnr", [20, 40, 80]),
    # order 4 needs more steps to leave the pre-asymptotic range (20 steps fit 4.3)
    (3, "quadratic", [40, 80, 160, 320]),
])
def test_unipc_p_converges_at_order_p_plus_1_on_gaussian_oracle(order, grid, steps):
    sde = sd.VPSDE()
    oracle = _gaussian(sde)
    x_T = sde.prior_sampling((256, 2), generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    ref = sd.sample(oracle.score, sde, (256, 2), "ode", x_T=x_T, rtol=1e-11, atol=1e-11,
                    eps=1e-3).x
    errs = []
    for n in steps:
        res = sd.sample(oracle.score, sde, (256, 2), "unipc", x_T=x_T, steps=n, order=order,
                        grid=grid, lower_order_final=False)
        assert res.nfe == n
        errs.append((res.x - ref).norm(dim=1).mean().item())
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - (order + 1)) < 0.3, slope


def test_unipc_weights_closed_form():
    """UniC-1 is the trapezoid a = 1/2; UniP-2 is DPM-Solver++(2M)'s 1/2; for h -> 0 the
    weights of UniC-2 with r_1 = -1 tend to the Adams–Moulton ones of (D_1, m_t - m_s):
    a solves [[1, 1], [-1, 1]] a = [1/2, 1/3] (g_k -> 1/(k + 1)), a = (1/12, 5/12), with an
    O(h) difference (h = 1e-3; much smaller h loses digits to the phi recursion's
    cancellation, as in the authors' code)."""
    assert unipc.weights(0.3, [], corrector=True) == [0.5]
    assert unipc.weights(0.3, [-1.2], corrector=False) == [0.5]
    a = unipc.weights(1e-3, [-1.0], corrector=True)
    assert np.allclose(a, [1 / 12, 5 / 12], atol=1e-3)
    assert not np.allclose(a, [1 / 12, 5 / 12], atol=1e-6)
    # and at a finite step, g_1 = h~ phi_2(h~)/B(h) with h~ = -h, exactly
    h = 0.7
    hh = -h
    g1 = (np.expm1(hh) - hh) / hh / np.expm1(hh)
    g2 = 2 * (np.expm1(hh) - hh - hh ** 2 / 2) / hh ** 2 / np.expm1(hh)
    a = unipc.weights(h, [-0.8], corrector=True)
    assert np.allclose(np.array([[1, 1], [-0.8, 1]]) @ a, [g1, g2], rtol=1e-12)

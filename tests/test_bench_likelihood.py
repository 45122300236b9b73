"""benchmarks/likelihood_cost.py: the floor of the Hutchinson comparison and the evaluation it times."""
from __future__ import annotations

import pytest
import torch

from benchmarks import _common as C
from benchmarks.likelihood_cost import floor_ratio, make_cases, one_evaluation, probe
from scoresde.dynamics import probability_flow


def test_floor_is_evaluations_times_one_evaluation_over_the_baseline():
    # 74 evaluations of 0.8 ms against a baseline of 0.1184 s: 0.0592 / 0.1184 = 0.5
    assert floor_ratio(74, 0.8e-3, 0.1184) == pytest.approx(0.5, rel=1e-12)
    assert floor_ratio(230, 3.9e-3, 1.049) == pytest.approx(230 * 3.9e-3 / 1.049, rel=1e-12)


@pytest.mark.parametrize("args, name", [((0, 1e-3, 1.0), "evaluations"),
                                        ((10, -1e-3, 1.0), "evaluation_s"),
                                        ((10, 1e-3, 0.0), "baseline_s")])
def test_floor_refuses_meaningless_inputs(args, name):
    with pytest.raises(ValueError, match=name):
        floor_ratio(*args)


def test_timed_evaluation_is_the_drift_and_the_recipes_probe_estimate():
    # what the floor times is the work of one evaluation: the probability-flow drift and
    # eps^T (dv/dx) eps with the recipe's probe, checked against the full Jacobian
    cfg = C.Config(quick=True, device=torch.device("cpu"), img_dir=".", img_rel=".")
    case = make_cases(cfg)[0]
    x = case.x[:8]
    case.x = x
    v, est = one_evaluation(case)
    field = probability_flow(case.sde, case.score)
    t = torch.tensor(0.5, dtype=torch.float64)
    eps = probe(case)
    jac = torch.autograd.functional.jacobian(lambda y: field(t, y).sum(0), x)  # [D, B, D]
    want = torch.einsum("bi,ibj,bj->b", eps, jac, eps)
    assert x.dtype == torch.float64 and est.shape == (8, 1)
    torch.testing.assert_close(v, field(t, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(est[:, 0], want, rtol=1e-10, atol=1e-10)

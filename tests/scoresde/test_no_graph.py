"""Sampling and likelihoods keep no autograd graph across solver steps (issue 17).

A trained network's parameters require grad, so without care every network evaluation's
activations stay alive until the end of a solve. Checked here:
  * ``sample(...).x`` does not require grad, for every solver, and no activation of the
    network survives the call (weakrefs to them are dead); ``grad=True`` keeps the graph
    on purpose, and its gradient equals central finite differences;
  * ``log_likelihood`` (exact and Hutchinson) holds at most one evaluation's activations
    at a time, however many evaluations the tolerance asks for;
  * ``batch_size`` chunking gives the one-batch result (bitwise for a closed-form score,
    to the last bits for a network) and, for stochastic solvers, the result of sampling
    the chunks one after another with the same generator.
"""
from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch

import scoresde as sd
import solvers
from scoresde.nets import MLP
from scoresde.samplers import SOLVERS

VP = sd.VPSDE(beta_min=0.1, beta_max=20.0)
DDPM = sd.DiscreteVPSDE.linear(N=50)
FAST = {"ode": {"rtol": 1e-3, "atol": 1e-3}, "sde_adaptive": {"rtol": 1e-2, "atol": 1e-2,
                                                             "dt": 0.05}}


def _options(solver: str) -> dict:
    """Few network evaluations, valid for each solver's steps rule."""
    if solver in FAST:
        return dict(FAST[solver])
    if "steps" not in SOLVERS[solver].options:
        return {}
    if solver.startswith("ode_"):
        return {"steps": 2 * solvers.FIXED_ODE_METHODS[solver[4:]].stages}
    return {"steps": 5 if solver == "heun_karras" else 4}


class ActivationLog:
    """Forward hooks on every Linear layer keeping weakrefs to their outputs.

    ``alive()`` counts the outputs still referenced anywhere (a kept autograd graph holds
    them: PyTorch keeps a tensor's Python object alive while C++ still refers to it);
    ``peak`` is the most that were alive at the start of any layer call.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self.refs = []
        self.peak = 0
        for mod in net.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        self.peak = max(self.peak, self.alive())
        self.refs.append(weakref.ref(output))

    def alive(self) -> int:
        return sum(r() is not None for r in self.refs)


def _model(sde, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = MLP(dim=2, hidden=16, depth=2).to(dtype)
    assert all(p.requires_grad for p in net.parameters())   # as after training
    return sd.ScoreModel(net, sde, prediction="epsilon"), net


@pytest.mark.parametrize("solver, method", [(s, None) for s in SOLVERS] + [("ode", "RK45")])
def test_samples_do_not_require_grad_and_no_activation_survives(solver, method):
    """Every solver and backend (torchdiffeq, scipy, torchsde, the fixed-grid loop)."""
    sde = DDPM if SOLVERS[solver].requires is sd.DiscreteVPSDE else VP
    model, net = _model(sde)
    log = ActivationLog(net)
    g = torch.Generator().manual_seed(0)
    options = _options(solver) if method is None else {**_options(solver), "method": method}
    res = sd.sample(model, sde, (6, 2), solver=solver, generator=g, **options)
    assert res.x.requires_grad is False and res.x.grad_fn is None
    assert torch.isfinite(res.x).all()
    gc.collect()
    assert len(log.refs) >= res.nfe * 2 > 0                  # the hooks did see the calls
    assert log.alive() == 0, f"{log.alive()} activations of {len(log.refs)} still alive"


def test_grad_true_keeps_the_graph_and_the_weakref_test_can_fail():
    model, net = _model(VP)
    log = ActivationLog(net)
    x_T = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    res = sd.sample(model, VP, (5, 2), solver="ode_heun", steps=6, x_T=x_T, grad=True)
    assert res.x.requires_grad
    gc.collect()
    assert log.alive() > 0          # the graph holds activations while res.x lives
    del res
    gc.collect()
    assert log.alive() == 0


@pytest.mark.parametrize("solver, options", [("ode_heun", {"steps": 4}),
                                             ("dpm_solver++", {"steps": 5}),
                                             ("ode", {"method": "dopri5", "rtol": 1e-9,
                                                      "atol": 1e-9})])
def test_grad_true_matches_finite_differences(solver, options):
    """d(sum of samples)/d(one weight) by autograd through the solve vs central differences
    (float64, the same x_T; the adaptive run's tight tolerance keeps its steps the same)."""
    model, net = _model(VP, seed=3)
    x_T = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weight = net.out[1].weight

    def objective() -> torch.Tensor:
        return sd.sample(model, VP, (4, 2), solver=solver, x_T=x_T, grad=True,
                         eps=1e-2, **options).x.sum()

    (grad,) = torch.autograd.grad(objective(), weight)
    h = 1e-6
    idx = (0, 0)
    with torch.no_grad():
        weight[idx] += h
        up = objective().item()
        weight[idx] -= 2 * h
        down = objective().item()
        weight[idx] += h
    fd = (up - down) / (2 * h)
    assert grad[idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-7)


def test_grad_true_refuses_scipy_methods():
    model, _ = _model(VP)
    with pytest.raises(ValueError, match=r"grad=True.*'RK45'.*scipy.*dopri5"):
        sd.sample(model, VP, (3, 2), solver="ode", method="RK45", grad=True)


# -- chunking -----------------------------------------------------------------------------------
def _gaussian_score(mean: float, var: float, sde):
    """The exact score of x_0 ~ N(mean, var I) under ``sde``: elementwise, so every sample
    is computed the same way whatever the batch (bitwise batch-invariant)."""
    def score(x, t):
        alpha, std = sde._marginal_coeffs(t)
        a, s = alpha[:, None], std[:, None]
        return -(x - a * mean) / (a ** 2 * var + s ** 2)
    return score


DETERMINISTIC = ["ode_euler", "ode_heun", "ode_rk4", "ddim", "dpm_solver", "dpm_solver++",
                 "heun_karras"]
STOCHASTIC = ["euler_maruyama", "reverse_diffusion", "ancestral", "pc"]


@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_chunked_equals_one_batch_bitwise_for_a_batch_invariant_score(solver):
    score = _gaussian_score(0.5, 0.3, VP)
    g = torch.Generator().manual_seed(4)
    x_T = VP.prior_sampling((11, 2), generator=g, dtype=torch.float64)
    steps = {"ode_rk4": 8, "heun_karras": 7}.get(solver, 6)  # valid network evaluations
    one = sd.sample(score, VP, (11, 2), solver=solver, x_T=x_T, steps=steps)
    chunked = sd.sample(score, VP, (11, 2), solver=solver, x_T=x_T, steps=steps,
                        batch_size=4)
    assert torch.equal(one.x, chunked.x)
    assert chunked.nfe == 3 * one.nfe and chunked.stats["solves"] == 3


@pytest.mark.parametrize("solver", ["ode_heun", "dpm_solver++", "heun_karras"])
def test_chunked_network_samples_equal_one_batch_to_the_last_bits(solver):
    """A network's matrix products may use other BLAS kernels at another batch size."""
    model, _ = _model(VP)
    g = torch.Generator().manual_seed(5)
    steps = 7 if solver == "heun_karras" else 6
    one = sd.sample(model, VP, (11, 2), solver=solver, generator=g, steps=steps)
    g.manual_seed(5)
    chunked = sd.sample(model, VP, (11, 2), solver=solver, generator=g, steps=steps,
                        batch_size=3)
    torch.testing.assert_close(chunked.x, one.x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", STOCHASTIC)
def test_chunked_stochastic_equals_sampling_the_chunks_in_turn(solver):
    score = _gaussian_score(-0.2, 0.7, VP)
    x_T = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(7)
    chunked = sd.sample(score, VP, (7, 2), solver=solver, x_T=x_T, steps=6, batch_size=3,
                        generator=g, return_trajectory=True)
    g.manual_seed(7)
    by_hand = [sd.sample(score, VP, tuple(part.shape), solver=solver, x_T=part, steps=6,
                         generator=g, return_trajectory=True) for part in x_T.split(3)]
    assert torch.equal(chunked.x, torch.cat([r.x for r in by_hand]))
    assert torch.equal(chunked.trajectory, torch.cat([r.trajectory for r in by_hand], 1))
    assert chunked.nfe == sum(r.nfe for r in by_hand)


def test_chunked_adaptive_ode_agrees_within_its_tolerance():
    score = _gaussian_score(0.5, 0.3, VP)
    x_T = torch.randn(9, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    one = sd.sample(score, VP, (9, 2), solver="ode", x_T=x_T, rtol=1e-8, atol=1e-8)
    chunked = sd.sample(score, VP, (9, 2), solver="ode", x_T=x_T, rtol=1e-8, atol=1e-8,
                        batch_size=4)
    torch.testing.assert_close(chunked.x, one.x, rtol=0, atol=1e-6)
    assert chunked.stats["solves"] == 3 and chunked.stats["nfe"] == chunked.nfe


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_batch_size_is_checked(bad):
    score = _gaussian_score(0.0, 1.0, VP)
    with pytest.raises((TypeError, ValueError), match=r"batch_size"):
        sd.sample(score, VP, (4, 2), solver="ode_euler", steps=2, batch_size=bad)


# -- likelihood ---------------------------------------------------------------------------------
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_likelihood_holds_one_evaluation_of_activations_at_a_time(trace):
    """The peak number of live network activations is the same for a loose and a tight
    tolerance, although the tight one makes several times more evaluations."""
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    peaks, nfes = [], []
    for tol in (1e-3, 1e-5):
        model, net = _model(VP, seed=4)
        log = ActivationLog(net)
        res = sd.log_likelihood(model, VP, x, rtol=tol, atol=tol, trace=trace,
                                generator=torch.Generator().manual_seed(0))
        assert res.logp.requires_grad is False
        gc.collect()
        assert log.alive() == 0
        peaks.append(log.peak)
        nfes.append(res.nfe)
    assert nfes[1] > 2 * nfes[0]
    layers = sum(isinstance(m, torch.nn.Linear) for m in net.modules())
    assert peaks[0] == peaks[1] and peaks[1] <= layers, (peaks, nfes, layers)


def test_likelihood_batch_size_exact_trace_agrees_and_hutchinson_is_per_solve():
    score = _gaussian_score(0.5, 0.3, VP)
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    one = sd.log_likelihood(score, VP, x, rtol=1e-8, atol=1e-8)
    parts = sd.log_likelihood(score, VP, x, rtol=1e-8, atol=1e-8, batch_size=3)
    torch.testing.assert_close(parts.logp, one.logp, rtol=0, atol=1e-6)
    assert parts.stats["solves"] == 3 and parts.nfe == sum(
        s["nfe"] for s in parts.stats["per_solve"])

    g = torch.Generator().manual_seed(11)
    hutch = sd.log_likelihood(score, VP, x, trace="hutchinson", n_probes=2, generator=g,
                              batch_size=3, rtol=1e-6, atol=1e-6)
    g.manual_seed(11)
    by_hand = [sd.log_likelihood(score, VP, part, trace="hutchinson", n_probes=2, generator=g,
                                 rtol=1e-6, atol=1e-6) for part in x.split(3)]
    assert torch.equal(hutch.logp, torch.cat([r.logp for r in by_hand]))
    assert torch.equal(hutch.stderr, torch.cat([r.stderr for r in by_hand]))
    assert hutch.stats["n_probes"] == 2 and math.isfinite(hutch.logp.sum().item())

"""Bounded termination: three faulty scores under every sampler and likelihood path.

The cases (scores, paths, settings) are those of ``benchmarks/termination_table.py``, which
prints the table of docs/reliability.md (Termination) from them. Each case runs in well
under a second: fixed-step samplers take 10 steps, adaptive solves get max_steps=100.

Expected outcomes, and why:

* ``nan_below`` (NaN for t < 0.5): every path stops with ``NonFiniteStateError`` at a time
  below 0.5 (the likelihood solves start at eps, so at step 0).
* ``blowup`` (1e30 x): the reverse-time flow grows like exp(5e30 int beta), so no finite
  answer exists. Adaptive ODE solves give up at once (``SolverError``: the step size needed
  is below the spacing of floats), torchsde's state overflows (``NonFiniteStateError``);
  fixed-step samplers stop at the first step whose state passes the loop's bound
  ``max_abs`` = 1e30 (``DivergedStateError``, a ``NonFiniteStateError``), or overflow
  before that; without the bound, 10 steps of growth ~1e30 stay below 1.8e308 and would
  return a finite, meaningless state. The likelihood ODE runs forwards, where the
  same score makes the flow decay at a rate ~1e31: stiff beyond what float64 steps can
  resolve, so every method gives up (``SolverError``).
* ``stiff`` (-1e6 x): the reverse-time flow decays at a rate ~5e5 beta. Explicit adaptive
  methods run out of steps (``MaxStepsError``), the implicit Radau, BDF and LSODA return
  the right answer (~0; "correct"), torchsde's explicit steps at its minimum size blow up
  (``NonFiniteStateError``), and the fixed-step samplers, all explicit, are unstable at 10
  steps: their state grows past ``max_abs`` (``DivergedStateError``; it would reach |x| ~
  1e209 unbounded). The likelihood ODE runs forwards, where the flow
  grows like exp(5e6 int beta): ``MaxStepsError`` (even for Radau).

Whatever the outcome: never a hang, never a NaN/inf returned, and every error names the
solver, the step and the time.
"""
import pickle
import time

import pytest
import torch

import scoresde as sd
import solvers
from benchmarks import termination_table as T

NF, MS, SE = "NonFiniteStateError", "MaxStepsError", "SolverError"
CORRECT = "correct"

EXPECTED = {
    **{("nan_below", path): NF for path in T.PATHS},
    **{("blowup", f"sample {name}"): NF for name in T.FIXED_STEP},
    **{("blowup", f"sample ode {m}"): SE for m in ("dopri5", "bosh3", "RK45", "Radau", "BDF", "LSODA")},
    ("blowup", "sample sde_adaptive"): NF,
    ("blowup", "log_likelihood exact"): SE,
    ("blowup", "log_likelihood hutchinson"): SE,
    ("blowup", "log_likelihood exact Radau"): SE,
    **{("stiff", f"sample {name}"): NF for name in T.FIXED_STEP},
    **{("stiff", f"sample ode {m}"): MS for m in ("dopri5", "bosh3", "RK45")},
    **{("stiff", f"sample ode {m}"): CORRECT for m in ("Radau", "BDF", "LSODA")},
    ("stiff", "sample sde_adaptive"): NF,
    ("stiff", "log_likelihood exact"): MS,
    ("stiff", "log_likelihood hutchinson"): MS,
    ("stiff", "log_likelihood exact Radau"): MS,
}

# Generous: each case takes ~0.001-0.6 s on two shared CPU cores (docs/reliability.md).
SECONDS_PER_CASE = 10.0


def test_the_table_covers_every_fault_and_path_and_every_sampler():
    assert set(EXPECTED) == {(f, p) for f in T.FAULTS for p in T.PATHS}
    sampled = {p.split()[1] for p in T.PATHS if p.startswith("sample")}
    assert sampled == set(sd.samplers.SOLVERS), sampled


@pytest.mark.parametrize("fault, path", sorted(EXPECTED))
def test_each_case_ends_as_expected_and_in_seconds(fault, path):
    o = T.classify(fault, path)
    assert o.kind != "non-finite result", f"{fault} / {path} returned NaN/inf silently"
    assert o.seconds < SECONDS_PER_CASE, f"{fault} / {path} took {o.seconds:.1f} s"
    assert o.category == EXPECTED[fault, path], (o.kind, o.message or o.max_abs)
    if o.error is None:
        return
    msg = str(o.error)
    # the solver, then the step (or the step budget) and the time
    assert msg.startswith(T.SOLVER_NAMES[path] + ": "), msg
    assert o.error.solver == T.SOLVER_NAMES[path]
    assert o.step is not None and o.t is not None, f"no step and time in: {msg}"
    if hasattr(o.error, "t"):
        assert o.error.t == pytest.approx(o.t, rel=1e-5)
    if isinstance(o.error, solvers.NonFiniteStateError):
        assert o.step == str(o.error.step)
    if isinstance(o.error, solvers.MaxStepsError):
        assert o.step == f"max_steps={T.MAX_STEPS}" and o.error.max_steps == T.MAX_STEPS
    assert 0.0 <= o.t <= 1.0, msg
    if fault == "nan_below":
        assert o.t < T.T_NAN, msg  # where the score is NaN, not later
    copy = pickle.loads(pickle.dumps(o.error))
    assert str(copy) == msg and copy.solver == o.error.solver


def test_the_stiff_linear_flow_is_solved_exactly_by_implicit_methods():
    """s = -c x gives dx/dt = beta (c - 1) x / 2, so x(eps) = x_T exp(-(c - 1) B / 2), with
    B = int_eps^1 beta ~ 10: zero in float64. Radau, BDF and LSODA get it within atol."""
    for method in ("Radau", "BDF", "LSODA"):
        x = T.PATHS[f"sample ode {method}"](T.stiff)
        assert x.abs().max().item() < 1e-5, (method, x)


def test_a_final_denoising_step_that_returns_nan_is_an_error_not_a_result():
    """The score is NaN only at eps, where only the final Tweedie step evaluates it: the loop
    passes, the denoised state is checked like a step (step steps + 1, t = eps)."""
    eps = 1e-3

    def nan_at_eps(x, t):
        return torch.where(T._col(t, x) <= eps, torch.full_like(x, float("nan")), -x)

    for solver in ("euler_maruyama", "ode_euler"):
        with pytest.raises(solvers.NonFiniteStateError) as info:
            sd.sample(nan_at_eps, sd.VPSDE(), T.SHAPE, solver=solver, steps=10, denoise=True,
                      eps=eps, generator=torch.Generator().manual_seed(0))
        msg = str(info.value)
        assert msg.startswith(f"sample(solver='{solver}'): non-finite state at step 11 (t=0.001)"), msg
        assert "final denoising step" in msg


def test_sde_adaptive_takes_max_steps():
    assert sd.samplers.SOLVERS["sde_adaptive"].options["max_steps"].default == 100_000
    start = time.perf_counter()
    with pytest.raises(solvers.MaxStepsError) as info:
        sd.sample(lambda x, t: -x, sd.VPSDE(), T.SHAPE, solver="sde_adaptive", max_steps=3,
                  rtol=1e-9, atol=1e-9, generator=torch.Generator().manual_seed(0))
    assert time.perf_counter() - start < SECONDS_PER_CASE
    assert str(info.value).startswith("sample(solver='sde_adaptive', method='srk'): max_steps=3 ")


@pytest.mark.parametrize("which", ["encode", "decode"])
def test_encode_and_decode_name_themselves(which):
    fn = getattr(sd.likelihood, which)
    with pytest.raises(solvers.MaxStepsError) as info:
        fn(T.stiff, sd.VPSDE(), T._x_T(), method="bosh3", max_steps=5)
    assert str(info.value).startswith(f"{which}(method='bosh3'): max_steps=5 was hit at t=")

"""The invalid-input matrix (issue 10, part 3): every public entry point, given a bad
argument, raises ValueError/TypeError before any work, with a message that names the
argument, the value received and what is allowed (DESIGN.md, "Numerical conventions");
every CLI command exits with status 2 and one line on stderr, no traceback.

``CASES`` is the whole matrix in one table, grouped by entry point. A row is
``Case(id, call, exc, match)``: ``call`` builds everything it needs (tiny sizes, float64,
seeded) and makes the bad call; ``exc`` is the exception type (``CLI`` for a command line,
run in process by ``main(argv)``); ``match`` is a regex the message must match, built by
``has(...)`` from the argument's name, the bad value and the allowed values. The id is
``entry point/input``.

"Before any work": scores and networks handed to sample/log_likelihood/encode/decode count
their calls. An argument error must come before the first call (``calls=0``, the default);
a bad score output (wrong shape, NaN, inf, a Python float, an integer tensor) can only be
seen on the first call and must fail there (``calls=1``).

    python tests/scoresde/test_invalid_inputs.py --markdown [docs/reliability.md]

runs every row outside pytest and prints the table of docs/reliability.md (with a path:
rewrites the table between the markers in that file).
"""
from __future__ import annotations

import atexit
import contextlib
import io
import itertools
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
import pytest
import torch
from torch import nn

import scoresde as sd
from scoresde import (CosineVPSDE, DiscreteVPSDE, ScoreModel, SubVPSDE, TrainConfig, Trainer,
                      VESDE, VPSDE, bits_per_dim, decode, encode, load_dataset, log_likelihood,
                      sample)
from scoresde.checkpoint import load_checkpoint
from scoresde.cli import main

F64 = torch.float64
NAN, INF = float("nan"), float("inf")
CLI = "exit status 2"  # the ``exc`` of a command-line row


# -- the table's row type and the message regexes -----------------------------------------------
@dataclass(frozen=True)
class Case:
    """One invalid input: ``call()`` must raise ``exc`` with a message matching ``match``
    (or, for ``exc=CLI``, return status 2 with that one line on stderr), after exactly
    ``calls`` calls of the counted scores/networks it built."""
    id: str
    call: Callable[[], Any]
    exc: Union[type, Tuple[type, ...], str]
    match: str
    calls: int = 0


def has(*parts: str) -> str:
    """A regex matching a message that contains every one of ``parts`` as a whole token
    (not inside a longer word or number): has("steps", "0", ">= 1")."""
    return "(?s)" + "".join(rf"(?=.*(?<![\w.]){re.escape(p)}(?!\w))" for p in parts)


# -- builders ------------------------------------------------------------------------------------
_COUNTED: List[Any] = []  # every counted score/network made by the running case


class Counted:
    """A score function s(x, t) that counts its calls; ``out`` gives its output (default the
    score of N(0, I), -x)."""

    def __init__(self, out: Callable = lambda x, t: -x):
        self.out, self.calls = out, 0
        _COUNTED.append(self)

    def __call__(self, x, t, *cond):  # a conditional call score(x, t, cond) ignores cond
        self.calls += 1
        return self.out(x, t)


class CountedNet(nn.Module):
    """An epsilon network with one float64 parameter that counts its calls."""

    def __init__(self, out: Callable = lambda x, t: torch.zeros_like(x), dtype=F64):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=dtype))
        self.out, self.calls = out, 0
        _COUNTED.append(self)

    def forward(self, x, t):
        self.calls += 1
        return self.scale * self.out(x, t)


def score(out: Callable = lambda x, t: -x) -> Counted:
    return Counted(out)


def model(out: Callable = lambda x, t: torch.zeros_like(x), sde=None) -> ScoreModel:
    return ScoreModel(CountedNet(out), sde or VPSDE(), prediction="epsilon")


def x(*shape: int, fill: float = 0.5, dtype=F64, at: Optional[Tuple[int, ...]] = None,
      value: float = 0.0) -> torch.Tensor:
    """A [*shape] tensor of ``fill`` with ``value`` at index ``at``."""
    out = torch.full(shape, fill, dtype=dtype)
    if at is not None:
        out[at] = value
    return out


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def em(*, sde=None, shape=(4, 2), s=None, **kw):
    """sample() with Euler–Maruyama, 3 steps, a counted N(0, I) score (override any of them)."""
    kw.setdefault("steps", 3)
    kw.setdefault("dtype", F64)
    return sample(s or score(), sde or VPSDE(), shape, "euler_maruyama", generator=gen(), **kw)


def smp(solver: str, *, sde=None, shape=(4, 2), s=None, **kw):
    """sample() with the named solver, a counted N(0, I) score, float64."""
    kw.setdefault("dtype", F64)
    return sample(s or score(), sde or VPSDE(), shape, solver, generator=gen(), **kw)


def inp(*, known=None, mask=None, solver="euler_maruyama", **kw):
    """inpaint() of [4, 2] data, the first coordinate known, 3 steps, a counted N(0, I) score."""
    kw.setdefault("steps", 3)
    return sd.inpaint(score(), VPSDE(), x(4, 2) if known is None else known,
                      torch.tensor([1.0, 0.0], dtype=F64) if mask is None else mask, solver,
                      generator=gen(), **kw)


def ll(data=None, *, s=None, sde=None, **kw):
    """log_likelihood with a counted N(0, I) score and loose tolerances."""
    kw = {"rtol": 1e-3, "atol": 1e-3, **kw}
    return log_likelihood(s or score(), sde or VPSDE(), x(3, 2) if data is None else data, **kw)


def bpd(data, **kw):
    return bits_per_dim(score(), VPSDE(), data, **{"rtol": 1e-3, "atol": 1e-3, **kw})


# files and directories, in one temporary directory per process
_TMP: List[Path] = []
_names = itertools.count()


def tmp() -> Path:
    if not _TMP:
        _TMP.append(Path(tempfile.mkdtemp(prefix="scoresde-invalid-")))
        atexit.register(shutil.rmtree, _TMP[0], True)
    return _TMP[0]


def fresh(name: str) -> Path:
    """A path in the temporary directory that no other case uses."""
    return tmp() / f"{next(_names)}-{name}"


def npy(array) -> str:
    path = fresh("data.npy")
    np.save(path, np.asarray(array), allow_pickle=True)
    return str(path)


def folder(**files: str) -> str:
    """A directory holding the given text files."""
    path = fresh("dir")
    path.mkdir()
    for name, text in files.items():
        (path / name.replace("_", ".")).write_text(text)
    return str(path)


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 2, "batch_size": 4, "warmup": 0, "log_every": 1, **kw})


def trainer(data, **kw):
    return Trainer(sd.MLP(2, hidden=8, depth=1).to(F64), VPSDE(), data, tiny_config(**kw))


_RUN: List[str] = []


def tiny_run() -> str:
    """A run directory written by ``scoresde train`` (2 steps on 32 moons points)."""
    if not _RUN:
        out = str(fresh("run"))
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            status = main(["train", "--data", "moons", "--out", out, "--steps", "2", "--n", "32",
                           "--hidden", "8", "--depth", "1", "--batch-size", "16",
                           "--dtype", "float64", "--no-progress"])
        assert status == 0, "could not train the tiny run"
        _RUN.append(out)
    return _RUN[0]


def pt(obj) -> str:
    path = fresh("data.pt")
    torch.save(obj, path)
    return str(path)


def csv() -> str:
    path = fresh("data.csv")
    path.write_text("1,2\n3,4\n")
    return str(path)


def out() -> str:
    """A fresh path that does not exist yet."""
    return str(fresh("out"))


class Cli:
    """A command line ``scoresde ARGV``: an argument that is a function (``out``,
    ``tiny_run``, ...) is called for its value when the command runs. Calling the Cli runs
    ``main(argv)`` in process and returns the exit status."""

    def __init__(self, *argv: Union[str, Callable[[], str]]):
        self.argv = argv

    def __call__(self) -> int:
        return main([a() if callable(a) else a for a in self.argv])

    def __repr__(self) -> str:
        return "scoresde " + " ".join(a if isinstance(a, str) else f"<{a.__name__}>"
                                      for a in self.argv)


def cli(id_: str, *argv: Union[str, Callable[[], str]], match: str) -> Case:
    return Case(id_, Cli(*argv), CLI, match)


D10 = DiscreteVPSDE.linear(10, beta_start=1e-3, beta_end=0.2)


class EpsNet(CountedNet):
    """A counted network with a diffusers-like ``config`` (in_channels, out_channels)."""

    def __init__(self, out: Callable, in_channels: int, out_channels: int):
        super().__init__(out)
        self.config = SimpleNamespace(in_channels=in_channels, out_channels=out_channels)


def eps_net(out: Callable = lambda x, k: torch.zeros_like(x), in_channels: int = 3,
            out_channels: int = 3) -> EpsNet:
    return EpsNet(out, in_channels, out_channels)


# -- the matrix ----------------------------------------------------------------------------------
V = ValueError
T = TypeError

CASES: List[Case] = [
    # ---- SDE constructors ----------------------------------------------------------------
    Case("VPSDE/beta_min=-0.1", lambda: VPSDE(beta_min=-0.1), V, has("beta_min", "-0.1", ">= 0")),
    Case("VPSDE/beta_min=20>beta_max=0.1", lambda: VPSDE(beta_min=20.0, beta_max=0.1), V,
         has("beta_min", "beta_max", "20.0", "0.1", "<")),
    Case("VPSDE/beta_max=nan", lambda: VPSDE(beta_max=NAN), V, has("beta_max", "nan", "finite")),
    Case("VPSDE/N=0", lambda: VPSDE(N=0), V, has("N", "0", ">= 1")),
    Case("VPSDE/beta_min=beta_max=1.5", lambda: VPSDE(beta_min=1.5, beta_max=1.5), V,
         has("beta_min", "beta_max", "1.5", "<")),
    Case("SubVPSDE/beta_min=20>beta_max=0.1", lambda: SubVPSDE(beta_min=20.0, beta_max=0.1), V,
         has("beta_min", "beta_max", "20.0", "0.1", "<")),
    Case("SubVPSDE/beta_min=-0.1", lambda: SubVPSDE(beta_min=-0.1), V,
         has("beta_min", "-0.1", ">= 0")),
    Case("SubVPSDE/beta_min=beta_max=1.5", lambda: SubVPSDE(beta_min=1.5, beta_max=1.5), V,
         has("beta_min", "beta_max", "1.5", "<")),
    Case("SubVPSDE/beta_min='0.1'", lambda: SubVPSDE(beta_min="0.1"), T,
         has("beta_min", "'0.1'", "str", "real number")),
    Case("VESDE/sigma_min=0", lambda: VESDE(sigma_min=0.0), V, has("sigma_min", "0.0", "> 0")),
    Case("VESDE/sigma_min=-1", lambda: VESDE(sigma_min=-1.0), V, has("sigma_min", "-1.0", "> 0")),
    Case("VESDE/sigma_max=0.5<sigma_min=1", lambda: VESDE(sigma_min=1.0, sigma_max=0.5), V,
         has("sigma_min", "sigma_max", "0.5", "<")),
    Case("VESDE/sigma_min=sigma_max=2", lambda: VESDE(sigma_min=2.0, sigma_max=2.0), V,
         has("sigma_min", "sigma_max", "2.0", "<")),
    Case("VESDE/sigma_max=inf", lambda: VESDE(sigma_max=INF), V, has("sigma_max", "inf", "finite")),
    Case("CosineVPSDE/s=0", lambda: CosineVPSDE(s=0.0), V, has("s", "0.0", "> 0")),
    Case("CosineVPSDE/s=nan", lambda: CosineVPSDE(s=NAN), V, has("s", "nan", "finite")),
    Case("CosineVPSDE/beta_max=0.01<beta(0)", lambda: CosineVPSDE(beta_max=0.01), V,
         has("beta_max", "0.01", "exceed")),
    Case("CosineVPSDE/N=10.5", lambda: CosineVPSDE(N=10.5), T, has("N", "10.5", "integer")),
    # DiscreteVPSDE: betas must lie in (0, 1). Then alphabar = cumprod(1 - betas) is strictly
    # decreasing: a non-monotone alphabar is reachable only through a beta <= 0 (below).
    Case("DiscreteVPSDE/betas[1]=0", lambda: DiscreteVPSDE([0.1, 0.0, 0.2]), V,
         has("betas", "betas[1]", "0.0", "(0, 1)")),
    Case("DiscreteVPSDE/betas[1]=1", lambda: DiscreteVPSDE([0.1, 1.0]), V,
         has("betas", "betas[1]", "1.0", "(0, 1)")),
    Case("DiscreteVPSDE/betas[0]<0(alphabar-increasing)",
         lambda: DiscreteVPSDE(torch.tensor([-0.01, 0.1], dtype=F64)), V,
         has("betas", "betas[0]", "-0.01", "(0, 1)")),
    Case("DiscreteVPSDE/betas[1]=1.5", lambda: DiscreteVPSDE([0.2, 1.5]), V,
         has("betas", "1.5", "(0, 1)")),
    Case("DiscreteVPSDE/betas[1]=nan", lambda: DiscreteVPSDE([0.1, NAN]), V,
         has("betas", "betas[1]", "nan", "(0, 1)")),
    Case("DiscreteVPSDE/betas-empty", lambda: DiscreteVPSDE(torch.zeros(0)), V,
         has("betas", "(0,)", "non-empty 1-D")),
    Case("DiscreteVPSDE/betas-2d", lambda: DiscreteVPSDE(torch.full((2, 3), 0.01)), V,
         has("betas", "(2, 3)", "non-empty 1-D")),
    Case("DiscreteVPSDE/betas-0d", lambda: DiscreteVPSDE(torch.tensor(0.01)), V,
         has("betas", "()", "non-empty 1-D")),
    Case("DiscreteVPSDE/betas-complex", lambda: DiscreteVPSDE(torch.full((3,), 0.1j, dtype=torch.complex128)), T,
         has("betas", "torch.complex128", "real")),
    Case("DiscreteVPSDE/betas=['a','b']", lambda: DiscreteVPSDE(["a", "b"]), T,
         has("betas", "['a', 'b']", "list", "real")),
    Case("DiscreteVPSDE/betas=['0.1','0.2']", lambda: DiscreteVPSDE(["0.1", "0.2"]), T,
         has("betas", "['0.1', '0.2']", "list", "real numbers")),
    Case("DiscreteVPSDE/betas-ragged", lambda: DiscreteVPSDE([[0.1, 0.2], [0.3]]), V,
         has("betas", "rectangular", "(2,)", "(1,)")),
    Case("DiscreteVPSDE.linear/N=0", lambda: DiscreteVPSDE.linear(N=0), V, has("N", "0", ">= 1")),
    Case("DiscreteVPSDE.linear/beta_end=1.5", lambda: DiscreteVPSDE.linear(10, 1e-3, 1.5), V,
         has("beta_end", "1.5", "(0, 1)")),

    # ---- oracles: parameters in any natural form (lists of tensors, nested lists, arrays),
    # converted once by as_real_tensor; ragged or non-numeric ones name the argument -------
    Case("GaussianMixture/covs-ragged-[(2,2),(3,3)]",
         lambda: sd.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]],
                                    [torch.eye(2), torch.eye(3)]), V,
         has("covs", "rectangular", "(2, 2)", "(3, 3)")),
    Case("GaussianMixture/means-ragged-nested-lists",
         lambda: sd.GaussianMixture([0.5, 0.5], [[0.0, 0.0], [1.0]], [torch.eye(2)] * 2), V,
         has("means", "rectangular", "(2,)", "(1,)")),
    Case("GaussianMixture/means=[['0','0']]", lambda: sd.GaussianMixture([1.0], [["0", "0"]],
                                                                          [torch.eye(2)]), T,
         has("means[0]", "['0', '0']", "list", "real numbers")),
    Case("GaussianMixture/weights=None", lambda: sd.GaussianMixture(None, [[0.0, 0.0]],
                                                                    [torch.eye(2)]), T,
         has("weights", "None", "real numbers")),
    Case("GaussianMixture/weights=[True]", lambda: sd.GaussianMixture([True], [[0.0, 0.0]],
                                                                      [torch.eye(2)]), T,
         has("weights", "[True]", "real numbers")),
    Case("GaussianMixture/covs-(1,3,3)-for-D=2",
         lambda: sd.GaussianMixture([1.0], [[0.0, 0.0]], [torch.eye(3)]), V,
         has("covs", "[K, D, D]", "(1, 3, 3)")),
    Case("GaussianData/cov-complex-numpy",
         lambda: sd.GaussianData(np.zeros(2), np.eye(2) * 1j), T,
         has("cov", "ndarray", "real numbers")),
    Case("GaussianData/mean='origin'", lambda: sd.GaussianData("origin", np.eye(2)), T,
         has("mean", "'origin'", "str", "real numbers")),
    # ---- ScoreModel and time arguments ---------------------------------------------------
    Case("ScoreModel/prediction='noise_level'",
         lambda: ScoreModel(CountedNet(), VPSDE(), prediction="noise_level"), V,
         has("prediction", "'noise_level'", "'epsilon'", "'v_prediction'")),
    Case("ScoreModel/net=42", lambda: ScoreModel(42, VPSDE()), T,
         has("net", "42", "int", "callable")),
    Case("ScoreModel/sde='vp'", lambda: ScoreModel(CountedNet(), "vp"), T,
         has("sde", "'vp'", "str", "SDE")),
    Case("ScoreModel/time_input='index'-on-VPSDE",
         lambda: ScoreModel(CountedNet(), VPSDE(), time_input="index"), V,
         has("time_input", "'index'", "VPSDE", "DiscreteVPSDE")),
    Case("ScoreModel/t=1.5", lambda: model()(x(4, 2), 1.5), V, has("t", "1.5", "[0, 1]")),
    Case("ScoreModel/t=[.5,nan,.5,.5]", lambda: model()(x(4, 2), x(4, at=(1,), value=NAN)), V,
         has("t", "nan", "[0, 1]")),
    Case("ScoreModel/t-2d", lambda: model()(x(4, 2), x(4, 1)), V,
         has("t", "(4, 1)", "1-D [batch]")),
    Case("ScoreModel/t-batch-5-for-4", lambda: model()(x(4, 2), x(5)), V,
         has("t", "(5,)", "4", "[4]")),
    Case("ScoreModel/t='0.5'", lambda: model()(x(4, 2), "0.5"), T,
         has("t", "'0.5'", "str", "float")),
    Case("ScoreModel/x-int64", lambda: model()(torch.zeros(4, 2, dtype=torch.long), 0.5), T,
         has("x", "torch.int64", "floating-point")),
    Case("ScoreModel/net-returns-(4,1)", lambda: model(lambda x, t: x[:, :1])(x(4, 2), 0.5), V,
         has("net", "(4, 1)", "(4, 2)", "shaped like x"), calls=1),
    Case("VPSDE.marginal_prob/t=-0.1", lambda: VPSDE().marginal_prob(x(4, 2), x(4, at=(2,), value=-0.1)),
         V, has("t", "-0.1", "[0, 1]")),
    Case("VESDE.marginal_prob/t=nan", lambda: VESDE().marginal_prob(x(4, 2), NAN), V,
         has("t", "nan", "[0, 1]")),
    Case("CosineVPSDE.marginal_prob/t=2", lambda: CosineVPSDE().marginal_prob(x(4, 2), 2.0), V,
         has("t", "2.0", "[0, 1]")),
    Case("VPSDE.marginal_prob/x0-list", lambda: VPSDE().marginal_prob([[0.5, 0.5]], 0.5), T,
         has("x0", "list", "torch.Tensor")),

    # ---- sample(): arguments (the score is never called) ---------------------------------
    Case("sample/score=None", lambda: sample(None, VPSDE(), (4, 2), "euler_maruyama"), T,
         has("score", "None", "callable")),
    Case("sample/sde='vp'", lambda: sample(score(), "vp", (4, 2), "euler_maruyama"), T,
         has("sde", "'vp'", "SDE")),
    Case("sample/solver='rk45'", lambda: smp("rk45"), V,
         has("solver", "'rk45'", "'euler_maruyama'", "'ode'")),
    Case("sample/unknown-option-snr-for-euler_maruyama", lambda: em(snr=0.1), V,
         has("snr", "'euler_maruyama'", "steps", "eps")),
    Case("sample/steps=0", lambda: em(steps=0), V, has("steps", "0", ">= 1")),
    Case("sample/steps=-1", lambda: smp("ode_heun", steps=-1), V, has("steps", "-1", ">= 1")),
    Case("sample/steps=nan", lambda: em(steps=NAN), T, has("steps", "nan", "integer")),
    Case("sample/steps=inf", lambda: smp("pc", steps=INF), T, has("steps", "inf", "integer")),
    Case("sample/steps=2.5", lambda: smp("ddim", steps=2.5), T, has("steps", "2.5", "integer")),
    Case("sample/ode-rtol=0", lambda: smp("ode", rtol=0.0), V, has("rtol", "0.0", "positive")),
    Case("sample/ode-rtol=-1e-3", lambda: smp("ode", rtol=-1e-3), V,
         has("rtol", "-0.001", "positive")),
    Case("sample/ode-rtol=nan", lambda: smp("ode", rtol=NAN), V, has("rtol", "nan", "finite")),
    Case("sample/ode-atol=inf", lambda: smp("ode", atol=INF), V, has("atol", "inf", "finite")),
    Case("sample/ode-max_steps=0", lambda: smp("ode", max_steps=0), V,
         has("max_steps", "0", "positive")),
    Case("sample/eps=-1e-3", lambda: em(eps=-1e-3), V, has("eps", "-0.001", ">= 0")),
    Case("sample/eps=1=T", lambda: em(eps=1.0), V, has("eps", "1.0", "< T", "1")),
    Case("sample/ode-eps=2>T", lambda: smp("ode", eps=2.0), V, has("eps", "2.0", "< T")),
    Case("sample/grid='cosine'", lambda: em(grid="cosine"), V,
         has("grid", "'cosine'", "'uniform'", "'logsnr'")),
    Case("sample/shape=(0,2)", lambda: em(shape=(0, 2)), V, has("shape", "(0, 2)", "positive")),
    Case("sample/shape=(4,-2)", lambda: em(shape=(4, -2)), V, has("shape", "(4, -2)", "positive")),
    Case("sample/shape=(4,2.5)", lambda: em(shape=(4, 2.5)), T,
         has("shape", "(4, 2.5)", "integers")),
    Case("sample/shape=4", lambda: em(shape=4), T, has("shape", "4", "int", "[batch, *dims]")),
    Case("sample/x_T-shape-(3,2)-for-(4,2)", lambda: em(x_T=x(3, 2)), V,
         has("x_T", "(3, 2)", "(4, 2)")),
    Case("sample/x_T-with-nan", lambda: em(x_T=x(4, 2, at=(1, 0), value=NAN)), V,
         has("x_T", "x_T[1]", "nan", "finite")),
    Case("sample/x_T-with-inf", lambda: em(x_T=x(4, 2, at=(3, 1), value=-INF)), V,
         has("x_T", "x_T[3]", "-inf", "finite")),
    Case("sample/x_T-int64", lambda: em(x_T=torch.zeros(4, 2, dtype=torch.long)), T,
         has("x_T", "torch.int64", "floating-point")),
    Case("sample/dtype=int64", lambda: em(dtype=torch.int64), T,
         has("dtype", "torch.int64", "floating")),
    Case("sample/dtype='float64'", lambda: em(dtype="float64"), T,
         has("dtype", "'float64'", "torch.dtype")),
    Case("sample/generator=numpy", lambda: sample(score(), VPSDE(), (4, 2), "euler_maruyama",
                                                  generator=np.random.default_rng(0)), T,
         has("generator", "Generator", "torch.Generator")),
    # No second device on a CPU-only machine for a real CUDA generator: the samples go to the
    # "meta" device instead, which a CPU generator cannot fill either.
    Case("sample/generator-cpu-for-device-meta", lambda: em(device="meta"), V,
         has("generator", "cpu", "meta", "device")),
    Case("sample/seed=-1", lambda: sample(score(), VPSDE(), (4, 2), "euler_maruyama", seed=-1,
                                          steps=3, dtype=F64), V,
         has("seed", "-1", "[0, 2**64)")),
    Case("sample/seed=1.5", lambda: sample(score(), VPSDE(), (4, 2), "euler_maruyama", seed=1.5,
                                           steps=3, dtype=F64), T,
         has("seed", "1.5", "integer")),
    Case("sample/seed-and-generator", lambda: em(seed=0), V, has("seed", "generator", "one")),
    Case("sample/sample_offset=-2", lambda: sample(score(), VPSDE(), (4, 2), "euler_maruyama",
                                                   seed=0, sample_offset=-2, steps=3), V,
         has("sample_offset", "-2", ">= 0")),
    Case("sample/sample_offset-without-seed", lambda: em(sample_offset=3), V,
         has("sample_offset=3", "seed=")),
    Case("sample/ddpm-on-VPSDE", lambda: smp("ddpm"), T, has("solver", "'ddpm'", "DiscreteVPSDE",
                                                              "VPSDE")),
    Case("sample/dpm_solver-order=4", lambda: smp("dpm_solver", order=4, steps=3), V,
         has("order", "4", "1, 2 or 3")),
    Case("sample/pc-snr=0", lambda: smp("pc", snr=0.0, steps=3), V, has("snr", "0.0", "> 0")),
    Case("sample/pc-corrector_steps=-1", lambda: smp("pc", corrector_steps=-1, steps=3), V,
         has("corrector_steps", "-1", ">= 0")),
    Case("sample/pc-corrector='hmc'", lambda: smp("pc", corrector="hmc", steps=3), V,
         has("corrector", "'hmc'", "'langevin'")),
    Case("sample/ddim-eta=-0.5", lambda: smp("ddim", eta=-0.5, steps=3), V,
         has("eta", "-0.5", ">= 0")),
    Case("sample/ddim-timesteps-increasing", lambda: smp("ddim", sde=D10, timesteps=[1, 5]), V,
         has("timesteps", "[1, 5]", "strictly decreasing")),
    Case("sample/ddim-timesteps=[5.0,1.0]", lambda: smp("ddim", sde=D10, timesteps=[5.0, 1.0]),
         T, has("timesteps", "[5.0, 1.0]", "integers")),
    Case("sample/ddim-timesteps=[]", lambda: smp("ddim", sde=D10, timesteps=[]), V,
         has("timesteps", "at least one")),
    Case("sample/ddpm-timesteps=[12,3]>=N", lambda: smp("ddpm", sde=D10, timesteps=[12, 3]), V,
         has("timesteps", "12", "{0..9}")),
    Case("sample/ddim-timesteps-on-VPSDE", lambda: smp("ddim", timesteps=[5, 1]), T,
         has("timesteps", "DiscreteVPSDE", "VPSDE")),
    Case("sample/dpm_solver++-steps=3-timesteps-of-2",
         lambda: smp("dpm_solver++", sde=D10, steps=3, timesteps=[5, 1]), V,
         has("steps=3", "timesteps", "2")),
    Case("sample/ddpm-variance='learned'", lambda: smp("ddpm", sde=D10, variance="learned"), V,
         has("variance", "'learned'", "'fixed_large'", "'fixed_small'")),
    Case("sample/ddim-step_to='prev'", lambda: smp("ddim", sde=D10, step_to="prev"), V,
         has("step_to", "'prev'", "'next'", "'stride'")),
    Case("sample/ddim-step_to='stride'-on-VPSDE", lambda: smp("ddim", step_to="stride"), T,
         has("step_to='stride'", "DiscreteVPSDE", "VPSDE")),
    Case("sample/heun_karras-steps=1", lambda: smp("heun_karras", steps=1), V,
         has("steps", "1", ">= 2")),
    Case("sample/denoise='yes'", lambda: em(denoise="yes"), T,
         has("denoise", "'yes'", "str", "True or False")),
    Case("sample/callback=5", lambda: em(callback=5), T,
         has("callback", "5", "int", "callable")),
    Case("sample/x_T-float32-for-float64-network",
         lambda: sample(model(), VPSDE(), (4, 2), "euler_maruyama", steps=3,
                        x_T=x(4, 2, dtype=torch.float32)), V,
         has("x_T", "torch.float32", "torch.float64")),

    # ---- sample(): the score's output, checked in full on the first call -----------------
    Case("sample/score-returns-(4,1)", lambda: em(s=score(lambda x, t: x[:, :1])), V,
         has("score", "(4, 1)", "(4, 2)", "shaped like x"), calls=1),
    Case("sample/score-returns-nan", lambda: em(s=score(lambda x, t: torch.full_like(x, NAN))), V,
         has("score", "nan", "finite"), calls=1),
    Case("sample/score-returns-inf",
         lambda: smp("ode_euler", steps=3, s=score(lambda x, t: torch.full_like(x, INF))), V,
         has("score", "inf", "finite"), calls=1),
    Case("sample/score-returns-float-0.5", lambda: smp("ddim", steps=3, s=score(lambda x, t: 0.5)),
         T, has("score", "0.5", "float", "tensor"), calls=1),
    Case("sample/score-returns-int64",
         lambda: smp("pc", steps=4, s=score(lambda x, t: torch.zeros_like(x, dtype=torch.long))),
         T, has("score", "torch.int64", "floating-point", "torch.float64"), calls=1),
    Case("sample/ScoreModel-net-returns-nan",
         lambda: smp("dpm_solver++", steps=3, s=model(lambda x, t: torch.full_like(x, NAN))), V,
         has("score", "nan", "finite"), calls=1),

    # ---- sample(): conditional sampling and guidance (docs/guidance.md) -------------------
    Case("sample/cond-batch-3-for-batch-4", lambda: em(cond=torch.zeros(3, dtype=torch.long)), V,
         has("cond", "(3,)", "batch size 4")),
    Case("sample/cond=[0,1,0,1]-list", lambda: em(cond=[0, 1, 0, 1]), T,
         has("cond", "[0, 1, 0, 1]", "list", "tensor")),
    Case("sample/guidance=-1", lambda: em(cond=1, guidance=-1.0), V,
         has("guidance", "-1.0", ">= 0")),
    Case("sample/guidance=nan", lambda: em(cond=1, guidance=NAN), V,
         has("guidance", "nan", "finite")),
    Case("sample/guidance-without-cond", lambda: em(guidance=2.0), V,
         has("guidance", "cond=")),
    Case("sample/classifier_scale-without-classifier", lambda: em(cond=1, classifier_scale=2.0),
         V, has("classifier_scale", "2.0", "classifier=")),
    Case("sample/guidance-and-classifier", lambda: em(cond=1, guidance=1.0,
                                                       classifier=lambda x, t: x), V,
         has("guidance", "1.0", "classifier=")),
    Case("sample/classifier=5", lambda: em(cond=1, classifier=5), T,
         has("classifier", "5", "int", "callable")),
    Case("sample/classifier_scale=-0.5", lambda: em(cond=1, classifier=lambda x, t: x,
                                                    classifier_scale=-0.5), V,
         has("classifier_scale", "-0.5", ">= 0")),
    Case("sample/classifier-returns-(4,)",
         lambda: em(cond=1, classifier=lambda x, t: x.sum(1)), V,
         has("classifier(x, t)", "(4,)", "[batch, n_classes]", "[4, n_classes]"), calls=1),
    Case("sample/classifier-label-3-of-2-classes",
         lambda: em(cond=3, classifier=lambda x, t: x), V,
         has("cond", "[0, 2)", "2 classes"), calls=1),

    # ---- inpaint() (docs/guidance.md) --------------------------------------------------------
    Case("inpaint/mask-(3,)-for-known-(4,2)", lambda: inp(mask=x(3, fill=1.0)), V,
         has("mask", "(3,)", "(4, 2)", "broadcast")),
    Case("inpaint/mask-value-0.5", lambda: inp(mask=x(2, fill=0.5)), V,
         has("mask", "0.5", "0 and 1")),
    Case("inpaint/mask-list", lambda: inp(mask=[1, 0]), T, has("mask", "[1, 0]", "list", "tensor")),
    Case("inpaint/known-with-nan", lambda: inp(known=x(4, 2, at=(1, 0), value=NAN)), V,
         has("known", "nan", "finite")),
    Case("inpaint/solver='pc'", lambda: inp(solver="pc"), V,
         has("solver", "'pc'", "'euler_maruyama'", "'ode_heun'")),
    Case("inpaint/resample=0", lambda: inp(resample=0), V, has("resample", "0", ">= 1")),
    Case("inpaint/jumps=5-of-3-steps", lambda: inp(jumps=5), V, has("jumps", "5", "3")),
    Case("inpaint/steps=3-for-ode_heun", lambda: inp(solver="ode_heun"), V,
         has("steps", "3", "multiple of 2", "'ode_heun'")),

    # ---- diffusers interop (from_diffusers, diffusers_timesteps, the alphas_cumprod table) --
    Case("from_diffusers/dir-without-scheduler-config",
         lambda: sd.from_diffusers(folder(config_json='{"_class_name": "UNet2DModel"}')), V,
         has("no scheduler config", "scheduler_config.json")),
    Case("from_diffusers/dir-missing", lambda: sd.from_diffusers(str(fresh("none"))), V,
         has("is not a directory")),
    Case("from_diffusers/beta_schedule='quadratic'",
         lambda: sd.from_diffusers(eps_net(), {"beta_schedule": "quadratic"}), V,
         has("beta_schedule='quadratic'", "'linear'", "'scaled_linear'", "'squaredcos_cap_v2'")),
    Case("from_diffusers/prediction_type='flow'",
         lambda: sd.from_diffusers(eps_net(), {"prediction_type": "flow"}), V,
         has("prediction_type='flow'", "'epsilon'", "'sample'", "'v_prediction'")),
    Case("from_diffusers/timestep_spacing='uniform'",
         lambda: sd.from_diffusers(eps_net(), {"timestep_spacing": "uniform"}), V,
         has("timestep_spacing='uniform'", "'linspace'", "'leading'", "'trailing'")),
    Case("from_diffusers/rescale_betas_zero_snr=True",
         lambda: sd.from_diffusers(eps_net(), {"rescale_betas_zero_snr": True}), V,
         has("rescale_betas_zero_snr=True", "not supported")),
    Case("from_diffusers/num_train_timesteps=0",
         lambda: sd.from_diffusers(eps_net(), {"num_train_timesteps": 0}), V,
         has("num_train_timesteps", "0", ">= 1")),
    Case("from_diffusers/out_channels=4-in_channels=2",
         lambda: sd.from_diffusers(eps_net(in_channels=2, out_channels=4), {}), V,
         has("out_channels", "4", "in_channels", "2", "shaped like its input")),
    Case("from_diffusers/model-without-scheduler", lambda: sd.from_diffusers(eps_net()), V,
         has("scheduler", "required")),
    Case("from_diffusers/source=3", lambda: sd.from_diffusers(3, {}), T,
         has("source", "3", "int", "directory")),
    Case("from_diffusers/scheduler=3", lambda: sd.from_diffusers(eps_net(), 3), T,
         has("scheduler", "3", "int", "scheduler_config.json")),
    Case("from_diffusers/model-output-shape", lambda: sd.sample(
        sd.from_diffusers(eps_net(lambda x, k: x[:, :1]), {})[0], D10, (2, 3), "ddim",
        steps=2, generator=gen(), dtype=F64), V, has("net(x, t)", "(2, 3)", "(2, 1)"), calls=1),
    Case("diffusers_timesteps/steps=0", lambda: sd.diffusers_timesteps({}, 0), V,
         has("steps", "0", ">= 1")),
    Case("diffusers_timesteps/steps=2000>N", lambda: sd.diffusers_timesteps({}, 2000), V,
         has("steps", "2000", "num_train_timesteps", "1000")),
    Case("diffusers_timesteps/solver='pndm'", lambda: sd.diffusers_timesteps({}, 5, "pndm"), V,
         has("solver='pndm'", "'ddim'", "'dpm_solver++'")),
    Case("sde_from_alphas_cumprod/increasing", lambda: sd.sde_from_alphas_cumprod([0.9, 0.95]),
         V, has("alphas_cumprod", "alphas_cumprod[1]", "0.95", "strictly decreasing")),
    Case("sde_from_alphas_cumprod/alphas_cumprod[0]=1", lambda: sd.sde_from_alphas_cumprod(
        [1.0, 0.5]), V, has("alphas_cumprod", "alphas_cumprod[0]", "1.0", "(0, 1)")),
    Case("sde_from_alphas_cumprod/strings", lambda: sd.sde_from_alphas_cumprod(["0.9", "0.5"]),
         T, has("alphas_cumprod", "['0.9', '0.5']", "list", "real numbers")),
    Case("sde_from_alphas_cumprod/complex", lambda: sd.sde_from_alphas_cumprod(
        torch.tensor([0.9j, 0.5j], dtype=torch.complex128)), T,
         has("alphas_cumprod", "torch.complex128", "real numbers")),
    Case("from_denoiser/model=3", lambda: sd.from_denoiser(3), T,
         has("model", "3", "int", "callable")),
    Case("from_denoiser/sigma_data=-0.5", lambda: sd.from_denoiser(Counted(), sigma_data=-0.5),
         V, has("sigma_data", "-0.5", "> 0")),
    Case("from_denoiser/sde='ve'", lambda: sd.from_denoiser(Counted(), "ve"), T,
         has("sde", "'ve'", "str", "SDE")),
    Case("to_denoiser/score=None", lambda: sd.to_denoiser(None, VPSDE()), T,
         has("score", "None", "callable")),
    Case("to_denoiser/sigma=500-above-sigma(T)",
         lambda: sd.to_denoiser(score(), VPSDE())(x(4, 2), torch.tensor(500.0, dtype=F64)), V,
         has("sigma", "500", "152.167", "[sigma(0), sigma(T)]")),
    Case("time_from_sigma/sigma=-1", lambda: sd.time_from_sigma(VESDE(0.01, 10.0), -1.0), V,
         has("sigma", "-1", "0.01", "10")),
    Case("time_from_sigma/sigma-int-tensor", lambda: sd.time_from_sigma(VPSDE(), torch.ones(2,
         dtype=torch.long)), T, has("sigma", "torch.int64", "floating-point")),
    Case("alphas_cumprod/VPSDE-without-N", lambda: sd.alphas_cumprod(VPSDE()), V,
         has("N", "required", "VPSDE")),
    Case("alphas_cumprod/VESDE", lambda: sd.alphas_cumprod(VESDE(0.01, 10.0), N=10), T,
         has("sde", "VP-type", "VESDE")),
    # ---- log_likelihood() ----------------------------------------------------------------
    Case("log_likelihood/x-1d", lambda: ll(x(4)), V, has("x", "(4,)", "[batch, *dims]")),
    Case("log_likelihood/x-empty-batch", lambda: ll(x(0, 2)), V,
         has("x", "(0, 2)", "batch >= 1")),
    Case("log_likelihood/x-(3,0)", lambda: ll(x(3, 0)), V, has("x", "(3, 0)", "one entry")),
    Case("log_likelihood/x-with-inf", lambda: ll(x(3, 2, at=(2, 1), value=INF)), V,
         has("x", "x[2]", "inf", "finite")),
    Case("log_likelihood/x-with-nan", lambda: ll(x(3, 2, at=(0, 0), value=NAN)), V,
         has("x", "x[0]", "nan", "finite")),
    Case("log_likelihood/x-int32", lambda: ll(torch.zeros(3, 2, dtype=torch.int32)), T,
         has("x", "torch.int32", "floating-point")),
    Case("log_likelihood/x-list", lambda: ll([[0.5, 0.5]]), T, has("x", "list", "torch.Tensor")),
    Case("log_likelihood/rtol=0", lambda: ll(rtol=0.0), V, has("rtol", "0.0", "> 0")),
    Case("log_likelihood/rtol=nan", lambda: ll(rtol=NAN), V, has("rtol", "nan", "finite")),
    Case("log_likelihood/atol=-1e-5", lambda: ll(atol=-1e-5), V, has("atol", "-1e-05", "> 0")),
    Case("log_likelihood/atol=inf", lambda: ll(atol=INF), V, has("atol", "inf", "finite")),
    Case("log_likelihood/eps=0", lambda: ll(eps=0.0), V, has("eps", "0.0", "(0, T)", "(0, 1)")),
    Case("log_likelihood/eps=1=T", lambda: ll(eps=1.0), V, has("eps", "1.0", "(0, T)")),
    Case("log_likelihood/eps=nan", lambda: ll(eps=NAN), V, has("eps", "nan", "finite")),
    Case("log_likelihood/method='rk99'", lambda: ll(method="rk99"), V,
         has("method", "'rk99'", "dopri5")),
    Case("log_likelihood/trace='diag'", lambda: ll(trace="diag"), V,
         has("trace", "'diag'", "'exact'", "'hutchinson'")),
    Case("log_likelihood/probe='normal'", lambda: ll(trace="hutchinson", probe="normal"), V,
         has("probe", "'normal'", "'rademacher'")),
    Case("log_likelihood/n_probes=0", lambda: ll(trace="hutchinson", n_probes=0), V,
         has("n_probes", "0", ">= 1")),
    Case("log_likelihood/chunk_size=0", lambda: ll(chunk_size=0), V,
         has("chunk_size", "0", ">= 1")),
    Case("log_likelihood/max_steps=0", lambda: ll(max_steps=0), V, has("max_steps", "0", ">= 1")),
    Case("log_likelihood/max_steps=1.5", lambda: ll(max_steps=1.5), T,
         has("max_steps", "1.5", "integer")),
    Case("log_likelihood/generator=0", lambda: ll(trace="hutchinson", generator=0), T,
         has("generator", "0", "int", "torch.Generator")),
    Case("log_likelihood/seed-and-generator",
         lambda: ll(trace="hutchinson", seed=0, generator=gen()), V,
         has("seed", "generator", "one")),
    Case("log_likelihood/seed=-1", lambda: ll(trace="hutchinson", seed=-1), V,
         has("seed", "-1", "[0, 2**64)")),
    Case("log_likelihood/per_sample='yes'", lambda: ll(per_sample="yes"), T,
         has("per_sample", "'yes'", "True or False")),
    Case("log_likelihood/per_sample-with-RK45", lambda: ll(per_sample=True, method="RK45"), V,
         has("per_sample", "method", "'RK45'", "'dopri5'")),
    Case("log_likelihood/x-float32-for-float64-network",
         lambda: ll(x(3, 2, dtype=torch.float32), s=model()), V,
         has("x", "torch.float32", "torch.float64")),
    Case("log_likelihood/score-returns-(3,1)", lambda: ll(s=score(lambda x, t: x[:, :1])), V,
         has("score", "(3, 1)", "(3, 2)", "shaped like x"), calls=1),
    Case("log_likelihood/score-returns-nan",
         lambda: ll(trace="hutchinson", s=score(lambda x, t: x * NAN)), V,
         has("score", "nan", "finite"), calls=1),

    # ---- scoresde.distributed (docs/distributed.md; no process group: world size 1) -------
    Case("distributed.sample/n_total=0",
         lambda: sd.distributed.sample(score(), VPSDE(), (2,), n_total=0, seed=0, steps=3,
                                       solver="euler_maruyama"), V,
         has("n_total", "0", ">= 1")),
    Case("distributed.sample/generator",
         lambda: sd.distributed.sample(score(), VPSDE(), (2,), n_total=4, seed=0, steps=3,
                                       solver="euler_maruyama", generator=gen()), V,
         has("generator=", "seed=")),
    Case("distributed.sample/seed=-1",
         lambda: sd.distributed.sample(score(), VPSDE(), (2,), n_total=4, seed=-1, steps=3,
                                       solver="euler_maruyama"), V,
         has("seed", "-1", "[0, 2**64)")),
    Case("distributed.sample/batch_size=0",
         lambda: sd.distributed.sample(score(), VPSDE(), (2,), n_total=4, seed=0, steps=3,
                                       solver="euler_maruyama", batch_size=0), V,
         has("batch_size", "0", ">= 1")),
    Case("distributed.sample/shape_per_item=2",
         lambda: sd.distributed.sample(score(), VPSDE(), 2, n_total=4, seed=0, steps=3,
                                       solver="euler_maruyama"), T,
         has("shape_per_item", "2", "sequence")),
    Case("distributed.log_likelihood/x-1-D",
         lambda: sd.distributed.log_likelihood(score(), VPSDE(), torch.zeros(3)), T,
         has("x", "(3,)", "[N, *dims]")),
    Case("distributed.log_likelihood/generator",
         lambda: sd.distributed.log_likelihood(score(), VPSDE(), x(3, 2), generator=gen(),
                                               trace="hutchinson"), V,
         has("generator=", "seed=")),

    # ---- encode() / decode() -------------------------------------------------------------
    Case("encode/x-with-inf", lambda: encode(score(), VPSDE(), x(2, 2, at=(1, 1), value=INF)), V,
         has("x", "x[1]", "inf", "finite")),
    Case("encode/score-returns-python-float",
         lambda: encode(score(lambda x, t: 1.0), VPSDE(), x(2, 2), rtol=1e-3, atol=1e-3), T,
         has("score", "1.0", "float", "tensor"), calls=1),
    Case("decode/z-1d", lambda: decode(score(), VPSDE(), x(2)), V, has("z", "(2,)", "[batch, *dims]")),
    Case("decode/z-with-nan", lambda: decode(score(), VPSDE(), x(2, 2, at=(0, 1), value=NAN)), V,
         has("z", "z[0]", "nan", "finite")),
    Case("decode/z-float16", lambda: decode(score(), VPSDE(), x(2, 2, dtype=torch.float16),
                                            rtol=1e-3, atol=1e-3), T,
         has("z", "torch.float16", "float32", "float64")),
    Case("decode/eps=1.5", lambda: decode(score(), VPSDE(), x(2, 2), eps=1.5), V,
         has("eps", "1.5", "(0, T)")),
    Case("decode/score-returns-inf",
         lambda: decode(score(lambda x, t: x * INF + 1.0), VPSDE(), x(2, 2), rtol=1e-3, atol=1e-3),
         V, has("score", "inf", "finite"), calls=1),

    # ---- bits_per_dim() ------------------------------------------------------------------
    Case("bits_per_dim/uint8-as-int64-256", lambda: bpd(torch.tensor([[0, 256]])), V,
         has("x", "256", "0..255")),
    Case("bits_per_dim/int-negative", lambda: bpd(torch.tensor([[-3, 10]])), V,
         has("x", "-3", "0..255")),
    Case("bits_per_dim/float-1.5-outside-[0,1]", lambda: bpd(x(2, 2, fill=0.0, at=(1, 0), value=1.5)),
         V, has("x", "1.5", "[0, 1]")),
    Case("bits_per_dim/float-nan", lambda: bpd(x(2, 2, fill=0.0, at=(0, 0), value=NAN)), V,
         has("x", "nan", "[0, 1]")),
    Case("bits_per_dim/float-not-k/255", lambda: bpd(x(2, 2, fill=0.3)), V,
         has("x", "0.3", "k/255")),
    Case("bits_per_dim/x-bool", lambda: bpd(torch.ones(2, 2, dtype=torch.bool)), T,
         has("x", "torch.bool", "integer", "float")),
    Case("bits_per_dim/x-1d", lambda: bpd(torch.zeros(5, dtype=torch.uint8)), V,
         has("x", "(5,)", "[n, *dims]")),
    Case("bits_per_dim/x-empty-(0,4)", lambda: bpd(torch.zeros(0, 4, dtype=torch.uint8)), V,
         has("x", "(0, 4)", "n >= 1")),
    Case("bits_per_dim/data_range='[0,255]'",
         lambda: bpd(torch.zeros(2, 2, dtype=torch.uint8), data_range="[0,255]"), V,
         has("data_range", "'[0,255]'", "'[-1,1]'", "'[0,1]'")),
    Case("bits_per_dim/dequantize='yes'",
         lambda: bpd(torch.zeros(2, 2, dtype=torch.uint8), dequantize="yes"), T,
         has("dequantize", "'yes'", "True", "False")),
    Case("bits_per_dim/batch_size=-2",
         lambda: bpd(torch.zeros(2, 2, dtype=torch.uint8), batch_size=-2), V,
         has("batch_size", "-2", ">= 1")),

    # ---- losses: a data-parallel rank's rows ----------------------------------------------
    Case("dsm_loss/rows=(2,9)", lambda: sd.dsm_loss(score(), VPSDE(), x(4, 2), rows=(2, 9)), V,
         has("rows", "(2, 9)", "0 <= first <= stop <= batch", "4")),

    # ---- TrainConfig and Trainer ---------------------------------------------------------
    Case("TrainConfig/steps=0", lambda: TrainConfig(steps=0), V, has("steps", "0", ">= 1")),
    Case("TrainConfig/steps=100.5", lambda: TrainConfig(steps=100.5), T,
         has("steps", "100.5", "integer")),
    Case("TrainConfig/lr=0", lambda: TrainConfig(lr=0.0), V, has("lr", "0.0", "> 0")),
    Case("TrainConfig/lr=-1e-3", lambda: TrainConfig(lr=-1e-3), V, has("lr", "-0.001", "> 0")),
    Case("TrainConfig/lr=nan", lambda: TrainConfig(lr=NAN), V, has("lr", "nan", "> 0")),
    Case("TrainConfig/batch_size=0", lambda: TrainConfig(batch_size=0), V,
         has("batch_size", "0", ">= 1")),
    Case("TrainConfig/warmup=-1", lambda: TrainConfig(warmup=-1), V, has("warmup", "-1", ">= 0")),
    Case("TrainConfig/ema_decay=1", lambda: TrainConfig(ema_decay=1.0), V,
         has("ema_decay", "1.0", "[0, 1)")),
    Case("TrainConfig/betas=(0.9,1.0)", lambda: TrainConfig(betas=(0.9, 1.0)), V,
         has("betas", "(0.9, 1.0)", "[0, 1)")),
    Case("TrainConfig/grad_clip=0", lambda: TrainConfig(grad_clip=0.0), V,
         has("grad_clip", "0.0", "> 0", "None")),
    Case("TrainConfig/eps=0", lambda: TrainConfig(eps=0.0), V, has("eps", "0.0", "(0, 1)")),
    Case("TrainConfig/loss='l2'", lambda: TrainConfig(loss="l2"), V,
         has("loss", "'l2'", "'dsm'", "'ddpm'")),
    Case("TrainConfig/weighting='snr'", lambda: TrainConfig(weighting="snr"), V,
         has("weighting", "'snr'", "'none'", "'likelihood'")),
    Case("TrainConfig/lr_schedule='linear'", lambda: TrainConfig(lr_schedule="linear"), V,
         has("lr_schedule", "'linear'", "'constant'", "'cosine'")),
    Case("TrainConfig.from_dict/unknown-'stepz'", lambda: TrainConfig.from_dict({"stepz": 3}), V,
         has("stepz", "steps")),
    Case("Trainer/data-(8,3)-for-MLP(dim=2)", lambda: trainer(x(8, 3)), V,
         has("data", "(3,)", "[batch, 2]")),
    Case("Trainer/data-1d", lambda: trainer(x(8)), V, has("data", "(8,)", "[n, *dims]")),
    Case("Trainer/data-empty-(0,2)", lambda: trainer(x(0, 2)), V,
         has("data", "(0, 2)", "n >= 1")),
    Case("Trainer/data-int64", lambda: trainer(torch.zeros(8, 2, dtype=torch.long)), V,
         has("data", "torch.int64", "floating")),
    Case("Trainer/data-with-nan", lambda: trainer(x(8, 2, at=(5, 0), value=NAN)), V,
         has("data", "data[5]", "nan", "finite")),
    Case("Trainer/data-numpy-strings", lambda: trainer(np.array([["a", "b"]] * 8)), T,
         has("data", "ndarray", "real numbers")),
    Case("Trainer/config=dict", lambda: Trainer(sd.MLP(2, hidden=8, depth=1), VPSDE(), x(8, 2),
                                                {"steps": 2}), T,
         has("config", "dict", "TrainConfig")),
    Case("Trainer/model='mlp'", lambda: Trainer("mlp", VPSDE(), x(8, 2)), T,
         has("model", "'mlp'", "str", "ScoreModel", "nn.Module")),
    Case("Trainer/loss='ddpm'-on-VPSDE", lambda: trainer(x(8, 2), loss="ddpm"), V,
         has("loss", "'ddpm'", "DiscreteVPSDE", "VPSDE")),
    Case("Trainer.train/steps=-1", lambda: trainer(x(8, 2)).train(-1, progress=False), V,
         has("steps", "-1", ">= 0")),

    # ---- load_dataset() ------------------------------------------------------------------
    Case("load_dataset/missing-file", lambda: load_dataset(str(fresh("missing.npy"))), V,
         has("missing.npy", "does not exist")),
    Case("load_dataset/name='mnist'", lambda: load_dataset("mnist"), V,
         has("'mnist'", "gmm", "moons", ".npy")),
    Case("load_dataset/npy-5d", lambda: load_dataset(npy(np.zeros((2, 1, 1, 1, 1)))), V,
         has("(2, 1, 1, 1, 1)", "[n, D]", "[n, C, H, W]")),
    Case("load_dataset/npy-0d", lambda: load_dataset(npy(np.float64(1.0))), V,
         has("()", "[n, D]")),
    Case("load_dataset/npy-bool", lambda: load_dataset(npy(np.ones((4, 2), dtype=bool))), V,
         has("torch.bool", "real")),
    Case("load_dataset/npy-complex", lambda: load_dataset(npy(np.ones((4, 2), dtype=np.complex64))),
         V, has("torch.complex64", "real")),
    Case("load_dataset/npy-object", lambda: load_dataset(npy(np.array([{"a": 1}], dtype=object))),
         V, has("object", "numeric .npy")),
    Case("load_dataset/npy-with-inf", lambda: load_dataset(npy(np.array([[0.0, 1.0], [np.inf, 0.0]]))),
         V, has("inf", "row 1", "finite")),
    Case("load_dataset/pt-holding-dict", lambda: load_dataset(pt({"x": torch.zeros(3, 2)})), V,
         has("dict", "single tensor")),
    Case("load_dataset/file-.csv", lambda: load_dataset(csv()), V, has("data.csv", ".npy or .pt")),
    Case("load_dataset/split='val'", lambda: load_dataset("gmm", split="val"), V,
         has("split", "'val'", "'train'", "'test'")),
    Case("load_dataset/n=0", lambda: load_dataset("gmm", n=0), V, has("n", "0", "positive integer")),
    Case("load_dataset/dtype=int32", lambda: load_dataset("gmm", n=4, dtype=torch.int32), V,
         has("dtype", "torch.int32", "floating")),

    # ---- load_checkpoint() (CheckpointError is a ValueError) ------------------------------
    Case("load_checkpoint/missing-directory", lambda: load_checkpoint(str(fresh("nowhere"))), V,
         has("nowhere", "does not exist")),
    Case("load_checkpoint/no-config.json", lambda: load_checkpoint(folder(notes_txt="hi")), V,
         has("config.json", "missing", "not a scoresde checkpoint")),
    Case("load_checkpoint/config.json-not-json", lambda: load_checkpoint(folder(config_json="{oops")),
         V, has("config.json", "not valid JSON")),
    Case("load_checkpoint/config.json-other-format",
         lambda: load_checkpoint(folder(config_json=json.dumps({"format": "diffusers"}))), V,
         has("config.json", "not a scoresde checkpoint")),

    # ---- the command line: exit status 2, one line on stderr, no traceback ---------------
    cli("cli/nope", "nope", match=has("'nope'", "train", "sample")),
    cli("train/--steps=-1", "train", "--data", "moons", "--out", out, "--steps", "-1",
        match=has("--steps", "-1", "positive integer")),
    cli("train/--lr=nan", "train", "--data", "moons", "--out", out, "--lr", "nan",
        match=has("--lr", "'nan'", "> 0")),
    cli("train/--batch-size=0", "train", "--data", "moons", "--out", out, "--batch-size", "0",
        match=has("--batch-size", "0", "positive integer")),
    cli("train/--ema-decay=1", "train", "--data", "moons", "--out", out, "--ema-decay", "1",
        match=has("ema_decay", "1.0", "[0, 1)")),
    cli("train/--sde=vpx", "train", "--data", "moons", "--out", out, "--sde", "vpx",
        match=has("--sde", "'vpx'", "'vp'")),
    cli("train/--data-missing.pt", "train", "--data", lambda: str(fresh("missing.pt")), "--out", out,
        match=has("missing.pt", "does not exist")),
    cli("train/--data-npy-5d", "train", "--data", lambda: npy(np.zeros((2, 1, 1, 1, 1))), "--out", out,
        match=has("(2, 1, 1, 1, 1)", "[n, D]")),
    cli("sample/--run-config.json-not-json", "sample", "--run",
        lambda: folder(config_json="{oops"), match=has("config.json", "not valid JSON")),
    cli("sample/--steps=-5", "sample", "--run", tiny_run, "--solver", "euler_maruyama",
        "--steps", "-5", "--no-progress", match=has("steps", "-5", ">= 1")),
    cli("sample/--solver=RK45", "sample", "--run", tiny_run, "--solver", "RK45",
        match=has("--solver", "'RK45'", "'ode'")),
    cli("sample/--eps=2", "sample", "--run", tiny_run, "--solver", "ode_euler", "--eps", "2",
        "--no-progress", match=has("eps", "2.0", "< T")),
    cli("sample/--snr=nan", "sample", "--run", tiny_run, "--solver", "pc", "--snr", "nan",
        "--no-progress", match=has("snr", "nan", "finite")),
    cli("sample/--atol=0", "sample", "--run", tiny_run, "--solver", "ode", "--atol", "0",
        "--no-progress", match=has("atol", "0.0", "positive")),
    cli("sample/--order=4", "sample", "--run", tiny_run, "--solver", "dpm_solver", "--order", "4",
        "--no-progress", match=has("order", "4", "1, 2 or 3")),
    cli("likelihood/--run-missing", "likelihood", "--run", out,
        match=has("does not exist")),
    cli("likelihood/--eps=0", "likelihood", "--run", tiny_run, "--eps", "0", "--no-progress",
        match=has("eps", "0.0", "(0, T)")),
    cli("likelihood/--n-probes=0", "likelihood", "--run", tiny_run, "--trace", "hutchinson",
        "--n-probes", "0", "--no-progress", match=has("n_probes", "0", ">= 1")),
    cli("likelihood/--method=rk99", "likelihood", "--run", tiny_run, "--method", "rk99",
        "--no-progress", match=has("method", "'rk99'", "dopri5")),
    cli("likelihood/--max-steps=x", "likelihood", "--run", tiny_run, "--max-steps", "x",
        match=has("--max-steps", "'x'", "integer")),
    cli("sample/--diffusers-and---run", "sample", "--diffusers", tiny_run, "--run", tiny_run,
        match=has("give one of --run", "--diffusers")),
    cli("sample/--diffusers-dir-without-scheduler-config", "sample", "--diffusers", tiny_run,
        match=has("no scheduler config", "scheduler_config.json")),
    cli("likelihood/--diffusers-without---data", "likelihood", "--diffusers", tiny_run,
        match=has("--data", "--diffusers")),
    cli("demo/--train-steps=0", "demo", "--out", out, "--train-steps", "0",
        match=has("--train-steps", "0", "positive integer")),
    cli("demo/--num=-3", "demo", "--out", out, "--num", "-3",
        match=has("--num", "-3", "positive integer")),
]


# -- running a row ---------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What a row did: the error type and message it gave, whether that was the clear error
    the row asks for (and why not), and the counted score calls."""
    error: str = ""
    message: str = ""
    problems: List[str] = field(default_factory=list)
    calls: List[int] = field(default_factory=list)


def run_case(case: Case) -> Outcome:
    """Run one row and check it (pytest and --markdown share this)."""
    result = Outcome()
    _COUNTED.clear()
    if case.exc == CLI:
        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            status = case.call()
        err = stderr.getvalue()
        lines = err.strip().splitlines()
        result.error, result.message = f"exit {status}", err.strip()
        if status != 2:
            result.problems.append(f"exit status {status}, not 2")
        if len(lines) != 1 or not lines[0].strip():
            result.problems.append(f"stderr is {len(lines)} lines, not one: {err!r}")
        if "Traceback" in err:
            result.problems.append("a traceback on stderr")
    else:
        try:
            case.call()
        except Exception as err:  # noqa: BLE001 - any other type is reported as a problem
            kind = type(err)
            result.error = kind.__name__ + ("" if kind.__module__ == "builtins" else " ("
                                            + ", ".join(b.__name__ for b in kind.__mro__[1:]
                                                        if b.__module__ == "builtins"
                                                        and b not in (Exception, BaseException,
                                                                      object)) + ")")
            result.message = str(err)
            if not isinstance(err, case.exc):
                result.problems.append(f"raised {kind.__name__}, not {_names_of(case.exc)}")
        else:
            result.problems.append("no error")
    if result.message and not re.search(case.match, result.message):
        result.problems.append(f"the message does not match {case.match!r}")
    result.calls = [c.calls for c in _COUNTED]
    if any(c != case.calls for c in result.calls):
        result.problems.append(f"the score/network was called {result.calls} times before the "
                               f"error, expected {case.calls}")
    return result


def _names_of(exc) -> str:
    if isinstance(exc, tuple):
        return "/".join(e.__name__ for e in exc)
    return exc.__name__


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_input(case: Case, capsys):
    _COUNTED.clear()
    if case.exc == CLI:
        status = case.call()
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert status == 2, err
        assert len(lines) == 1 and lines[0].strip(), err
        assert "Traceback" not in err
        assert re.search(case.match, lines[0]), lines[0]
    else:
        with pytest.raises(case.exc, match=case.match):
            case.call()
    calls = [c.calls for c in _COUNTED]
    assert all(c == case.calls for c in calls), (
        f"the score/network was called {calls} times before the error, expected {case.calls}")


def test_ids_are_distinct_and_the_matrix_is_large():
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 70


# -- the table of docs/reliability.md ----------------------------------------------------------
BEGIN = ("<!-- invalid-inputs table: generated by `python tests/scoresde/test_invalid_inputs.py "
         "--markdown docs/reliability.md`; edit the rows there, not here -->")
END = "<!-- end of the invalid-inputs table -->"


def _cell(text: str, limit: int = 240) -> str:
    """Text for a table cell: one line, the temporary directory as $TMP, no object addresses,
    "|" escaped, at most ``limit`` characters."""
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text.replace(str(tmp()), "$TMP"))
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def markdown() -> str:
    """Run every row outside pytest and return the generated block of docs/reliability.md:
    a summary line and the table (entry point, input, error, score calls, message)."""
    torch.set_default_dtype(F64)  # as tests/conftest.py does
    rows, clear = [], 0
    start = time.perf_counter()
    for case in CASES:
        outcome = run_case(case)
        clear += not outcome.problems
        rows.append((case, outcome))
    seconds = time.perf_counter() - start
    n_cli = sum(case.exc == CLI for case in CASES)
    lines = [BEGIN, "",
             f"{len(CASES)} cases ({len(CASES) - n_cli} library calls, {n_cli} command lines); "
             f"**{clear} of {len(CASES)}** gave the expected clear error in this run; running "
             f"them all took {seconds:.1f} s (torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads).", "",
             "| entry point | input | error | score calls | message (the CLI: its stderr line) |",
             "|---|---|---|---|---|"]
    for case, outcome in rows:
        entry, _, what = case.id.partition("/")
        calls = ("–" if not outcome.calls else
                 f"{outcome.calls[0]}" + (" (first call)" if case.calls else ""))
        error = outcome.error + ("" if not outcome.problems
                                 else " **NOT CLEAR: " + "; ".join(outcome.problems) + "**")
        lines.append(f"| `{entry}` | {_cell(what, 80)} | {_cell(error, 400)} | {calls} | "
                     f"{_cell(outcome.message)} |")
    lines += ["", END]
    return "\n".join(lines)


def _write_block(path: str, block: str) -> None:
    """Replace the text from BEGIN to END in ``path`` with ``block``."""
    text = Path(path).read_text()
    begin, end = text.find(BEGIN.split("`")[0]), text.find(END)
    if begin < 0 or end < 0:
        raise SystemExit(f"{path}: the markers of the invalid-inputs table are missing")
    Path(path).write_text(text[:begin] + block + text[end + len(END):])


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", nargs="?", const="-", metavar="PATH", required=True,
                        help="print the table (or rewrite it in PATH, e.g. docs/reliability.md)")
    args = parser.parse_args()
    block = markdown()
    if args.markdown == "-":
        print(block)
    else:
        _write_block(args.markdown, block)
        print(block.splitlines()[2])

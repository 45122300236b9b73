"""Input checks of scoresde's public entry points.

Each check raises ``ValueError``/``TypeError`` naming the argument, the value received
and what is allowed (DESIGN.md, "Numerical conventions"). The generic checks (numbers,
choices, callables, tensors) are written once in :mod:`solvers.validation` and
re-exported here; this module adds the ones that know about scores, SDEs and networks.
Times in [0, T] are checked by the SDE itself (``SDE.time``, :func:`scoresde.sdes.base.check_time`),
below this module: the SDE classes import the generic checks from solvers.validation.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

import solvers
from solvers.validation import (_describe, _got, as_real_tensor, check_callable, check_choice,
                                check_finite, check_floating_dtype, check_instance, check_int,
                                check_real, check_shape, check_state, first_nonfinite,
                                is_real_number, same_device)

from .sdes.base import SDE, TimeLike

__all__ = [
    "TimeLike", "_describe", "_got", "as_real_tensor", "check_callable", "check_choice", "check_finite",
    "check_floating_dtype", "check_instance", "check_int", "check_real", "check_shape",
    "check_state", "first_nonfinite", "is_real_number", "same_device",
    "check_score_and_sde", "first_float_parameter", "check_matches_network", "seeded_noise",
]


def check_score_and_sde(score: object, sde: object, *, name: str = "score") -> None:
    """Check the (score, sde) pair an entry point takes: ``score`` callable as
    ``score(x, t)`` (``name`` is the argument's name, e.g. "net" for ScoreModel) and
    ``sde`` a scoresde SDE."""
    check_callable(name, score, f"{name}(x, t)")
    check_instance("sde", sde, SDE, "a scoresde SDE (VPSDE, VESDE, ...)")


def first_float_parameter(score: object) -> Optional[Tensor]:
    """The first floating-point parameter of an nn.Module score, else None: the dtype and
    device a network computes in (sample() and log_likelihood() match data to it)."""
    if isinstance(score, torch.nn.Module):
        for p in score.parameters():
            if p.is_floating_point():
                return p
    return None


def check_matches_network(name: str, x: Tensor, score: object) -> None:
    """A clear error when x's dtype or device differs from the score network's parameters."""
    param = first_float_parameter(score)
    if param is not None and (param.dtype != x.dtype or param.device != x.device):
        raise ValueError(f"{name} is {x.dtype} on {x.device} but the score network's "
                         f"parameters are {param.dtype} on {param.device}; make them match "
                         f"(e.g. {name}.to({param.dtype}) or model.to({x.dtype}))")


def seeded_noise(seed: Optional[int], sample_offset: object, generator: object, what: str,
                 stream: int) -> "Optional[solvers.SeededNoise]":
    """The per-sample noise source of a ``seed=`` run (None without a seed), after the checks
    shared by every entry point that takes ``seed``/``sample_offset``/``generator``:
    one source of randomness, and ``sample_offset`` only with a seed. ``what`` names what
    the seed draws (e.g. "noise", "probes")."""
    if generator is not None:
        check_instance("generator", generator, torch.Generator, "a torch.Generator or None")
    if seed is None:
        if sample_offset != 0:
            raise ValueError(f"sample_offset={sample_offset!r} needs seed= (it numbers the "
                             f"samples of a seeded run)")
        return None
    if generator is not None:
        raise ValueError(f"seed and generator are two sources of randomness; pass one: "
                         f"seed=int for per-sample {what}, or generator=torch.Generator")
    return solvers.SeededNoise(seed, check_int("sample_offset", sample_offset, minimum=0),
                               stream)

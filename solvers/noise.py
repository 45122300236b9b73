"""The randomness contract of the stochastic solvers.

A stochastic update asks its noise source for exactly one standard normal tensor shaped
like the state, with ``noise.draw(x)``; draws happen in the order of the updates. With
:class:`GaussianNoise` that is ``torch.randn(x.shape, generator=g, dtype=x.dtype,
device=x.device)``, so the same generator seed gives the same samples bit for bit.
:class:`RecordingNoise` keeps the draws of a run and :class:`ReplayNoise` hands given
tensors back, so two samplers can be driven by the same Brownian increments.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Protocol

import torch
from torch import Tensor

from .errors import SolverError
from .validation import check_instance


class Noise(Protocol):
    """Anything with ``draw(like) -> Tensor`` returning a standard normal tensor like ``like``."""

    def draw(self, like: Tensor) -> Tensor:
        ...


class GaussianNoise:
    """Fresh standard normal draws from ``generator`` (the global RNG when ``None``)."""

    def __init__(self, generator: Optional[torch.Generator] = None) -> None:
        check_instance("generator", generator, (torch.Generator, type(None)), "a torch.Generator or None")
        self.generator = generator

    def draw(self, like: Tensor) -> Tensor:
        """Return ``z ~ N(0, I)`` with ``like``'s shape, dtype and device."""
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype, device=like.device)


class RecordingNoise:
    """Pass draws of ``inner`` through and keep them, in order, in ``.draws``."""

    def __init__(self, inner: Noise) -> None:
        self.inner = inner
        self.draws: List[Tensor] = []

    def draw(self, like: Tensor) -> Tensor:
        z = self.inner.draw(like)
        self.draws.append(z)
        return z


class ReplayNoise:
    """Hand back the given tensors in order, one per ``draw``.

    Each tensor must have the requested shape; it is returned with the dtype and device of
    ``like``. Asking for more draws than were given raises :class:`SolverError`.
    """

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self.tensors = list(tensors)
        self.used = 0

    def draw(self, like: Tensor) -> Tensor:
        if self.used >= len(self.tensors):
            raise SolverError(
                f"ReplayNoise is exhausted: all {len(self.tensors)} given tensors were used and "
                f"draw number {self.used + 1} (shape {tuple(like.shape)}) was requested; record "
                f"as many draws as the run makes"
            )
        z = self.tensors[self.used]
        if tuple(z.shape) != tuple(like.shape):
            raise ValueError(
                f"ReplayNoise draw number {self.used + 1} has shape {tuple(z.shape)} but the "
                f"update needs shape {tuple(like.shape)}"
            )
        self.used += 1
        return z.to(dtype=like.dtype, device=like.device)

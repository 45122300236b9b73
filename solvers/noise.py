"""The randomness contract of the stochastic solvers.

A stochastic update asks its noise source for exactly one standard normal tensor shaped
like the state, with ``noise.draw(x)``; draws happen in the order of the updates. With
:class:`GaussianNoise` that is ``torch.randn(x.shape, generator=g, dtype=x.dtype,
device=x.device)``, so the same generator seed gives the same samples bit for bit.
:class:`RecordingNoise` keeps the draws of a run and :class:`ReplayNoise` hands given
tensors back, so two samplers can be driven by the same Brownian increments.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional, Protocol, Sequence

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


# -- counter-based noise ------------------------------------------------------------------
# Philox-4x32-10 (Salmon, Moraes, Dror & Shaw 2011, "Parallel random numbers: as easy as
# 1, 2, 3", SC'11, Sec. 4.2; the constants and round of Random123's philox.h): a keyed
# bijection of a 128-bit counter, so any draw is a pure function of (key, counter) and
# needs no state to be carried from one sample, step or process to another.
_MASK = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)    # round multipliers
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)    # key increments (golden ratio, sqrt(3) - 1)

#: Streams of :class:`SeededNoise`: what a draw is for, the last counter word.
PRIOR, STEPS, BROWNIAN, PROBES = 0, 1, 2, 3
_MAX_WORD = 2 ** 32


def _mulhilo(a: int, b: Tensor) -> tuple:
    """(hi, lo) 32-bit words of the 64-bit product a * b of 32-bit words. The int64
    product wraps modulo 2^64 (two's complement, as torch's integer kernels do on every
    device), so its bit pattern is the unsigned product's; the known-answer test of
    Random123's vectors checks it."""
    p = b * a
    return (p >> 32) & _MASK, p & _MASK


def philox4x32(counter: Tensor, key: Sequence[int], rounds: int = 10) -> Tensor:
    """Philox-4x32-``rounds`` of ``counter`` [..., 4] (int64 tensor of 32-bit words) under
    ``key`` (two 32-bit words); returns [..., 4] int64 words in [0, 2^32).

    One round (Salmon et al. 2011, Sec. 4.2; Random123 ``_philox4x32round``):
    (c0, c1, c2, c3) -> (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1, lo(M0 c0)),
    the key advanced by (W0, W1) before every round but the first.
    """
    c0, c1, c2, c3 = counter.to(torch.int64).unbind(-1)
    k0, k1 = int(key[0]) & _MASK, int(key[1]) & _MASK
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK, (k1 + _PHILOX_W[1]) & _MASK
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], -1)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed}")
    return seed


class SeededNoise:
    """Noise that is a function of (seed, global row, draw number), never of the batch.

    Row ``offset + b`` of draw number ``k`` of the stream is built from the Philox-4x32-10
    blocks with counter (j, offset + b, k, stream), j = 0, 1, ... along the row, under the
    key (seed mod 2^32, seed div 2^32). So the first rows of a big batch equal a small
    batch's, bit for bit, whatever the chunking or the process that draws them, as long as
    every row sees the same sequence of draws (true of every fixed-grid sampler: each draw
    is one tensor shaped like the whole state).

    Normals: each block's four words give two uniforms of 52 bits, u = (m + 1/2) 2^-52
    in (0, 1), and Box & Muller's (1958) pair sqrt(-2 log u1) (cos 2 pi u2, sin 2 pi u2),
    computed in float64 and rounded to the requested dtype (so a float32 draw is the
    float64 draw rounded). Streams: ``PRIOR`` (the initial state), ``STEPS`` (the
    solver's updates), ``BROWNIAN`` (torchsde's per-row entropies), ``PROBES``
    (Hutchinson's probes).
    """

    def __init__(self, seed: int, offset: int = 0, stream: int = STEPS) -> None:
        self.seed = _check_seed(seed)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"sample_offset must be an integer >= 0, got {offset!r}")
        self.offset, self.stream = offset, int(stream)
        self.draws = 0

    def rows(self, start: int, stream: Optional[int] = None) -> "SeededNoise":
        """The source of rows ``offset + start, ...`` (a chunk of the batch), its draw
        count at zero; ``stream`` another stream of the same seed."""
        return SeededNoise(self.seed, self.offset + start, self.stream if stream is None
                           else stream)

    def words(self, n_rows: int, n_words: int, device: Optional[torch.device] = None
              ) -> Tensor:
        """[n_rows, n_words] int64 words in [0, 2^32): the next draw of this stream."""
        last = self.offset + n_rows
        if last > _MAX_WORD or self.draws >= _MAX_WORD:
            raise ValueError(f"SeededNoise counts rows and draws in 32 bits: row "
                             f"{last - 1} or draw {self.draws} is too large")
        blocks = -(-n_words // 4)
        j = torch.arange(blocks, dtype=torch.int64, device=device)
        r = torch.arange(self.offset, last, dtype=torch.int64, device=device)
        counter = torch.stack(torch.broadcast_tensors(
            j[None, :], r[:, None], torch.full((1, 1), self.draws, device=device),
            torch.full((1, 1), self.stream, device=device)), -1)
        self.draws += 1
        out = philox4x32(counter, (self.seed & _MASK, self.seed >> 32))
        return out.reshape(n_rows, 4 * blocks)[:, :n_words]

    def draw(self, like: Tensor) -> Tensor:
        """z ~ N(0, I) with ``like``'s shape [rows, *dims], dtype and device."""
        n, d = like.shape[0], like[0].numel() if like.dim() > 1 else 1
        w = self.words(n, 2 * (d + d % 2), like.device).reshape(n, -1, 4)
        # two 52-bit uniforms per block, u = (m + 1/2) 2^-52 from the 26 high bits of
        # two words each
        m = (w[..., 0::2] >> 6) << 26 | (w[..., 1::2] >> 6)
        u = (m.double() + 0.5) * 2.0 ** -52
        radius, angle = torch.sqrt(-2.0 * torch.log(u[..., 0])), 2 * math.pi * u[..., 1]
        z = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)
        return z.reshape(n, -1)[:, :d].reshape(like.shape).to(like.dtype)

    def draw_signs(self, like: Tensor) -> Tensor:
        """Rademacher entries +-1 (the top bit of one word each) shaped like ``like``."""
        n, d = like.shape[0], like[0].numel() if like.dim() > 1 else 1
        bits = self.words(n, d, like.device) >> 31
        return (bits.to(like.dtype) * 2 - 1).reshape(like.shape)

    def entropies(self, n_rows: int) -> List[int]:
        """One 62-bit integer per row (a torchsde Brownian motion's entropy), from the
        ``BROWNIAN`` stream's first draw."""
        w = self.rows(0, BROWNIAN).words(n_rows, 2)
        return [int(a) << 30 | int(b) >> 2 for a, b in w.tolist()]

"""Bits per dimension of 8-bit data under a continuous model, with uniform dequantization.

For 8-bit values x in {0..255}^D and u ~ U[0, 1)^D, y = (x + u)/256 lies in the bin
B(x) = prod_i [x_i/256, (x_i + 1)/256) of volume 256^-D. A density p on [0, 1]^D defines
the discrete model P(x) = int_B(x) p(y) dy = 256^-D E_u[p(y)], and Jensen's inequality gives

    log P(x) >= E_u[log p(y)] - D log 256          (Theis et al. 2016; Ho et al. 2019, eq. 1)

If the model works on y' = a + (b - a) y (e.g. [-1, 1]: y' = 2 y - 1), then
p(y) = (b - a)^D p'(y'), so the bound on -log2 P(x) / D, in bits per dimension, is

    bpd = (-log p'(y') / D + log 256 - log(b - a)) / log 2
        = -log p'(y') / (D log 2) + 8 - log2(b - a)        (7 bits offset for [-1, 1]).

The derivation is in docs/likelihood.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import Tensor

from .._stats import standard_error
from .._validation import check_choice, check_instance, check_int, check_score_and_sde
from ..score import ScoreFn
from ..sdes import SDE
from .flow import log_likelihood

DATA_RANGES = {"[-1,1]": (-1.0, 1.0), "[0,1]": (0.0, 1.0)}
_LEVELS = 256


@dataclass
class BitsPerDimResult:
    """What :func:`bits_per_dim` returns.

    Attributes:
        bpd: [n] per-sample bits/dim (an upper bound on -log2 P(x)/D in expectation over
            the dequantization noise when dequantize=True).
        mean: the mean of ``bpd`` over the data set.
        stderr: its standard error, std(bpd, ddof=1)/sqrt(n) (NaN for n = 1); with the
            Hutchinson trace this includes the probe noise, which is independent across
            samples.
        nfe: score evaluations over all batches.
        logp: [n] log-density (nats) of the continuous data y' in ``data_range``.
        stats: "batches", "dims" (D) and the per-batch solver statistics ("solves").
    """
    bpd: Tensor
    mean: float
    stderr: float
    nfe: int
    logp: Tensor
    stats: Dict[str, Any] = field(default_factory=dict)


def _as_levels(x: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    """8-bit data as a float tensor of integer levels 0..255 (validated)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of 8-bit data, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"x must have shape [n, *dims] with n >= 1 and at least one value per "
                         f"sample, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must be an integer tensor (0..255) or a float tensor in [0, 1], "
                        f"got dtype {x.dtype}")
    out_dtype = dtype or (x.dtype if x.is_floating_point() else torch.get_default_dtype())
    if x.is_floating_point():
        outside = ~(torch.isfinite(x) & (x >= 0) & (x <= 1))
        if bool(outside.any()):
            raise ValueError(f"a float x must hold 8-bit images scaled to [0, 1] (k/255, as "
                             f"torchvision's ToTensor gives); got values outside [0, 1] or "
                             f"non-finite, e.g. {_first(x, outside)}; pass 0..255 values as "
                             f"an integer (uint8) tensor")
        levels = x.to(torch.float64) * (_LEVELS - 1)
        rounded = torch.round(levels)
        off = (levels - rounded).abs() > 1e-3
        if bool(off.any()):
            raise ValueError(f"a float x must hold 8-bit values k/255 (k in 0..255); got values "
                             f"that are not multiples of 1/255, e.g. {_first(x, off)} (already "
                             f"dequantized or continuous data: use log_likelihood directly)")
        return rounded.to(out_dtype)
    if bool((x < 0).any()) or bool((x > _LEVELS - 1).any()):
        raise ValueError(f"integer x must hold 8-bit values in 0..255, got min "
                         f"{int(x.min())} and max {int(x.max())}")
    return x.to(out_dtype)


def _first(x: Tensor, bad: Tensor) -> str:
    """'x[i, j] = value' for the first True entry of the mask ``bad``."""
    index = tuple(int(i) for i in bad.nonzero()[0])
    return f"x[{', '.join(map(str, index))}] = {x[index].item()}"


def dequantize(x: Tensor, generator: Optional[torch.Generator] = None,
               dtype: Optional[torch.dtype] = None) -> Tensor:
    """Uniform dequantization y = (x + u)/256 in [0, 1), u ~ U[0, 1)^D (Theis et al. 2016).

    Args:
        x: 8-bit data [n, *dims]: an integer tensor of values 0..255, or a float tensor of
            values k/255 (torchvision's ToTensor convention).
        generator: torch.Generator for u (one torch.rand draw shaped like x).
        dtype: of the result (default: x's float dtype, or torch's default dtype).
    """
    levels = _as_levels(x, dtype)
    u = torch.rand(levels.shape, generator=generator, dtype=levels.dtype, device=levels.device)
    return (levels + u) / _LEVELS


def bits_per_dim(score: ScoreFn, sde: SDE, x: Tensor, *, data_range: str = "[-1,1]",
                 dequantize: bool = True, generator: Optional[torch.Generator] = None,
                 batch_size: Optional[int] = None, dtype: Optional[torch.dtype] = None,
                 **ll_kwargs: Any) -> BitsPerDimResult:
    """Bits/dim of 8-bit data under the model's density p_eps, by :func:`log_likelihood`.

    bpd = (-log p(y') / D + log 256 - log(b - a)) / log 2 with y = (x + u)/256 and
    y' = a + (b - a) y the data in ``data_range`` [a, b] (the 7-bit offset for [-1, 1]).

    Args:
        score, sde: the model, as for :func:`log_likelihood`.
        x: 8-bit data [n, *dims]: integer 0..255 (e.g. uint8) or float k/255 in [0, 1].
        data_range: the range the model was trained on, "[-1,1]" or "[0,1]".
        dequantize: add u ~ U[0, 1) (the variational bound; default). False uses the bin
            centres (x + 1/2)/256: deterministic, but not a bound on the discrete NLL.
        generator: torch.Generator; the dequantization noise (one draw shaped like x) is
            drawn first, then the Hutchinson probes of each batch in order.
        batch_size: samples per ODE solve (default: all at once). Adaptive steps are
            shared within a solve (see docs/likelihood.md).
        dtype: compute dtype for integer input (default torch's default dtype).
        **ll_kwargs: passed to :func:`log_likelihood` (method, rtol, atol, eps, trace,
            probe, n_probes, max_steps, progress, chunk_size).

    Returns:
        BitsPerDimResult with per-sample bpd, their mean and standard error, and the NFE.
    """
    check_score_and_sde(score, sde)
    check_choice("data_range", data_range, tuple(DATA_RANGES))
    check_instance("dequantize", dequantize, bool, "True or False")
    if batch_size is not None:
        check_int("batch_size", batch_size, minimum=1)
    levels = _as_levels(x, dtype)
    if dequantize:
        u = torch.rand(levels.shape, generator=generator, dtype=levels.dtype,
                       device=levels.device)
    else:
        u = torch.full_like(levels, 0.5)
    lo, hi = DATA_RANGES[data_range]
    y = lo + (hi - lo) * (levels + u) / _LEVELS
    dim = y[0].numel()
    res = log_likelihood(score, sde, y, generator=generator, batch_size=batch_size, **ll_kwargs)
    logp, nfe = res.logp, res.nfe
    solves = res.stats.get("per_solve", [res.stats])
    bpd = (-logp / dim + math.log(_LEVELS) - math.log(hi - lo)) / math.log(2.0)
    mean = bpd.mean().item()
    stderr = standard_error(bpd).item()
    return BitsPerDimResult(bpd=bpd, mean=mean, stderr=stderr, nfe=nfe, logp=logp,
                            stats={"batches": len(solves), "dims": dim, "solves": solves})

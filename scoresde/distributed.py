"""Sampling and likelihoods over many processes with torch.distributed, identical to one.

Launch with ``torchrun`` (one process per GPU, or several CPU processes); each process
calls the same function with the same arguments:

    torchrun --nproc_per_node=2 my_script.py        # my_script calls sd.distributed.sample

``sample(score, sde, shape_per_item, n_total=N, seed=s)`` numbers the N samples 0..N-1,
gives each rank a contiguous run of them, samples its run with per-sample seeding
(``sample(seed=s, sample_offset=first)``: sample i depends on (s, i) alone) and gathers the
runs, so every rank returns exactly what one process returns for ``sample(..., (N,
*shape_per_item), seed=s)``. The runs are whole chunks of ``batch_size`` samples (chunk k
is samples k*batch_size..), the chunks a single process would solve: so the solvers
whose result depends on the chunk (adaptive steps, pc's norm="batch") give the same bits
too, whatever the world size. Without ``batch_size`` a rank's run is one chunk of
ceil(N / world) samples: fixed-step solvers are still identical, adaptive ones only
within their tolerance. Each rank solves alone (no collective inside a solve, so ranks
that take different numbers of adaptive steps cannot deadlock); the one collective after
the local work carries every rank's status first, so an error on any rank is raised on
every rank (the failing one re-raises its own, the others a :class:`RankError` naming it)
instead of leaving the others waiting. Without an initialized process group (or with
world size 1) the functions run in the calling process alone.

Backends: gloo on CPU, nccl on CUDA (``init``); with nccl the tensors are gathered on the
local GPU. The samples are bitwise those of one process when every rank runs the same
kernels (same device type, library versions and thread settings); across machines with
different BLAS or GPU models they are equal only to rounding (docs/distributed.md).
"""
from __future__ import annotations

import datetime
import os
import traceback
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

import solvers

from ._validation import check_int, check_shape, first_float_parameter
from .likelihood import LikelihoodResult, log_likelihood as _log_likelihood
from .samplers import SampleResult, sample as _sample
from .score import ScoreFn
from .sdes import SDE


class RankError(RuntimeError):
    """Raised on the other ranks when one rank of a distributed call failed."""


def is_active() -> bool:
    """True when a torch.distributed process group is initialized."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_active() else 1


def is_main() -> bool:
    """True on rank 0 (and without a process group): the rank that prints and writes."""
    return rank() == 0


def init(backend: Optional[str] = None, timeout_s: float = 1800.0) -> bool:
    """Initialize the process group from torchrun's environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT, LOCAL_RANK); a no-op outside torchrun or when already done.

    Args:
        backend: "gloo" or "nccl" (default: nccl when CUDA is available, else gloo).
        timeout_s: how long a collective waits for the other ranks before failing (a rank
            that died without reaching it then ends the run instead of hanging it).

    Returns whether a process group is active. With nccl the current CUDA device is set to
    LOCAL_RANK (``device()``).
    """
    if is_active():
        return True
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def device() -> torch.device:
    """The device of this rank's tensors: its CUDA device under nccl, else the CPU."""
    if is_active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shards(n_total: int, world: int, batch_size: Optional[int] = None
           ) -> List[Tuple[int, int]]:
    """[(first, stop)] sample indices of each rank: contiguous runs of whole chunks.

    Chunks are ``batch_size`` samples (default ceil(n_total / world)), the last one
    shorter; rank r gets chunks floor(r C / W) .. floor((r + 1) C / W) - 1 of the C chunks,
    so the runs differ by at most one chunk and may be empty when C < W.
    """
    size = batch_size or max(1, -(-n_total // world))
    n_chunks = -(-n_total // size)
    bounds = [r * n_chunks // world for r in range(world + 1)]
    return [(min(a * size, n_total), min(b * size, n_total))
            for a, b in zip(bounds, bounds[1:])]


def _my_rows(n_total: int, batch_size: Optional[int]
             ) -> Tuple[Optional[int], int, int, List[int]]:
    """(checked batch_size, this rank's first and stop index, every rank's row count)."""
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    runs = shards(n_total, world_size(), batch_size)
    first, stop = runs[rank()]
    return batch_size, first, stop, [b - a for a, b in runs]


def raise_if_any_failed(error: Optional[BaseException]) -> None:
    """Share every rank's status after local work (one all_gather_object, which every rank
    reaches, failed or not); raise on every rank if any failed: the failing rank its own
    error, the others a RankError naming the rank and the error."""
    if world_size() == 1:
        if error is not None:
            raise error
        return
    mine = None if error is None else (f"{type(error).__name__}: {error}",
                                       "".join(traceback.format_exception_only(error)))
    statuses: List[Any] = [None] * world_size()
    dist.all_gather_object(statuses, mine)
    if error is not None:
        raise error
    failed = [(r, s) for r, s in enumerate(statuses) if s is not None]
    if failed:
        r, (what, _) = failed[0]
        raise RankError(f"rank {r} of {world_size()} failed: {what}")


def _gather_rows(local: Tensor, counts: Sequence[int]) -> Tensor:
    """Concatenate every rank's [count_r, ...] tensor in rank order on every rank (padded
    to the largest count for all_gather, then trimmed)."""
    if world_size() == 1:
        return local
    where = device()
    most = max(counts)
    padded = local.new_zeros((most, *local.shape[1:]), device=where)
    padded[:local.shape[0]] = local.to(where)
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(local.device)


def _rows(value: Any, first: int, stop: int, n_total: int) -> Any:
    """A per-sample argument's rows first..stop-1 (a tensor with n_total rows), else as is."""
    if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == n_total:
        return value[first:stop]
    return value


def sample(score: ScoreFn, sde: SDE, shape_per_item: Sequence[int], *, n_total: int,
           seed: int, solver: str = "pc", batch_size: Optional[int] = None,
           x_T: Optional[Tensor] = None, cond: Any = None, progress: bool = False,
           **kwargs: Any) -> SampleResult:
    """``n_total`` samples split over the ranks; every rank returns all of them.

    Args:
        score, sde, solver: as :func:`scoresde.sample`.
        shape_per_item: [*dims] of one sample.
        n_total: the number of samples over all ranks.
        seed: the per-sample seed (required: it makes the result independent of the world
            size; ``generator=`` is not accepted).
        batch_size: samples per solve (the chunk of ``shards``): pass it for adaptive
            solvers and pc's default norm="batch" to be bitwise identical across world
            sizes.
        x_T, cond: per-sample starts [n_total, *dims] / labels [n_total, ...] (each rank
            takes its rows; an int cond applies to all).
        progress: a progress bar on rank 0 only.
        **kwargs: everything else of :func:`scoresde.sample` (steps, dtype, device,
            guidance, ...).

    Returns:
        SampleResult with x [n_total, *dims] (on every rank), ``nfe`` summed over the
        ranks, ``stats["nfe_per_rank"]``, ``stats["rows_per_rank"]``, ``stats["world_size"]``
        and the solver's step counts summed over ranks.
    """
    if "generator" in kwargs:
        raise ValueError("distributed.sample draws per-sample noise from seed=; generator= "
                         "would make the samples depend on the world size")
    n_total = check_int("n_total", n_total, minimum=1)
    if isinstance(shape_per_item, (str, bytes)) or not hasattr(shape_per_item, "__iter__"):
        raise TypeError(f"shape_per_item must be a sequence of sizes [*dims] of one sample, "
                        f"got {shape_per_item!r}")
    shape = check_shape("shape_per_item", (1, *shape_per_item))[1:]
    batch_size, first, stop, counts = _my_rows(n_total, batch_size)
    world, me = world_size(), rank()
    local, error = None, None
    try:
        if stop > first:
            local = _sample(score, sde, (stop - first, *shape), solver, seed=seed,
                            sample_offset=first, batch_size=batch_size,
                            x_T=_rows(x_T, first, stop, n_total),
                            cond=_rows(cond, first, stop, n_total),
                            progress=progress and me == 0, **kwargs)
        else:  # no chunk left for this rank: an empty run of the samples' dtype and device
            param = first_float_parameter(score)
            dtype = kwargs.get("dtype") or (param.dtype if param is not None
                                            else torch.get_default_dtype())
            where = kwargs.get("device") or (param.device if param is not None else "cpu")
            local = SampleResult(x=torch.empty((0, *shape), dtype=dtype, device=where), nfe=0,
                                 stats={"nfe": 0})
    except Exception as err:  # every rank learns of it below
        error = err
    raise_if_any_failed(error)
    x = _gather_rows(local.x, counts)
    per_rank = _gather_objects(local.stats)
    stats = {**solvers.total_stats([s for s, c in zip(per_rank, counts) if c]),
             "nfe_per_rank": [s.get("nfe", 0) for s in per_rank],
             "rows_per_rank": counts, "world_size": world}
    return SampleResult(x=x, nfe=sum(stats["nfe_per_rank"]), stats=stats)


def _gather_objects(obj: Any) -> List[Any]:
    if world_size() == 1:
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def log_likelihood(score: ScoreFn, sde: SDE, x: Tensor, *, seed: Optional[int] = None,
                   batch_size: Optional[int] = None, progress: bool = False,
                   **kwargs: Any) -> LikelihoodResult:
    """:func:`scoresde.log_likelihood` of all of ``x`` [N, *dims] (the same on every rank),
    each rank solving its contiguous run of whole ``batch_size`` chunks; every rank returns
    the results for all N samples, equal to one process's
    ``log_likelihood(score, sde, x, seed=seed, batch_size=batch_size)``. ``seed`` gives the
    Hutchinson probes per sample (``generator=`` is not accepted). ``nfe`` is summed over
    ranks; ``stats["nfe_per_rank"]`` and ``stats["rows_per_rank"]`` say who did what."""
    if "generator" in kwargs:
        raise ValueError("distributed.log_likelihood draws per-sample probes from seed=; "
                         "generator= would make them depend on the world size")
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise TypeError(f"x must be a tensor [N, *dims], got {type(x).__name__}"
                        + (f" of shape {tuple(x.shape)}" if isinstance(x, Tensor) else ""))
    batch_size, first, stop, counts = _my_rows(x.shape[0], batch_size)
    world, me = world_size(), rank()
    res, error = None, None
    try:
        if stop > first:
            res = _log_likelihood(score, sde, x[first:stop], seed=seed, sample_offset=first
                                  if seed is not None else 0, batch_size=batch_size,
                                  progress=progress and me == 0, **kwargs)
    except Exception as err:
        error = err
    raise_if_any_failed(error)
    names = ("logp", "prior_logp", "delta_logp", "z", "stderr", "logp_per_probe")
    has = _gather_objects(None if res is None else
                          {n: getattr(res, n) is not None for n in names})
    template = next(h for h in has if h is not None)
    shapes = {"z": x.shape[1:]}
    if template["logp_per_probe"]:
        shapes["logp_per_probe"] = (kwargs.get("n_probes", 1),)
    out = {}
    for n in names:
        if not template[n]:
            out[n] = None
            continue
        local = (getattr(res, n) if res is not None else
                 x.new_empty((0, *shapes.get(n, ()))))
        out[n] = _gather_rows(local, counts)
    per_rank = _gather_objects(None if res is None else res.stats)
    done = [s for s in per_rank if s is not None]
    stats = {**solvers.total_stats(done),
             "nfe_per_rank": [0 if s is None else s.get("nfe", 0) for s in per_rank],
             "rows_per_rank": counts, "world_size": world}
    return LikelihoodResult(nfe=sum(stats["nfe_per_rank"]), stats=stats, **out)


__all__ = ["init", "is_active", "rank", "world_size", "is_main", "device", "shards",
           "sample", "log_likelihood", "RankError", "raise_if_any_failed"]

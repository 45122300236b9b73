"""The divergence of a vector field, exactly or by Hutchinson's estimator.

Both functions return the field value v = field(t, x) and the divergence from ONE forward
pass, and both treat the batch as independent samples: the field's Jacobian with respect
to the whole batch is block-diagonal (sample i's output depends only on sample i's input),
so a cotangent that stacks one vector per sample gives every sample its own
vector-Jacobian product in one backward pass.

    exact:       div v(x) = sum_j e_j^T (dv/dx) e_j             (D vector-Jacobian products)
    Hutchinson:  div v(x) = E[eps^T (dv/dx) eps],  E[eps eps^T] = I
                 (Hutchinson 1990; Grathwohl et al. 2019, "FFJORD", eq. 7)
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

import solvers

Field = Callable[[Tensor, Tensor], Tensor]

PROBES = ("rademacher", "gaussian")

# Default bound on the cotangent block of the exact trace: chunk * batch * D elements.
_EXACT_BLOCK_ELEMENTS = 2 ** 20


def default_chunk_size(batch: int, dim: int) -> int:
    """Basis vectors per vmapped backward pass of the exact trace.

    Chosen so that the block of cotangents (chunk x batch x D elements) stays below 2^20
    elements (8 MiB in float64); at least 1 and at most D. Network activations in the
    backward pass grow with the chunk as well, so large networks may want a smaller one.
    """
    return max(1, min(dim, _EXACT_BLOCK_ELEMENTS // max(1, batch * dim)))


def draw_probes(kind: str, n_probes: int, like: Tensor,
                generator: Optional[torch.Generator] = None,
                seeded: Optional[solvers.SeededNoise] = None) -> Tensor:
    """n_probes noise vectors per sample, [n_probes, *like.shape], with E[eps eps^T] = I.

    "rademacher": entries +-1 with probability 1/2 each (one torch.randint draw);
    "gaussian": standard normal entries (one torch.randn draw). With ``seeded`` (a
    ``solvers.SeededNoise``) instead, one draw of its rows: sample b's n_probes vectors
    depend on its global row alone, not on the batch.
    """
    shape = (n_probes, *like.shape)
    if seeded is not None:
        rows = like.new_empty((like.shape[0], n_probes, *like.shape[1:]))
        if kind not in PROBES:
            raise ValueError(f"probe={kind!r} is not supported; choose one of "
                             f"{', '.join(repr(p) for p in PROBES)}")
        z = seeded.draw_signs(rows) if kind == "rademacher" else seeded.draw(rows)
        return z.movedim(1, 0)
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return bits.to(like.dtype) * 2.0 - 1.0
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    raise ValueError(f"probe={kind!r} is not supported; choose one of "
                     f"{', '.join(repr(p) for p in PROBES)}")


def _forward_with_graph(field: Field, t: Tensor, x: Tensor, trace: str) -> Tuple[Tensor, Tensor]:
    """(x as a leaf requiring grad, field(t, x) with its autograd graph); call under
    torch.enable_grad(). A TypeError naming ``trace`` if the field does not depend on x
    through torch.autograd."""
    xg = x.detach().requires_grad_(True)
    v = field(t, xg)
    if not v.requires_grad:
        raise TypeError(f"trace={trace!r} differentiates the field with torch.autograd, but "
                        "field(t, x) does not require grad: does the score detach its input "
                        "or run under torch.no_grad()?")
    return xg, v


def _vjps(v: Tensor, xg: Tensor, cotangents: Tensor, batched: bool = True
          ) -> Tuple[Tensor, bool]:
    """The vector-Jacobian products c_k^T dv/dx for each cotangent c_k of [K, *v.shape],
    [K, *xg.shape], on v's graph (kept for further calls).

    One batched backward pass (``is_grads_batched=True``, vmap over the cotangents) when
    ``batched``; if the score's backward has no batching rule (a custom autograd.Function
    calling host code, an op vmap does not cover), one backward pass per cotangent: the
    same numbers. Returns the products and whether the batched pass worked, so a caller
    with several blocks tries it once.
    """
    if batched:
        try:
            return torch.autograd.grad(v, xg, grad_outputs=cotangents, is_grads_batched=True,
                                       retain_graph=True)[0], True
        except solvers.SolverError:
            raise  # a solver failure inside the score's backward: not a vmap problem
        except (RuntimeError, NotImplementedError):
            pass  # no batching rule; any other fault of the backward recurs, and is raised, below
    return torch.stack([torch.autograd.grad(v, xg, grad_outputs=c, retain_graph=True)[0]
                        for c in cotangents]), False


def _basis_block(start: int, stop: int, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Cotangents e_j for j in [start, stop), the same e_j for every sample:
    [stop - start, *x.shape], and the indices j [stop - start]."""
    batch, dim = x.shape[0], x[0].numel()
    idx = torch.arange(start, stop, device=x.device)
    basis = x.new_zeros(stop - start, dim)
    basis[torch.arange(stop - start, device=x.device), idx] = 1.0
    return basis[:, None, :].expand(stop - start, batch, dim).reshape(stop - start, *x.shape), idx


def exact_divergence(field: Field, t: Tensor, x: Tensor,
                     chunk_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """v = field(t, x) and its exact divergence tr(dv/dx), [batch].

    One forward pass with x requiring grad, then ceil(D / chunk_size) batched backward
    passes on its graph (``torch.autograd.grad(..., is_grads_batched=True)``), each over a
    block of standard basis vectors e_j (the same e_j for every sample of the batch), of
    which we keep the j-th component: sum_j (e_j^T dv/dx)_j = tr(dv/dx). Plain autograd
    for the forward pass costs less per call than torch.func's transforms (1.1-1.5x less
    per evaluation on the benchmark's small problems: docs/benchmarks.md, section 3).

    A score whose backward pass cannot be batched (an ``autograd.Function`` without a vmap
    rule, an op without a batching rule, as in diffusers' UNets) gets one backward pass
    per basis vector instead, on the same graph: the same numbers, D backward passes.

    Returns v (detached, shaped like x) and the divergence [batch].
    """
    batch, dim = x.shape[0], x[0].numel()
    chunk = default_chunk_size(batch, dim) if chunk_size is None else min(chunk_size, dim)
    with torch.enable_grad():
        xg, v = _forward_with_graph(field, t, x, "exact")
        div = x.new_zeros(batch)
        batched = True
        for start in range(0, dim, chunk):
            stop = min(start + chunk, dim)
            cot, idx = _basis_block(start, stop, x)
            rows, batched = _vjps(v, xg, cot, batched)  # rows[k, b] = e_{idx[k]}^T dv_b/dx_b
            rows = rows.reshape(stop - start, batch, dim)
            div = div + rows.gather(2, idx[:, None, None].expand(-1, batch, 1)).sum((0, 2))
    return v.detach(), div.detach()


def hutchinson_divergence(field: Field, t: Tensor, x: Tensor,
                          probes: Tensor) -> Tuple[Tensor, Tensor]:
    """v = field(t, x) and one Hutchinson estimate eps_k^T (dv/dx) eps_k per probe, [batch, K].

    One forward pass with x requiring grad, then torch.autograd.grad of (v * eps).sum()
    on the same graph: one backward pass for one probe, one batched backward
    (is_grads_batched) for several. Works with any score torch.autograd can differentiate.

    Args:
        probes: [K, *x.shape], fixed along the trajectory (drawn once per solve).
    Returns:
        v (detached, shaped like x) and the estimates [batch, K].
    """
    batch, n_probes = x.shape[0], probes.shape[0]
    with torch.enable_grad():
        xg, v = _forward_with_graph(field, t, x, "hutchinson")
        if n_probes == 1:
            (vjp,) = torch.autograd.grad(v, xg, grad_outputs=probes[0])
            vjp = vjp[None]
        else:
            vjp, _ = _vjps(v, xg, probes)
    est = (vjp * probes).reshape(n_probes, batch, -1).sum(-1)
    return v.detach(), est.transpose(0, 1)

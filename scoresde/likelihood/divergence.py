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


class NotFunctorchCompatibleError(TypeError):
    """The score cannot be traced by torch.func, so the exact trace cannot be computed."""


def exact_divergence(field: Field, t: Tensor, x: Tensor,
                     chunk_size: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """v = field(t, x) and its exact divergence tr(dv/dx), [batch].

    One forward pass (torch.func.vjp) and ceil(D / chunk_size) vmapped backward passes,
    each over a block of standard basis vectors e_j (the same e_j for every sample of
    the batch), of which we keep the j-th component: sum_j (e_j^T dv/dx)_j = tr(dv/dx).

    Returns v (detached, shaped like x) and the divergence [batch].
    """
    batch, dim = x.shape[0], x[0].numel()
    chunk = default_chunk_size(batch, dim) if chunk_size is None else min(chunk_size, dim)
    with torch.no_grad():  # torch.func differentiates regardless; no graph to parameters
        try:
            v, vjp_fn = torch.func.vjp(lambda y: field(t, y), x)
            batched_vjp = torch.func.vmap(vjp_fn)
            div = x.new_zeros(batch)
            for start in range(0, dim, chunk):
                stop = min(start + chunk, dim)
                idx = torch.arange(start, stop, device=x.device)
                basis = x.new_zeros(stop - start, dim)
                basis[torch.arange(stop - start, device=x.device), idx] = 1.0
                cot = basis[:, None, :].expand(stop - start, batch, dim).reshape(
                    stop - start, *x.shape)
                (rows,) = batched_vjp(cot)  # rows[k, b] = e_{idx[k]}^T dv_b/dx_b
                rows = rows.reshape(stop - start, batch, dim)
                div = div + rows.gather(2, idx[:, None, None].expand(-1, batch, 1)).sum((0, 2))
        except solvers.SolverError:
            raise  # a solver failure inside the score (e.g. a NaN check): not a torch.func problem
        except (RuntimeError, NotImplementedError) as exc:
            raise NotFunctorchCompatibleError(
                "trace='exact' differentiates the score with torch.func (vjp, then vmap over "
                f"basis vectors), and that failed: {type(exc).__name__}: {exc}\n"
                "If the score runs fine on its own, it is not torch.func-compatible: avoid "
                ".item()/.numpy() and Python control flow on values of x, in-place updates of "
                "captured tensors, and autograd.Function subclasses without setup_context and "
                "generate_vmap_rule=True; or use trace='hutchinson', which needs only "
                "torch.autograd.") from exc
    return v.detach(), div


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
        xg = x.detach().requires_grad_(True)
        v = field(t, xg)
        if not v.requires_grad:
            raise TypeError("trace='hutchinson' needs a field that depends on x through "
                            "torch.autograd, but field(t, x) does not require grad: does the "
                            "score detach its input or run under torch.no_grad()?")
        if n_probes == 1:
            (vjp,) = torch.autograd.grad(v, xg, grad_outputs=probes[0])
            vjp = vjp[None]
        else:
            (vjp,) = torch.autograd.grad(v, xg, grad_outputs=probes, is_grads_batched=True)
    est = (vjp * probes).reshape(n_probes, batch, -1).sum(-1)
    return v.detach(), est.transpose(0, 1)

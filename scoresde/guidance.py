"""Guided scores: classifier-free guidance and classifier guidance, built once for every sampler.

``sample(score, sde, shape, cond=..., guidance=w)`` and ``sample(..., cond=...,
classifier=f, classifier_scale=w)`` hand every solver the score :class:`GuidedScore`
builds here, so each solver in the registry (fixed-step, adaptive, SDE, DPM-Solver,
Karras, DDIM, ...) is guided the same way without knowing it.

Conditional scores are called as ``score(x, t, cond)`` with ``cond`` a [batch] (or
[batch, ...]) tensor; an entry equal to ``NULL_LABEL`` (-1) asks for the unconditional
score of that sample (the learned null token of a network trained with condition
dropout, Ho & Salimans 2022, Sec. 3.2; the marginal score of an oracle).

Classifier-free guidance (Ho & Salimans 2022, eq. 6, eps~ = (1 + w) eps(z, c) - w eps(z);
the score s = -eps/std is linear in eps, so the same combination holds for scores):

    s~(x, t, c) = (1 + w) s(x, t, c) - w s(x, t, null).

Classifier guidance (Song et al. 2021, Sec. 5, eq. 14: grad log p_t(x | c) = grad log p_t(x)
+ grad log p_t(c | x); Dhariwal & Nichol 2021, Sec. 4, Alg. 1 scale it by w):

    s~(x, t, c) = s(x, t) + w grad_x log p_t(c | x),

with p_t(c | x) = softmax(f(x, t))_c from a time-dependent classifier f(x, t) -> logits
[batch, n_classes] (t the sampler's time in [0, T]). With exact parts, classifier guidance
at scale 1 + w equals classifier-free guidance at w (Bayes' rule), which the tests check.

NFE. ``nfe`` counts network evaluations per sample: a classifier-free guided evaluation
with w > 0 passes x with cond and with the null label through the network in ONE batched
call of twice the batch and counts 2; w = 0 makes one conditional call and counts 1.
``stats["network_calls"]`` is the number of calls actually made and
``stats["classifier_evals"]`` the classifier's (each with one backward pass).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
from torch import Tensor

from ._validation import _describe, _got, check_callable, check_real
from .nets.embedding import NULL_LABEL
from .score import ScoreFn


Classifier = Callable[[Tensor, Tensor], Tensor]


def check_cond(cond: Any, batch: int) -> Tensor:
    """``cond`` as a [batch, ...] tensor: a tensor whose first size is the batch, or one
    int (the same label for every sample)."""
    if isinstance(cond, int) and not isinstance(cond, bool):
        return torch.full((batch,), cond, dtype=torch.long)
    if not isinstance(cond, Tensor):
        raise TypeError(f"cond must be a [batch] tensor of labels (or one int label for the "
                        f"whole batch), {_got(cond)}")
    if cond.dim() == 0 or cond.shape[0] != batch:
        raise ValueError(f"cond must have batch size {batch} (shape [{batch}] or "
                         f"[{batch}, ...], one entry per sample), got shape {tuple(cond.shape)}")
    return cond


def check_guidance_args(cond: Any, guidance: Any, classifier: Any,
                        classifier_scale: Any) -> Dict[str, Any]:
    """Check the guidance arguments of ``sample`` (before any work) and return them with
    their defaults: guidance 0 without a classifier, classifier_scale 1 with one."""
    given = [name for name, value in (("guidance", guidance), ("classifier", classifier),
                                      ("classifier_scale", classifier_scale))
             if value is not None]
    if cond is None:
        if given:
            raise ValueError(f"{given[0]} needs cond= (the [batch] labels to guide towards)")
        return {}
    if classifier is None:
        if classifier_scale is not None:
            raise ValueError(f"classifier_scale={classifier_scale!r} needs classifier= (a "
                             f"classifier f(x, t) -> logits [batch, n_classes])")
        w = 0.0 if guidance is None else check_real("guidance", guidance, nonnegative=True)
        return {"guidance": w, "classifier": None, "classifier_scale": None}
    if guidance is not None:
        raise ValueError(f"guidance={guidance!r} (classifier-free) and classifier= "
                         f"(classifier guidance) do not combine; with a classifier the "
                         f"score is unconditional and classifier_scale sets the strength")
    check_callable("classifier", classifier, "classifier(x, t) -> logits [batch, n_classes]")
    scale = 1.0 if classifier_scale is None else check_real("classifier_scale",
                                                            classifier_scale, nonnegative=True)
    return {"guidance": None, "classifier": classifier, "classifier_scale": scale}


class GuidedScore:
    """The guided score s~(x, t) for the labels ``cond`` of the current batch (see the module
    docstring), counting network evaluations, calls and classifier evaluations.

    Args:
        score: the counted, first-call-checked score, called as ``score(x, t, cond)`` for a
            conditional evaluation and ``score(x, t)`` for an unconditional one.
        guidance: classifier-free guidance weight w >= 0, or None with a classifier.
        classifier: f(x, t) -> logits [batch, n_classes], or None.
        classifier_scale: the classifier term's weight (with a classifier).
    """

    def __init__(self, score: ScoreFn, guidance: Optional[float],
                 classifier: Optional[Classifier] = None,
                 classifier_scale: Optional[float] = None):
        self.score = score
        self.guidance = guidance
        self.classifier = classifier
        self.classifier_scale = classifier_scale
        self.cond: Optional[Tensor] = None
        self.nfe = 0               # network evaluations per sample (CFG counts 2)
        self.network_calls = 0     # calls actually made
        self.classifier_evals = 0
        self._logits_checked = False

    def bind(self, cond: Tensor) -> "GuidedScore":
        """Guide the next calls towards ``cond`` (one chunk of the batch's labels)."""
        self.cond = cond
        return self

    def stats(self) -> Dict[str, int]:
        out = {"network_calls": self.network_calls}
        if self.classifier is not None:
            out["classifier_evals"] = self.classifier_evals
        return out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        cond = self.cond
        if self.classifier is not None:
            s = self._count(self.score(x, t), 1)
            return s + self.classifier_scale * self.class_gradient(x, t, cond)
        w = self.guidance
        if w == 0.0:
            return self._count(self.score(x, t, cond), 1)
        # Ho & Salimans 2022, eq. 6 in score form: cond and null in one batched call.
        both = self.score(torch.cat([x, x]), _repeat_time(t),
                          torch.cat([cond, torch.full_like(cond, NULL_LABEL)]))
        s_cond, s_null = self._count(both, 2).chunk(2)
        return (1.0 + w) * s_cond - w * s_null

    def _count(self, s: Tensor, evaluations: int) -> Tensor:
        self.network_calls += 1
        self.nfe += evaluations
        return s

    def class_gradient(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """grad_x log p_t(cond | x) = grad_x log_softmax(f(x, t))[cond], shaped like x
        (one classifier call and one backward pass; the classifier must treat samples
        independently, as the sum over the batch is differentiated)."""
        differentiable = x.requires_grad  # sample(grad=True): keep the graph through it
        with torch.enable_grad():
            xg = x if differentiable else x.detach().requires_grad_(True)
            logits = self.classifier(xg, t)
            if not self._logits_checked:  # once per solve: the label check syncs the host
                check_logits(logits, x, cond)
                self._logits_checked = True
            logp = torch.log_softmax(logits, dim=1).gather(1, cond.long()[:, None]).sum()
            (grad,) = torch.autograd.grad(logp, xg, create_graph=differentiable)
        self.classifier_evals += 1
        return grad


def check_logits(logits: Any, x: Tensor, cond: Tensor) -> None:
    """classifier(x, t) must return floating logits [batch, n_classes] with every label of
    ``cond`` in [0, n_classes)."""
    batch = x.shape[0]
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"classifier(x, t) must return floating-point logits [batch, "
                        f"n_classes] = [{batch}, n_classes], got {_describe(logits)} of type "
                        f"{type(logits).__name__}"
                        + (f" and dtype {logits.dtype}" if isinstance(logits, Tensor) else ""))
    if logits.dim() != 2 or logits.shape[0] != batch:
        raise ValueError(f"classifier(x, t) must return logits of shape [batch, n_classes] = "
                         f"[{batch}, n_classes], got shape {tuple(logits.shape)}")
    n = logits.shape[1]
    labels = cond.long()
    if cond.dim() != 1 or bool(((labels < 0) | (labels >= n)).any()) \
            or bool((labels != cond).any()):
        raise ValueError(f"cond must hold one integer label in [0, {n}) per sample for a "
                         f"classifier with {n} classes, got {_describe(cond)}")


def _repeat_time(t: Tensor) -> Tensor:
    """[batch] times for the doubled batch; one time expanded over the batch stays one
    (expanded), so the coefficients are still computed once."""
    if t.dim() == 1 and t.shape[0] > 1 and t.stride(0) == 0:
        return t[:1].expand(2 * t.shape[0])
    return torch.cat([t, t])


__all__ = ["NULL_LABEL", "GuidedScore", "check_cond", "check_guidance_args", "check_logits"]

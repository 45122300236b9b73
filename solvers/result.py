"""The result type shared by every solver."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor


@dataclass
class Solution:
    """Outcome of a solve.

    Attributes:
        x: final state, shaped like the initial state ``[batch, *dims]``.
        ts: ``[n_saved]`` times at which states were saved, or ``None``.
        xs: ``[n_saved, batch, *dims]`` saved states (``xs[i]`` is the state at ``ts[i]``),
            or ``None``.
        stats: counters of work done. Always ``steps``; ``nfe`` (vector-field evaluations
            that actually happened, counted by a wrapper) whenever the solver knows the
            field; adaptive solvers add ``accepted`` and ``rejected`` (``None`` where a
            backend does not expose rejections).
    """

    x: Tensor
    ts: Optional[Tensor] = None
    xs: Optional[Tensor] = None
    stats: Dict[str, Any] = field(default_factory=dict)

    @property
    def nfe(self) -> Optional[int]:
        """Number of vector-field evaluations, ``stats["nfe"]`` (``None`` if not counted)."""
        return self.stats.get("nfe")


#: The statistics that count work; they add up over solves of parts of a batch.
WORK_STATS = ("nfe", "steps", "accepted", "rejected", "rows_evaluated")


def total_stats(stats: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Statistics of several solves (e.g. chunks of one batch) as one: the work counters
    (:data:`WORK_STATS`) summed (``None`` if any solve lacks one), the rest from the first
    solve, plus ``solves`` (how many) when there is more than one. Per-sample statistics
    (keys ending in ``_per_sample``, tensors over each solve's samples) are concatenated."""
    total = dict(stats[0])
    if len(stats) > 1:
        for key in WORK_STATS:
            if key in total:
                values = [s.get(key) for s in stats]
                total[key] = None if any(v is None for v in values) else sum(values)
        for key in total:
            if key.endswith("_per_sample"):
                total[key] = torch.cat([s[key] for s in stats])
        total["solves"] = len(stats)
    return total

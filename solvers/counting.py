"""A callable wrapper that counts how often a function is evaluated."""
from __future__ import annotations

from typing import Any, Callable

from .validation import check_callable


class CountingFunction:
    """Wrap ``fn`` and count its completed calls in ``.calls``.

    Used for NFE statistics: solvers count the evaluations that actually happen instead
    of inferring them from a formula. Arguments and the result pass through unchanged.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        check_callable("fn", fn, "fn(*args)")
        self.fn = fn
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.fn(*args, **kwargs)
        self.calls += 1
        return out

    def __repr__(self) -> str:
        return f"CountingFunction({self.fn!r}, calls={self.calls})"

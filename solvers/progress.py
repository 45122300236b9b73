"""Progress bars (tqdm) for fixed-grid and adaptive solves."""
from __future__ import annotations

from typing import Optional

from tqdm.auto import tqdm


class TimeBar:
    """A bar over the time interval ``[t0, t1]`` (either direction) for adaptive solves.

    ``advance_to(t)`` moves it to time ``t``; disabled bars cost nothing.
    """

    def __init__(self, t0: float, t1: float, enabled: bool, desc: Optional[str] = None) -> None:
        self.t0 = t0
        self.span = abs(t1 - t0)
        self.bar = tqdm(total=self.span, desc=desc, disable=not enabled, unit="t",
                        bar_format="{l_bar}{bar}| t {n:.4g}/{total:.4g} [{elapsed}<{remaining}]")
        self.enabled = enabled

    def advance_to(self, t: float) -> None:
        if self.enabled:
            self.bar.update(abs(t - self.t0) - self.bar.n)

    def close(self) -> None:
        self.bar.close()

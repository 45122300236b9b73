"""Forward SDEs: the noise schedules of score-based diffusion models.

``SDE_TABLE`` is the one registry of the SDE classes: checkpoints store an SDE under its
class name (``SDES``) and the command line's ``--sde`` builds one by its short name
(``SHORT_NAMES``, :func:`build_sde`).
"""
from typing import Any, Callable, Dict, NamedTuple, Tuple, Type

from .base import SDE, VPTypeSDE
from .discrete import (DiscreteVPSDE, alphas_cumprod, betas_from_alphas_cumprod,
                       sde_from_alphas_cumprod)
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import CosineVPSDE, VPSDE


class SDEEntry(NamedTuple):
    """One registered SDE class.

    Attributes:
        cls: the class (a checkpoint stores ``cls.__name__``).
        short: its short name on the command line (``scoresde train --sde short``).
        build: what the short name calls (the class, or a constructor such as
            ``DiscreteVPSDE.linear``) ...
        defaults: ... with these keyword arguments (the score_sde / DDPM settings).
        required: keyword arguments the caller must add (VE's sigma_max depends on the data).
    """

    cls: Type[SDE]
    short: str
    build: Callable[..., SDE]
    defaults: Dict[str, Any]
    required: Tuple[str, ...] = ()

    def describe(self) -> str:
        """E.g. 'VPSDE(0.1, 20)', 'VESDE(0.01, sigma_max)', 'DiscreteVPSDE.linear(1000)'."""
        args = [f"{v:g}" for v in self.defaults.values()] + list(self.required)
        return f"{self.build.__qualname__}({', '.join(args)})"


SDE_TABLE: Tuple[SDEEntry, ...] = (
    SDEEntry(VPSDE, "vp", VPSDE, {"beta_min": 0.1, "beta_max": 20.0}),
    SDEEntry(SubVPSDE, "subvp", SubVPSDE, {"beta_min": 0.1, "beta_max": 20.0}),
    SDEEntry(VESDE, "ve", VESDE, {"sigma_min": 0.01}, required=("sigma_max",)),
    SDEEntry(CosineVPSDE, "cosine", CosineVPSDE, {"s": 0.008}),
    SDEEntry(DiscreteVPSDE, "ddpm", DiscreteVPSDE.linear, {"N": 1000}),
)
#: class name -> class (the names checkpoints store).
SDES: Dict[str, Type[SDE]] = {e.cls.__name__: e.cls for e in SDE_TABLE}
#: short name -> entry (the command line's ``--sde`` choices, in table order).
SHORT_NAMES: Dict[str, SDEEntry] = {e.short: e for e in SDE_TABLE}


def build_sde(short: str, **kwargs: Any) -> SDE:
    """The SDE called ``short`` in :data:`SHORT_NAMES`, with its defaults updated by
    ``kwargs`` (which must include the entry's ``required`` arguments)."""
    if short not in SHORT_NAMES:
        raise ValueError(f"unknown sde {short!r}; choose one of {', '.join(SHORT_NAMES)}")
    entry = SHORT_NAMES[short]
    missing = [k for k in entry.required if k not in kwargs]
    if missing:
        raise TypeError(f"sde {short!r} needs {', '.join(missing)}")
    return entry.build(**{**entry.defaults, **kwargs})


__all__ = ["SDE", "VPTypeSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE",
           "alphas_cumprod", "betas_from_alphas_cumprod", "sde_from_alphas_cumprod",
           "SDEEntry", "SDE_TABLE", "SDES", "SHORT_NAMES", "build_sde"]

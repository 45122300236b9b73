"""Forward SDEs: the noise schedules of score-based diffusion models."""
from .base import SDE, VPTypeSDE
from .discrete import DiscreteVPSDE
from .subvp import SubVPSDE
from .ve import VESDE
from .vp import CosineVPSDE, VPSDE

__all__ = ["SDE", "VPTypeSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE"]

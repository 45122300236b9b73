"""scoresde: continuous-time score-based diffusion models.

Forward SDEs, score parametrizations, closed-form oracles, reverse-time SDE and
probability-flow ODE samplers, and exact likelihoods. See README.md and docs/.
"""
from . import oracles
from .oracles import GaussianData, GaussianMixture
from .score import ScoreModel, score_from_eps
from .sdes import SDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE, SubVPSDE, VPTypeSDE

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPTypeSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE",
    "ScoreModel", "score_from_eps", "oracles", "GaussianData", "GaussianMixture",
    "__version__",
]

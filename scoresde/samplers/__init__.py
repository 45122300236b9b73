"""Samplers: the reverse-time SDE and probability-flow ODE solvers behind ``sample``."""
from .api import SOLVERS, SampleResult, list_solvers, sample, tweedie_denoise

__all__ = ["sample", "SampleResult", "SOLVERS", "list_solvers", "tweedie_denoise"]

"""Samplers: the reverse-time SDE and probability-flow ODE solvers behind ``sample``."""
from .api import SampleResult, sample, tweedie_denoise
from .registry import SOLVERS, Option, SolverSpec, list_solvers

__all__ = ["sample", "SampleResult", "SOLVERS", "Option", "SolverSpec", "list_solvers",
           "tweedie_denoise"]

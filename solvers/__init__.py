"""solvers: time-stepping numerics on torch tensors (ODEs, SDEs, predictor--corrector).

Knows about tensors, time, vector fields, noise and tolerances; nothing about diffusion.
"""
from .counting import CountingFunction
from .errors import (DivergedStateError, MaxStepsError, NonFiniteStateError, SolverError,
                     check_finite_result, naming_solver)
from .loop import Step, Update, integrate
from .noise import GaussianNoise, Noise, RecordingNoise, ReplayNoise, SeededNoise, philox4x32
from .ode_adaptive import ADAPTIVE_ODE_METHODS, AdaptiveMethod, odeint_adaptive
from .ode_fixed import FIXED_ODE_METHODS, ButcherTableau, odeint_fixed, rk_step
from .ode_per_sample import DOPRI5, EmbeddedTableau, odeint_per_sample
from .pc import Corrector, langevin_corrector, langevin_move, predictor_corrector_step
from .result import Solution, total_stats
from .sde import FIXED_SDE_METHODS, broadcast_diffusion, euler_maruyama_step, sdeint_fixed
from .sde_torchsde import TORCHSDE_METHODS, sdeint_torchsde

__all__ = [
    "ADAPTIVE_ODE_METHODS",
    "AdaptiveMethod",
    "ButcherTableau",
    "Corrector",
    "CountingFunction",
    "DOPRI5",
    "DivergedStateError",
    "EmbeddedTableau",
    "FIXED_ODE_METHODS",
    "FIXED_SDE_METHODS",
    "GaussianNoise",
    "MaxStepsError",
    "Noise",
    "NonFiniteStateError",
    "RecordingNoise",
    "ReplayNoise",
    "Solution",
    "SeededNoise",
    "SolverError",
    "Step",
    "TORCHSDE_METHODS",
    "Update",
    "broadcast_diffusion",
    "check_finite_result",
    "euler_maruyama_step",
    "integrate",
    "langevin_corrector",
    "langevin_move",
    "naming_solver",
    "odeint_adaptive",
    "odeint_fixed",
    "odeint_per_sample",
    "philox4x32",
    "predictor_corrector_step",
    "rk_step",
    "sdeint_fixed",
    "sdeint_torchsde",
    "total_stats",
]

"""Models from other libraries plug in: diffusers models and schedulers
(:func:`from_diffusers`, :func:`diffusers_timesteps`) and k-diffusion denoisers
(docs/interop.md)."""
from .diffusers import (DiffusersNet, diffusers_alphas_cumprod, diffusers_sde,
                        diffusers_timesteps, from_diffusers, scheduler_config)
from .kdiffusion import Denoiser, DenoiserNet, edm_preconditioning, from_denoiser, to_denoiser

__all__ = ["from_diffusers", "diffusers_timesteps", "diffusers_alphas_cumprod", "diffusers_sde",
           "scheduler_config", "DiffusersNet", "from_denoiser", "to_denoiser", "Denoiser",
           "DenoiserNet", "edm_preconditioning"]

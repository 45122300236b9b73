"""scoresde: continuous-time score-based diffusion models.

Forward SDEs, score parametrizations, closed-form oracles, reverse-time SDE and
probability-flow ODE samplers, and exact likelihoods. See README.md and docs/.
"""
from . import distributed, guidance, nets, oracles
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import Dataset, load_dataset
from .likelihood import (BitsPerDimResult, LikelihoodResult, bits_per_dim, decode, dequantize,
                         encode, log_likelihood)
from .losses import ddpm_loss, dsm_loss
from .nets import MLP, SinusoidalEmbedding, UNet
from .oracles import GaussianData, GaussianMixture
from .training import TrainConfig, Trainer
from .samplers import SampleResult, list_solvers, sample
from .inpainting import inpaint
from .score import ScoreModel, score_from_eps
from .sdes import (SDE, VESDE, VPSDE, CosineVPSDE, DiscreteVPSDE, SubVPSDE, VPTypeSDE,
                   alphas_cumprod, betas_from_alphas_cumprod, sde_from_alphas_cumprod)
from .grids import sigma_from_time, time_from_sigma
from .interop import diffusers_timesteps, from_denoiser, from_diffusers, to_denoiser

__version__ = "0.1.0"

__all__ = [
    "SDE", "VPTypeSDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE",
    "ScoreModel", "score_from_eps", "oracles", "GaussianData", "GaussianMixture", "guidance",
    "distributed", "sample", "SampleResult", "list_solvers", "inpaint",
    "log_likelihood", "LikelihoodResult", "bits_per_dim", "BitsPerDimResult", "dequantize",
    "encode", "decode",
    "nets", "MLP", "UNet", "SinusoidalEmbedding", "dsm_loss", "ddpm_loss", "load_dataset",
    "Dataset", "Trainer", "TrainConfig", "save_checkpoint", "load_checkpoint", "CheckpointError",
    "alphas_cumprod", "betas_from_alphas_cumprod", "sde_from_alphas_cumprod",
    "from_diffusers", "diffusers_timesteps", "from_denoiser", "to_denoiser", "sigma_from_time",
    "time_from_sigma",
    "__version__",
]

"""diffusers models and schedulers as a score on a DiscreteVPSDE, with no glue.

A diffusers noise-prediction model is trained on integer timesteps k in {0..N-1} with
x_k = sqrt(alphabar_k) x_0 + sqrt(1 - alphabar_k) eps (Ho et al. 2020, eq. 4), alphabar the
scheduler's ``alphas_cumprod`` table. Our DiscreteVPSDE places index k at t_k = (k + 1)/N
with alpha(t_k)^2 = alphabar_k exactly, and a ScoreModel with ``time_input="index"`` hands
the network round(t N - 1) = k: the integers diffusers passes. The scheduler config maps to
ours as (docs/interop.md has the table):

    num_train_timesteps, beta_schedule, beta_start, beta_end, trained_betas
                         -> the betas, computed as diffusers does (float32), -> DiscreteVPSDE
    prediction_type      -> ScoreModel(prediction=...): epsilon, sample, v_prediction
    timestep_spacing, steps_offset
                         -> diffusers_timesteps(...): the ``timesteps=`` of our samplers

diffusers itself is imported only to load a model from a directory.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from solvers.validation import _got, check_choice, check_int, is_integer

from ..score import ScoreModel
from ..sdes import DiscreteVPSDE, sde_from_alphas_cumprod

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SPACINGS = ("linspace", "leading", "trailing")
#: our sampler -> the diffusers scheduler whose timesteps it follows
TIMESTEP_RULES = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler",
                  "dpm_solver++": "DPMSolverMultistepScheduler"}
SCHEDULER_CONFIG = "scheduler_config.json"
_INSTALL = "pip install 'scoresde[diffusers]' (or pip install diffusers)"

PathLike = Union[str, "os.PathLike[str]"]


class SchedulerConfig(dict):
    """A diffusers scheduler config (a plain dict of its fields) that remembers where it was
    read (``where``: a file path or a description), for error messages."""

    def __init__(self, fields: Mapping[str, Any], where: str):
        super().__init__(fields)
        self.where = where

    def get_field(self, name: str, default: Any) -> Any:
        """The field's value, ``default`` when it is missing or null."""
        value = self.get(name)
        return default if value is None else value


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            fields = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(fields).__name__}")
    return fields


def scheduler_config(source: Any) -> SchedulerConfig:
    """The scheduler config of ``source``: a diffusers scheduler (its ``.config``), a dict,
    a ``scheduler_config.json`` file, a directory holding one, or a pipeline directory
    (its ``scheduler/`` subfolder)."""
    if isinstance(source, SchedulerConfig):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            for candidate in (os.path.join(path, SCHEDULER_CONFIG),
                              os.path.join(path, "scheduler", SCHEDULER_CONFIG)):
                if os.path.isfile(candidate):
                    return SchedulerConfig(_read_json(candidate), candidate)
            raise ValueError(f"no scheduler config in {path}: looked for "
                             f"{os.path.join(path, SCHEDULER_CONFIG)} and "
                             f"{os.path.join(path, 'scheduler', SCHEDULER_CONFIG)}")
        if os.path.isfile(path):
            return SchedulerConfig(_read_json(path), path)
        raise ValueError(f"scheduler config {path} does not exist")
    config = getattr(source, "config", source)
    if isinstance(config, Mapping):
        where = (f"{type(source).__name__}.config" if config is not source
                 else "the scheduler config")
        return SchedulerConfig(dict(config), where)
    raise TypeError(f"scheduler must be a diffusers scheduler, a config dict, a "
                    f"scheduler_config.json path or a directory, {_got(source)}")


def _spacing_default(config: SchedulerConfig) -> str:
    # diffusers' own defaults: DPMSolverMultistepScheduler "linspace", DDPM/DDIM "leading"
    return "linspace" if config.get("_class_name") == "DPMSolverMultistepScheduler" else "leading"


def _field_int(config: SchedulerConfig, name: str, default: int, minimum: int) -> int:
    value = config.get_field(name, default)
    if not is_integer(value) or value < minimum:
        raise ValueError(f"{config.where}: {name} must be an integer >= {minimum}, got "
                         f"{value!r}")
    return int(value)


def _field_choice(config: SchedulerConfig, name: str, default: str,
                  allowed: Tuple[str, ...], extra: str = "") -> str:
    value = config.get_field(name, default)
    if value not in allowed:
        raise ValueError(f"{config.where}: {name}={value!r} is not supported; choose one of "
                         f"{', '.join(repr(a) for a in allowed)}{extra}")
    return value


def diffusers_alphas_cumprod(scheduler: Any) -> Tensor:
    """The ``alphas_cumprod`` table a diffusers scheduler builds from its config, float64 [N]
    holding diffusers' float32 values bit for bit (betas and their cumulative product are
    computed in float32 as diffusers does, so the network sees the schedule it was trained
    on): linear (torch.linspace), scaled_linear (linspace of square roots, squared),
    squaredcos_cap_v2 (Nichol & Dhariwal 2021, eq. 17, beta capped at 0.999) or
    trained_betas."""
    config = scheduler_config(scheduler)
    if config.get_field("rescale_betas_zero_snr", False):
        raise ValueError(f"{config.where}: rescale_betas_zero_snr=True is not supported: it "
                         f"sets alphas_cumprod[N-1] = 0 (zero terminal SNR, Lin et al. 2024), "
                         f"where a VP SDE has no Gaussian prior and the score's x0 = (x - std "
                         f"eps)/alpha divides by 0; use a scheduler config with "
                         f"rescale_betas_zero_snr=false")
    N = _field_int(config, "num_train_timesteps", 1000, 1)
    trained = config.get("trained_betas")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
        if betas.dim() != 1 or betas.numel() != N:
            raise ValueError(f"{config.where}: trained_betas must be a list of "
                             f"num_train_timesteps = {N} numbers, got shape "
                             f"{tuple(betas.shape)}")
    else:
        schedule = _field_choice(config, "beta_schedule", "linear", BETA_SCHEDULES,
                                 " (or give trained_betas)")
        b0 = float(config.get_field("beta_start", 0.0001))
        b1 = float(config.get_field("beta_end", 0.02))
        if schedule == "linear":
            betas = torch.linspace(b0, b1, N, dtype=torch.float32)
        elif schedule == "scaled_linear":  # latent diffusion's schedule
            betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, N, dtype=torch.float32) ** 2
        else:  # Nichol & Dhariwal 2021, eq. 17, s = 0.008, beta <= 0.999, in Python floats
            def abar(u: float) -> float:
                return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.tensor([min(1 - abar((i + 1) / N) / abar(i / N), 0.999)
                                  for i in range(N)], dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


def diffusers_timesteps(scheduler: Any, steps: int, solver: str = "ddim") -> List[int]:
    """The integer timesteps diffusers' scheduler evaluates the network at for ``steps``
    inference steps (``scheduler.timesteps`` after ``set_timesteps(steps)``), from the
    config's ``timestep_spacing`` and ``steps_offset`` ("Common Diffusion Noise Schedules
    and Sample Steps are Flawed", Lin et al. 2024, Table 2), for our sampler ``solver``:
    "ddpm" or "ddim" (DDPMScheduler, DDIMScheduler: n points over {0..N-1}) or
    "dpm_solver++" (DPMSolverMultistepScheduler: n + 1 points, the last dropped). Pass the
    result as ``timesteps=`` to ``sample``."""
    config = scheduler_config(scheduler)
    check_choice("solver", solver, tuple(TIMESTEP_RULES))
    N = _field_int(config, "num_train_timesteps", 1000, 1)
    steps = check_int("steps", steps, minimum=1)
    if steps > N:
        raise ValueError(f"steps must be <= num_train_timesteps = {N}, got {steps}")
    spacing = _field_choice(config, "timestep_spacing", _spacing_default(config), SPACINGS)
    offset = _field_int(config, "steps_offset", 0, 0)
    if solver == "dpm_solver++":
        clip = config.get_field("lambda_min_clipped", -math.inf)
        if clip != -math.inf:
            raise ValueError(f"{config.where}: lambda_min_clipped={clip!r} is not supported "
                             f"(only -inf, diffusers' default)")
        if spacing == "linspace":    # np.linspace(0, N - 1, n + 1).round()[::-1][:-1]
            u = torch.linspace(0, N - 1, steps + 1, dtype=torch.float64)
            k = torch.round(u).flip(0)[:-1]
        elif spacing == "leading":   # (arange(n + 1) * (N // (n + 1)))[::-1][:-1] + offset
            k = (torch.arange(steps + 1, dtype=torch.float64) * (N // (steps + 1))).flip(0)[:-1]
            k = k + offset
        else:                        # round(arange(N, 0, -N/n)) - 1
            k = torch.round(torch.arange(N, 0, -N / steps, dtype=torch.float64)) - 1
    else:
        if spacing == "linspace":    # np.linspace(0, N - 1, n).round()[::-1]
            k = torch.round(torch.linspace(0, N - 1, steps, dtype=torch.float64)).flip(0)
        elif spacing == "leading":   # arange(n) * (N // n), reversed, + offset
            k = (torch.arange(steps, dtype=torch.float64) * (N // steps)).flip(0) + offset
        else:                        # round(arange(N, 0, -N/n)) - 1
            k = torch.round(torch.arange(N, 0, -N / steps, dtype=torch.float64)) - 1
    out = [int(v) for v in k.tolist()]
    if out[0] >= N:
        raise ValueError(f"{config.where}: steps_offset={offset} with {steps} steps gives "
                         f"timestep {out[0]} >= num_train_timesteps = {N}")
    return out


def diffusers_sde(scheduler: Any) -> DiscreteVPSDE:
    """The DiscreteVPSDE of a diffusers scheduler (or its config): alphas_cumprod equal to
    diffusers' table to float64 rounding (``diffusers_alphas_cumprod``)."""
    return sde_from_alphas_cumprod(diffusers_alphas_cumprod(scheduler))


class DiffusersNet(nn.Module):
    """``net(x, k) -> tensor`` of a diffusers model called as ``model(x, k, **model_kwargs)``
    (its output's ``.sample``), k the [batch] integer timesteps; a learned-variance model
    (2C output channels, variance_type "learned"/"learned_range") gives its first C: the
    noise prediction (our samplers use fixed variances)."""

    def __init__(self, model: Any, model_kwargs: Optional[Dict[str, Any]] = None,
                 split_variance: bool = False):
        super().__init__()
        self.model = model
        self.model_kwargs = dict(model_kwargs or {})
        self.split_variance = split_variance

    def forward(self, x: Tensor, k: Tensor) -> Tensor:
        out = self.model(x, k, **self.model_kwargs)
        out = getattr(out, "sample", out)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if self.split_variance and isinstance(out, Tensor) and out.dim() > 1:
            out = out[:, :x.shape[1]]
        return out

    @property
    def sample_shape(self) -> Optional[Tuple[int, ...]]:
        """(channels, height, width) from the model's config, when it says."""
        config = getattr(self.model, "config", None)
        size = getattr(config, "sample_size", None)
        channels = getattr(config, "in_channels", None)
        if size is None or channels is None:
            return None
        hw = (size, size) if is_integer(size) else tuple(size)
        return (int(channels),) + tuple(int(v) for v in hw)


def _import_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError(f"loading a diffusers model needs diffusers: {_INSTALL}") from None
    return diffusers


def _load_model(folder: str) -> Any:
    """A diffusers model from ``folder`` (config.json with its ``_class_name``, weights)."""
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise ValueError(f"no model in {folder}: {config_path} does not exist")
    name = _read_json(config_path).get("_class_name")
    diffusers = _import_diffusers()
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ValueError(f"{config_path}: _class_name={name!r} is not a diffusers model class")
    return cls.from_pretrained(folder, low_cpu_mem_usage=False)  # no accelerate needed


def _model_source(path: str) -> Tuple[str, Optional[str]]:
    """(model folder, scheduler folder or None) of a pipeline or model directory."""
    index = os.path.join(path, "model_index.json")
    if os.path.isfile(index):
        fields = _read_json(index)
        for key in ("unet", "transformer"):
            if key in fields:
                scheduler = os.path.join(path, "scheduler")
                return os.path.join(path, key), scheduler if os.path.isdir(scheduler) else None
        raise ValueError(f"{index} names no 'unet' or 'transformer' model")
    return path, None


def _check_channels(model: Any, config: SchedulerConfig, where: str) -> bool:
    """Whether the model's output holds a learned variance to split off; an error naming
    the model's config when its output cannot be shaped like its input."""
    mconf = getattr(model, "config", None)
    c_in, c_out = getattr(mconf, "in_channels", None), getattr(mconf, "out_channels", None)
    if c_in is None or c_out is None or c_in == c_out:
        return False
    if config.get("variance_type") in ("learned", "learned_range") and c_out == 2 * c_in:
        return True
    raise ValueError(f"{where}: out_channels = {c_out} but in_channels = {c_in}: the network "
                     f"must return a tensor shaped like its input (the noise, x0 or v "
                     f"prediction; 2 x in_channels only with variance_type 'learned' or "
                     f"'learned_range')")


def from_diffusers(source: Any, scheduler: Any = None, *,
                   model_kwargs: Optional[Dict[str, Any]] = None
                   ) -> Tuple[ScoreModel, DiscreteVPSDE]:
    """A diffusers model and scheduler as (ScoreModel, DiscreteVPSDE).

    Args:
        source: a local directory: a pipeline saved with ``save_pretrained``
            (model_index.json, unet/ or transformer/, scheduler/) or a model folder
            (config.json and weights) with its scheduler config beside it or given as
            ``scheduler``; or a model object (a diffusers ``UNet2DModel``, any
            ``model(x, k)`` returning a tensor or an output with ``.sample``); or a
            pipeline object (with ``.unet`` and ``.scheduler``). Nothing is downloaded.
        scheduler: a diffusers scheduler, its config dict, a scheduler_config.json path or
            a folder holding one (default: found beside the model).
        model_kwargs: extra keyword arguments for every model call (e.g.
            ``encoder_hidden_states`` of a UNet2DConditionModel).

    Returns:
        (score, sde): ``score(x, t)`` a ScoreModel whose network receives diffusers'
        integer timesteps k = round(t N - 1) and whose prediction is the config's
        prediction_type; ``sde`` the DiscreteVPSDE of the scheduler's alphas_cumprod.
        ``score.scheduler_config`` keeps the scheduler config for ``diffusers_timesteps``.

    The model keeps its dtype and device (``score.double()`` for float64). A config with
    clip_sample or thresholding on warns: our samplers do not clip x0 (docs/interop.md).
    """
    model_where = "the model"
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isdir(path):
            raise ValueError(f"{path} is not a directory (a pipeline or model saved with "
                             f"save_pretrained)")
        model_dir, scheduler_dir = _model_source(path)
        if scheduler is None:
            candidates = [scheduler_dir] if scheduler_dir else []
            candidates += [model_dir, os.path.join(os.path.dirname(os.path.abspath(model_dir)),
                                                   "scheduler")]
            found = [c for c in candidates if os.path.isfile(os.path.join(c, SCHEDULER_CONFIG))]
            if not found:
                looked = " and ".join(os.path.join(c, SCHEDULER_CONFIG) for c in candidates)
                raise ValueError(f"no scheduler config for {path}: looked for {looked}; pass "
                                 f"scheduler= (a scheduler, its config or its file)")
            scheduler = found[0]
        config = scheduler_config(scheduler)
        model = _load_model(model_dir)
        model_where = os.path.join(model_dir, "config.json")
    else:
        if scheduler is None and hasattr(source, "scheduler"):
            scheduler = source.scheduler
        if hasattr(source, "unet") and not isinstance(source, nn.Module):
            source = source.unet
        if scheduler is None:
            raise ValueError("scheduler is required with a model object: a diffusers "
                             "scheduler, its config dict or its scheduler_config.json")
        if not callable(source):
            raise TypeError(f"source must be a directory, a diffusers model or pipeline, or "
                            f"a callable model(x, k), {_got(source)}")
        config = scheduler_config(scheduler)
        model = source
    prediction = _field_choice(config, "prediction_type", "epsilon", PREDICTION_TYPES)
    _field_choice(config, "timestep_spacing", _spacing_default(config), SPACINGS)
    sde = diffusers_sde(config)
    for name in ("clip_sample", "thresholding"):
        if config.get(name):
            warnings.warn(f"{config.where}: {name}=True: diffusers' DDPM/DDIM schedulers "
                          f"{'clip' if name == 'clip_sample' else 'threshold'} the x0 "
                          f"prediction at every step; scoresde's samplers do not (they solve "
                          f"the model's reverse SDE/ODE), so results differ wherever x0 "
                          f"leaves the range (docs/interop.md)", stacklevel=2)
    split = _check_channels(model, config, model_where)
    score = ScoreModel(DiffusersNet(model, model_kwargs, split), sde, prediction=prediction,
                       time_input="index")
    score.scheduler_config = config
    return score, sde

"""A small, seeded, resumable trainer for score models.

``Trainer(model, sde, data, config).train()`` runs AdamW with linear warm-up, gradient
clipping and an exponential moving average (EMA) of the weights. All randomness comes from
one CPU ``torch.Generator`` seeded with ``config.seed``; each step draws, in order,

  1. the batch indices: ``torch.randint(len(data), (batch_size,))`` (with replacement);
  2. only for networks with dropout: one int64 seed for torch's global RNG, which the
     step then uses inside ``torch.random.fork_rng`` (the caller's RNG state is untouched);
  3. the loss's draws (times or indices, then the noise, then for a conditional run the
     condition dropout; see ``scoresde.losses``).

Data parallelism: under ``torchrun`` (a torch.distributed process group, see
``scoresde.distributed``) with world size W the trainer wraps the network in
DistributedDataParallel. Every rank holds the whole data set and the same generator, makes
the draws above for the whole (global) batch of ``batch_size`` examples, and evaluates the
loss of its contiguous rows r B / W .. (r + 1) B / W - 1 of them (a DistributedSampler of
the one-process batch); its loss is sum over its rows / B times W, so DDP's average of the
gradients over ranks is the gradient of the one-process batch mean. ``batch_size`` is the
global batch and ``lr`` needs no rescaling: the run is the one-process run up to the
rounding of the gradient sums (checked to 1e-10 in float64 over 20 steps). Only rank 0
writes checkpoints; they hold no world size, so a run resumes under any other.

So results do not depend on the global RNG state, and ``save`` / ``Trainer.load``
continue a run bit-identically: the checkpoint holds the weights, the EMA, the optimizer
state, the step counter and the generator state. ``train(directory=, save_every=)`` saves
such a checkpoint every ``save_every`` steps during the run (each save crash-safe), so a
killed run resumes from its last checkpoint as if it had never stopped.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ._validation import (as_real_tensor, check_choice, check_finite, check_instance, check_int,
                          check_real, is_real_number)
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from . import distributed
from .data import Dataset, load_dataset
from .losses import LOSSES, WEIGHTINGS, ddpm_loss, dsm_loss
from .score import ScoreModel
from .sdes import SDE, DiscreteVPSDE


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """Training options.

    Attributes:
        steps: total number of optimizer steps of the run.
        batch_size: examples per step (drawn with replacement).
        lr: peak learning rate of AdamW.
        warmup: steps of linear warm-up, lr_k = lr * min(1, (k + 1) / warmup) (0: none).
        lr_schedule: after the warm-up, "constant" keeps ``lr``; "cosine" decays it to 0
            at step ``steps`` along half a cosine (Loshchilov & Hutter 2017, eq. 5 without
            restarts), which removes most of the final SGD noise of the DSM loss.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's (beta1, beta2).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        ema_decay: EMA decay; the decay at step k is min(ema_decay, (1 + k)/(10 + k)) so the
            EMA forgets the random initialisation quickly (as TensorFlow's
            ExponentialMovingAverage with num_updates).
        seed: seeds the trainer's generator (batches, loss noise, dropout).
        loss: "dsm" (continuous denoising score matching) or "ddpm" (Ho et al. eq. 14,
            DiscreteVPSDE only).
        weighting: "none" or "likelihood" (dsm only).
        importance_sampling: sample t from the likelihood weighting's density (dsm only).
        eps: smallest diffusion time of the dsm loss.
        log_every: steps between history records (mean loss of the window) and progress
            bar updates.
        conditional: train a class-conditional model on the data's labels (``Dataset.y``;
            the network must take ``num_classes``), for classifier-free guidance.
        p_uncond: with ``conditional``, the probability that a label is replaced by the
            null label (condition dropout, Ho & Salimans 2022, Alg. 1), which trains the
            unconditional model in the same network.
    """

    steps: int = 10000
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 100
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    grad_clip: Optional[float] = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    loss: str = "dsm"
    weighting: str = "none"
    importance_sampling: bool = False
    eps: float = 1e-5
    log_every: int = 100
    conditional: bool = False
    p_uncond: float = 0.1

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup", "seed"):
            check_int(name, getattr(self, name), minimum=0)
        check_real("lr", self.lr, positive=True)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_real("weight_decay", self.weight_decay, nonnegative=True)
        betas = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else None
        if betas is None or len(betas) != 2 or not all(is_real_number(b) and 0 <= b < 1
                                                       for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if self.grad_clip is not None and not (is_real_number(self.grad_clip)
                                               and 0 < self.grad_clip < math.inf):
            raise ValueError(f"grad_clip must be a number > 0 or None, got {self.grad_clip!r}")
        if not (is_real_number(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise ValueError(f"ema_decay must be a number in [0, 1), got {self.ema_decay!r}")
        check_choice("loss", self.loss, tuple(LOSSES))
        check_choice("weighting", self.weighting, tuple(WEIGHTINGS))
        if self.loss == "ddpm" and (self.weighting != "none" or self.importance_sampling):
            raise ValueError("loss='ddpm' takes no weighting or importance_sampling; use "
                             "loss='dsm' for the likelihood weighting")
        if self.importance_sampling and self.weighting != "likelihood":
            raise ValueError("importance_sampling=True needs weighting='likelihood'")
        if not (is_real_number(self.eps) and 0 < self.eps < 1):
            raise ValueError(f"eps must be a number in (0, 1), got {self.eps!r}")
        check_instance("conditional", self.conditional, bool, "True or False")
        if not (is_real_number(self.p_uncond) and 0 <= self.p_uncond < 1):
            raise ValueError(f"p_uncond must be a number in [0, 1), got {self.p_uncond!r}")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. a checkpoint's), rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


class Trainer:
    """Train a score model on a data set; ``.ema`` is the EMA model to sample from.

    Args:
        model: a :class:`scoresde.ScoreModel`, or a bare network ``net(x, t_in)`` (wrapped
            as ``ScoreModel(net, sde, "epsilon")``).
        sde: the forward SDE (may be None when ``model`` is a ScoreModel).
        data: a :class:`scoresde.data.Dataset`, a data set name or file path (loaded with
            ``load_dataset``), or a tensor or NumPy array [n, *dims].
        config: a :class:`TrainConfig` (default ``TrainConfig()``).

    The data are moved to the network's device and dtype; the optimizer is AdamW over the
    network's parameters. Attributes: ``model``, ``net``, ``sde``, ``data``, ``config``,
    ``optimizer``, ``ema_net``, ``ema`` (ScoreModel on ``ema_net``), ``generator``,
    ``step`` and ``history`` (a list of {"step", "loss", "lr"} records).
    """

    def __init__(self, model: Union[ScoreModel, nn.Module], sde: Optional[SDE] = None,
                 data: Union[Dataset, Tensor, str, None] = None,
                 config: Optional[TrainConfig] = None):
        check_instance("model", model, (ScoreModel, nn.Module), "a ScoreModel or an nn.Module")
        if isinstance(model, ScoreModel):
            if sde is not None and sde is not model.sde:
                raise ValueError("sde differs from model.sde; pass sde=None with a ScoreModel "
                                 "or build the ScoreModel on this sde")
            self.model = model
        else:
            check_instance("sde", sde, SDE,
                           "a scoresde SDE (VPSDE, VESDE, ...) when model is a bare network")
            self.model = ScoreModel(model, sde, prediction="epsilon")
        if not isinstance(self.model.net, nn.Module):
            raise TypeError("the network must be an nn.Module with parameters to train")
        self.net: nn.Module = self.model.net
        self.sde: SDE = self.model.sde
        self.config = config if config is not None else TrainConfig()
        check_instance("config", self.config, TrainConfig, "a TrainConfig")
        if self.config.loss == "ddpm" and not isinstance(self.sde, DiscreteVPSDE):
            raise ValueError(f"loss='ddpm' needs a DiscreteVPSDE, got {type(self.sde).__name__}"
                             f"; use loss='dsm'")

        params = list(self.net.parameters())
        if not params:
            raise ValueError("the network has no parameters to train")
        self._device, self._dtype = params[0].device, params[0].dtype
        self.data = _as_dataset(data)
        self._x = self.data.x.to(device=self._device, dtype=self._dtype)
        check_finite("data", self._x)
        self._y = self._labels() if self.config.conditional else None
        self._check_data_fits()

        cfg = self.config
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas,
                                           weight_decay=cfg.weight_decay)
        self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
        self.ema = ScoreModel(self.ema_net, self.sde, prediction=self.model.prediction,
                              time_input=self.model.time_input,
                              time_scale=self.model.time_scale)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.history: List[Dict[str, float]] = []
        self._window: List[float] = []  # losses since the last history record
        self._uses_global_rng = any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                                    for m in self.net.modules())
        # data parallelism: this rank's rows of the global batch, through a DDP wrapper
        world, rank = distributed.world_size(), distributed.rank()
        self._rows = (rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
        self._world = world
        self._loss_model = self.model
        if world > 1:
            ddp = nn.parallel.DistributedDataParallel(
                self.net, device_ids=None if self._device.type == "cpu" else [self._device])
            self._loss_model = ScoreModel(ddp, self.sde, prediction=self.model.prediction,
                                          time_input=self.model.time_input,
                                          time_scale=self.model.time_scale)

    def _labels(self) -> Tensor:
        """The data's class labels on the network's device, checked against its classes."""
        classes = getattr(self.net, "num_classes", None)
        if not isinstance(classes, int):
            raise ValueError(f"conditional=True needs a class-conditional network (e.g. "
                             f"MLP(..., num_classes=C) or UNet(..., num_classes=C)); "
                             f"{type(self.net).__name__} has num_classes={classes!r}")
        if self.data.y is None:
            raise ValueError(f"conditional=True needs labelled data (Dataset.y, e.g. the "
                             f"digits set); {self.data.name!r} has no labels")
        y = self.data.y.long()
        if bool(((y < 0) | (y >= classes)).any()):
            raise ValueError(f"the data's labels span {int(y.min())}..{int(y.max())}, "
                             f"outside the network's num_classes={classes}")
        return y.to(self._device)

    def _check_data_fits(self) -> None:
        """One forward pass on two examples (eval mode, no grad: no state or RNG touched),
        so that data the network cannot take fails here, naming the shapes, rather than at
        the first training step."""
        x = self._x[:2]
        training = self.net.training
        self.net.eval()
        try:
            with torch.no_grad():
                self.model(x, 0.5 * self.sde.T, None if self._y is None else self._y[:2])
        except torch.cuda.OutOfMemoryError:
            raise
        except (ValueError, TypeError, RuntimeError) as err:
            raise ValueError(f"data has examples of shape {tuple(x.shape[1:])}, which the "
                             f"network does not take: {err}") from err
        finally:
            self.net.train(training)

    # -- one step -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): linear warm-up to ``config.lr``, then
        constant or, with ``lr_schedule="cosine"``, lr (1 + cos(pi p)) / 2 where
        p = (step - warmup) / (steps - warmup) is the fraction of the decay done."""
        cfg = self.config
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        if cfg.lr_schedule == "cosine":
            p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
            return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * p))
        return cfg.lr

    def _loss(self, x0: Tensor, cond: Optional[Tensor] = None) -> Tensor:
        cfg = self.config
        if self._world > 1:  # this rank's rows: sum / B * W (DDP averages over the W ranks)
            kw = {"rows": self._rows, "reduce": "sum"}
        else:
            kw = {}
        if cond is not None:
            kw.update(cond=cond, p_uncond=cfg.p_uncond)
        if cfg.loss == "ddpm":
            loss = ddpm_loss(self._loss_model, self.sde, x0, generator=self.generator, **kw)
        else:
            loss = dsm_loss(self._loss_model, self.sde, x0, weighting=cfg.weighting,
                            importance_sampling=cfg.importance_sampling, eps=cfg.eps,
                            generator=self.generator, **kw)
        return loss if self._world == 1 else loss * (self._world / cfg.batch_size)

    def _forward_backward(self, x0: Tensor, cond: Optional[Tensor] = None) -> float:
        loss = self._loss(x0, cond)
        value = float(loss.detach())
        if self._world > 1:  # the batch mean over all ranks (each rank holds sum/B * W)
            total = loss.detach().reshape(1).clone()
            torch.distributed.all_reduce(total)
            value = float(total) / self._world
        if not math.isfinite(value):
            raise FloatingPointError(
                f"the loss is {value} at step {self.step + 1}; the weights were not updated. "
                f"Lower lr (now {self.config.lr:g}), set grad_clip, or check the data")
        loss.backward()
        return value

    def train_step(self) -> float:
        """One optimizer step; returns the loss of the batch."""
        cfg = self.config
        self.net.train()
        idx = torch.randint(self._x.shape[0], (cfg.batch_size,), generator=self.generator)
        x0 = self._x[idx.to(self._device)]
        cond = None if self._y is None else self._y[idx.to(self._device)]
        self.optimizer.zero_grad(set_to_none=True)
        if self._uses_global_rng:
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=self.generator))
            devices = [self._device] if self._device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                value = self._forward_backward(x0, cond)
        else:
            value = self._forward_backward(x0, cond)
        if cfg.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return value

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        for e, p in zip(self.ema_net.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)  # e <- decay e + (1 - decay) p
        for e, b in zip(self.ema_net.buffers(), self.net.buffers()):
            e.copy_(b)

    # -- the loop -----------------------------------------------------------------------------
    def train(self, steps: Optional[int] = None, progress: bool = True, *,
              directory: Optional[str] = None,
              save_every: Optional[int] = None) -> List[Dict[str, float]]:
        """Run ``steps`` optimizer steps (default: the rest of ``config.steps``).

        Args:
            steps: optimizer steps to run in this call.
            progress: show a tqdm bar.
            directory: a run directory to checkpoint into (``save``): at the end of the call
                and, with ``save_every``, also whenever ``step`` reaches a multiple of
                ``save_every`` (counted from the start of the run, so the checkpoints do not
                depend on how the run was split into calls). Each save is crash-safe
                (``scoresde.checkpoint``), and ``Trainer.load`` of any of them continues
                the run bit-identically.
            save_every: steps between checkpoints (needs ``directory``; default: only at
                the end).

        Returns the history records made during this call: every ``config.log_every`` steps
        (counted from the start of the run, so the history does not depend on how the run
        was split into calls) a record {"step", "loss", "lr"} with the mean loss of the
        steps since the previous record.
        """
        if steps is None:
            steps = max(self.config.steps - self.step, 0)
        check_int("steps", steps, minimum=0)
        if save_every is not None:
            check_int("save_every", save_every, minimum=1)
            if directory is None:
                raise ValueError("save_every needs directory= (where to save the checkpoints)")
        start = len(self.history)
        saved_at = None
        from tqdm.auto import tqdm
        progress = progress and distributed.is_main()
        with tqdm(total=steps, disable=not progress, desc="train", leave=False) as bar:
            for _ in range(steps):
                self._window.append(self.train_step())
                bar.update(1)
                if self.step % self.config.log_every == 0:
                    bar.set_postfix(loss=f"{self._log()['loss']:.4g}")
                if save_every is not None and self.step % save_every == 0:
                    self.save(directory)
                    saved_at = self.step
        if directory is not None and saved_at != self.step:
            self.save(directory)
        return self.history[start:]

    def _log(self) -> Dict[str, float]:
        record = {"step": self.step, "loss": sum(self._window) / len(self._window),
                  "lr": self.lr_at(self.step - 1)}
        self.history.append(record)
        self._window = []
        return record

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, directory: str) -> str:
        """Write a checkpoint (see ``scoresde.checkpoint``) that ``Trainer.load`` resumes.
        Under torch.distributed rank 0 writes it; every rank returns when it is written
        (or raises if writing failed)."""
        if self._world == 1:
            return self._write(directory)
        path, error = directory, None
        if distributed.is_main():
            try:
                path = self._write(directory)
            except Exception as err:
                error = err
        distributed.raise_if_any_failed(error)
        return path

    def _write(self, directory: str) -> str:
        return save_checkpoint(
            directory, self.model, ema=self.ema_net, optimizer=self.optimizer,
            generator=self.generator, step=self.step, train_config=self.config.to_dict(),
            data=self.data.spec or None,
            extra={"history": self.history, "window": self._window})

    @classmethod
    def load(cls, directory: str, data: Union[Dataset, Tensor, str, None] = None, *,
             device: Optional[torch.device] = None) -> "Trainer":
        """Rebuild a Trainer from ``save``; training then continues bit-identically.

        Args:
            directory: the checkpoint directory.
            data: the training data; default: reloaded from the stored data spec (needed
                when the original data were a bare tensor).
            device: where to put the model (default CPU).
        """
        ck = load_checkpoint(directory, device=device, use_ema=False)
        record = ck.config
        where = f"{directory}/config.json"
        if record.get("train") is None or ck.ema_net is None or ck.optimizer_state is None \
                or ck.generator_state is None:
            raise CheckpointError(f"{where}: not a training checkpoint (needs the training "
                                  f"config, EMA, optimizer and generator state); use "
                                  f"load_checkpoint for a model-only checkpoint")
        try:
            config = TrainConfig.from_dict(record["train"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: invalid training config: {err}") from None
        if data is None:
            if record.get("data") is None:
                raise ValueError(f"{directory} was trained on an in-memory tensor; pass the "
                                 f"same data as data=")
            data = load_dataset(**record["data"])
        trainer = cls(ck.model, None, data, config)
        trainer.ema_net.load_state_dict(ck.ema_net.state_dict())
        try:
            trainer.optimizer.load_state_dict(ck.optimizer_state)
        except (KeyError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{directory}: the optimizer state does not fit the "
                                  f"model: {err}") from None
        trainer.generator.set_state(ck.generator_state)
        trainer.step = ck.step
        extra = record.get("extra") or {}
        trainer.history = list(extra.get("history", []))
        trainer._window = list(extra.get("window", []))
        return trainer

    @classmethod
    def resume(cls, directory: str, steps: Optional[int] = None,
               data: Union[Dataset, Tensor, str, None] = None, *,
               device: Optional[torch.device] = None, progress: bool = True) -> "Trainer":
        """``Trainer.load(directory)`` then ``.train(steps)`` (default: to ``config.steps``)."""
        trainer = cls.load(directory, data, device=device)
        trainer.train(steps, progress=progress)
        return trainer


def _as_dataset(data: Union[Dataset, Tensor, np.ndarray, str, None]) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, np.ndarray):
        data = as_real_tensor("data", data, torch.get_default_dtype())
    if isinstance(data, Tensor):
        if data.dim() < 2 or data.shape[0] < 1 or not data.is_floating_point():
            raise ValueError(f"data must be a floating tensor [n, *dims] with n >= 1, got "
                             f"shape {tuple(data.shape)} and dtype {data.dtype}")
        kind = "images" if data.dim() == 4 else "points"
        return Dataset(data, kind, "tensor", "train")
    raise TypeError(f"data must be a Dataset, a data set name or path, a tensor or an "
                    f"array, got {type(data).__name__}")


__all__ = ["TrainConfig", "Trainer"]

"""Run directories (what ``scoresde train`` writes and the other commands read) and the
tensor files the commands write."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch
from torch import Tensor

import scoresde as sd
from scoresde.checkpoint import Checkpoint, load_checkpoint

from .errors import _Fail


@dataclass
class Run:
    """A trained run directory (``scoresde train --out`` / ``Trainer.save``).

    Attributes:
        directory: the path.
        checkpoint: what :func:`scoresde.load_checkpoint` returned; ``.model`` is the score
            model on the EMA weights, in eval mode.
        data_spec: the ``load_dataset`` arguments of the training set.
    """

    directory: str
    checkpoint: Checkpoint
    data_spec: Dict[str, Any]

    @property
    def model(self) -> sd.ScoreModel:
        return self.checkpoint.model

    @property
    def sde(self) -> sd.SDE:
        return self.checkpoint.sde

    @property
    def dtype(self) -> torch.dtype:
        return next(self.checkpoint.model.net.parameters()).dtype

    def data(self, split: str = "train", n: Optional[int] = None) -> sd.Dataset:
        """The run's data set: ``split="train"`` is the training set itself (its first ``n``
        rows if ``n`` is given); ``"test"`` is the held-out split of the same source, ``n``
        examples (default: load_dataset's default for the split)."""
        if split == "train":
            data = sd.load_dataset(**self.data_spec)
            if n is not None:
                if n > len(data):
                    raise _Fail(f"--n {n} exceeds the {len(data)} training examples of "
                                f"{data.name!r}")
                data.x = data.x[:n]
                data.y = None if data.y is None else data.y[:n]
            return data
        return sd.load_dataset(**{**self.data_spec, "split": split, "n": n})


def load_run(directory: str) -> Run:
    """Load a run directory (EMA weights); raises CheckpointError for a missing, corrupt or
    non-run directory and _Fail for a checkpoint without a data set record."""
    ck = load_checkpoint(directory, use_ema=True)
    ck.model.eval()
    spec = ck.config.get("data")
    if not spec:
        raise _Fail(f"{directory} holds a checkpoint without a data set record (trained on an "
                    f"in-memory tensor); the command line needs a run written by "
                    f"'scoresde train' or Trainer.save on a load_dataset data set")
    return Run(directory, ck, dict(spec))


@dataclass
class DiffusersModel:
    """A diffusers pipeline or model directory loaded by :func:`scoresde.from_diffusers`.

    Attributes:
        directory: the path.
        model: the ScoreModel (diffusers' integer timesteps, its prediction type), eval mode.
        sde: the DiscreteVPSDE of the scheduler's alphas_cumprod.
    """

    directory: str
    model: sd.ScoreModel
    sde: sd.SDE

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def config(self) -> Dict[str, Any]:
        """The scheduler config (``scoresde.interop.scheduler_config``)."""
        return self.model.scheduler_config

    @property
    def sample_shape(self) -> Sequence[int]:
        """(channels, height, width) of one sample, from the model's config."""
        shape = self.model.net.sample_shape
        if shape is None:
            raise _Fail(f"{self.directory}: the model's config.json gives no sample_size and "
                        f"in_channels, so the sample shape is unknown")
        return shape


def load_diffusers(directory: str) -> DiffusersModel:
    """A diffusers directory (``save_pretrained``) as model and SDE, in eval mode."""
    model, sde = sd.from_diffusers(directory)
    model.eval()
    return DiffusersModel(directory, model, sde)


def check_writable(path: str, suffixes: Sequence[str], flag: str) -> None:
    """Fail early (before any work) when ``path`` has the wrong suffix."""
    if not path.lower().endswith(tuple(suffixes)):
        raise _Fail(f"{flag} {path!r} must end in {' or '.join(suffixes)}")


def save_tensor(x: Tensor, path: str) -> str:
    """Write ``x`` to a .npy (numpy.save) or .pt (torch.save) file; returns the path."""
    make_parent(path)
    x = x.detach().cpu()
    if path.lower().endswith(".npy"):
        import numpy as np
        np.save(path, x.numpy())
    else:
        torch.save(x, path)
    return path


def make_parent(path: str) -> None:
    """Create the directory that will hold ``path`` (and its parents) if missing."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)

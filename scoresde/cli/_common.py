"""What the commands share: the user-error exception, argument types, loading a run
directory and its data, tensor files, standard errors, and the pictures (2-D scatter
beside the data, image grids)."""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import scoresde as sd
from scoresde.checkpoint import Checkpoint, load_checkpoint


class _Fail(Exception):
    """A user error: printed as one line, exit status 2."""


# -- argument types ----------------------------------------------------------------------------
def _int_at_least(minimum: int, wanted: str):
    """An argparse type: an integer >= ``minimum``, described as ``wanted`` in errors."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    return parse


positive_int = _int_at_least(1, "a positive integer")
positive_int.__doc__ = "argparse type: an integer >= 1."
nonnegative_int = _int_at_least(0, "an integer >= 0")
nonnegative_int.__doc__ = "argparse type: an integer >= 0."


def integer(text: str) -> int:
    """argparse type: any integer (the library checks the range and names the option)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")


def real(text: str) -> float:
    """argparse type: a float ("inf" accepted; the library checks the range)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")


def positive_real(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = real(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


DTYPES = {"float32": torch.float32, "float64": torch.float64}


# -- run directories ---------------------------------------------------------------------------
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


def check_writable(path: str, suffixes: Sequence[str], flag: str) -> None:
    """Fail early (before any work) when ``path`` has the wrong suffix."""
    if not path.lower().endswith(tuple(suffixes)):
        raise _Fail(f"{flag} {path!r} must end in {' or '.join(suffixes)}")


def save_tensor(x: Tensor, path: str) -> str:
    """Write ``x`` to a .npy (numpy.save) or .pt (torch.save) file; returns the path."""
    _make_parent(path)
    x = x.detach().cpu()
    if path.lower().endswith(".npy"):
        import numpy as np
        np.save(path, x.numpy())
    else:
        torch.save(x, path)
    return path


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


# -- pictures ----------------------------------------------------------------------------------
def pyplot():
    """matplotlib.pyplot with the Agg backend (a _Fail naming the extra if it is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _Fail("the pictures need matplotlib: pip install 'scoresde[cli]'")
    return plt


def check_picture_path(path: str, flag: str = "--out") -> None:
    """Fail early when matplotlib cannot write ``path``'s format."""
    plt = pyplot()
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in formats:
        raise _Fail(f"{flag} {path!r}: matplotlib cannot write {ext or 'files without a suffix'!r}"
                    f"; use one of .{', .'.join(sorted(formats))}")


def plot_points(data: Tensor, panels: List[Tuple[str, Tensor]], path: str) -> str:
    """Scatter the training data beside each (title, samples) panel; first two coordinates."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4 * (1 + len(panels)), 4),
                             sharex=True, sharey=True)
    for ax, (title, x) in zip(axes, [("training data", data)] + panels):
        x = x.detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.set_title(title)
        ax.set_aspect("equal")
    return _save(fig, path)


def image_grid(x: Tensor, ncol: int = 8, pad: int = 1) -> Tensor:
    """Tile images [n, C, H, W] in [-1, 1] into one [rows*(H+pad)-pad, ncol*(W+pad)-pad, C]
    array in [0, 1] (white gaps), for imshow."""
    x = ((x.detach().cpu().to(torch.float32).clamp(-1.0, 1.0) + 1.0) / 2.0)
    n, c, h, w = x.shape
    ncol = min(ncol, n)
    nrow = -(-n // ncol)
    grid = torch.ones(c, nrow * (h + pad) - pad, ncol * (w + pad) - pad)
    for k in range(n):
        r, q = divmod(k, ncol)
        grid[:, r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = x[k]
    return grid.permute(1, 2, 0)


def plot_images(data: Tensor, panels: List[Tuple[str, Tensor]], path: str,
                max_images: int = 64) -> str:
    """Image grids of the training data beside each (title, samples) panel (up to
    ``max_images`` each; one channel in gray, three as RGB, otherwise the first channel)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(4 * (1 + len(panels)), 4))
    for ax, (title, x) in zip(axes, [("training data", data)] + panels):
        grid = image_grid(x[:max_images])
        if grid.shape[2] == 3:
            ax.imshow(grid.numpy())
        else:
            ax.imshow(grid[:, :, 0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        ax.set_title(title)
        ax.axis("off")
    return _save(fig, path)


def _save(fig, path: str) -> str:
    plt = pyplot()
    _make_parent(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""The commands' pictures: 2-D scatter plots and image grids beside the training data
(matplotlib, Agg backend)."""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .errors import _Fail
from .runs import make_parent


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


def plot_images(data: Optional[Tensor], panels: List[Tuple[str, Tensor]], path: str,
                max_images: int = 64, data_title: str = "training data") -> str:
    """Image grids of the training data (if any) beside each (title, samples) panel (up to
    ``max_images`` each; one channel in gray, three as RGB, otherwise the first channel)."""
    plt = pyplot()
    shown = ([(data_title, data)] if data is not None else []) + panels
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4), squeeze=False)
    for ax, (title, x) in zip(axes[0], shown):
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
    make_parent(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Data sets for training: 2-D toy distributions, 8x8 digits, and a user's own tensor file.

``load_dataset(name_or_path, split, n, seed)`` returns a :class:`Dataset` holding ``.x``.

Built-in sets (``DATASETS``):

- ``gmm``: 8 Gaussians (std 0.2) on a circle of radius sqrt(1.92), equal weights; mean 0
  and covariance exactly I. Its density is ``dataset.oracle``, a
  :class:`scoresde.oracles.GaussianMixture`, so the true entropy / NLL is known.
- ``moons``, ``swiss_roll``, ``checkerboard``, ``rings``: the usual 2-D shapes, generated
  with a torch.Generator and standardised by one fixed affine map per set (zero mean, mean
  per-coordinate variance 1, estimated once from a fixed reference sample), so train and
  test sets share the map and shapes keep their aspect ratio.
- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, ``load_digits``), scaled
  from [0, 16] to [-1, 1] as [n, 1, 8, 8]; labels in ``.y``. Fixed split: every 6th image
  (index % 6 == 0, 300 images) is the test set, the other 1497 the training set.

Synthetic sets draw a fresh stream per (seed, split), so train and test are independent
samples; ``n`` defaults to 10000 (train) and 2000 (test).

A path to a ``.npy`` (``numpy.load(allow_pickle=False)``) or ``.pt`` file (``torch.load(...,
weights_only=True)``, a tensor) is loaded as [n, D] points or [n, C, H, W] images ([n] and
[n, H, W] get a trailing / channel axis); uint8 data is mapped from [0, 255] to [-1, 1].
Fixed split: index % 10 == 0 is the test set; ``split="all"`` gives every row.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from ._validation import check_choice, check_instance, check_int, first_nonfinite
from .oracles import GaussianMixture

SPLITS = ("train", "test", "all")


class DataFileNotFoundError(FileNotFoundError, ValueError):
    """A data file that does not exist: a FileNotFoundError, and a ValueError like every
    other invalid argument (DESIGN.md, "Numerical conventions")."""

FILE_SUFFIXES = (".npy", ".pt")
_DEFAULT_N = {"train": 10000, "test": 2000}


@dataclass
class Dataset:
    """A data set in memory.

    Attributes:
        x: the data, [n, D] ("points") or [n, C, H, W] ("images").
        kind: "points" or "images".
        name: the built-in name, or the file path.
        split: "train", "test" or "all".
        oracle: the exact density (a GaussianMixture) for ``gmm``, else None.
        y: labels where the source has them (``digits``), else None.
        index: for digits and files, the rows of the source that were taken, else None.
        spec: the arguments of ``load_dataset`` that rebuild this set (stored in checkpoints).
    """

    x: Tensor
    kind: str
    name: str
    split: str
    oracle: Optional[GaussianMixture] = None
    y: Optional[Tensor] = None
    index: Optional[Tensor] = None
    spec: Dict[str, object] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> Tensor:
        return self.x[index]

    @property
    def shape(self) -> Tuple[int, ...]:
        """The shape of one example (x.shape[1:])."""
        return tuple(self.x.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, split={self.split!r}, kind={self.kind!r}, "
                f"x={tuple(self.x.shape)} {self.x.dtype})")


# -- the synthetic 2-D sets -------------------------------------------------------------------
# Each raw generator draws with ``g`` in the order written and returns float64 [n, 2].
GMM_COMPONENTS = 8
GMM_STD = 0.2
GMM_RADIUS = math.sqrt(2.0 * (1.0 - GMM_STD ** 2))  # covariance r^2/2 + s^2 = 1 per axis


def gmm_oracle() -> GaussianMixture:
    """The ``gmm`` data density: 8 equally weighted N(mu_k, 0.04 I), mu_k on a circle."""
    angles = 2.0 * math.pi * torch.arange(GMM_COMPONENTS, dtype=torch.float64) / GMM_COMPONENTS
    means = GMM_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = (GMM_STD ** 2) * torch.eye(2, dtype=torch.float64).expand(GMM_COMPONENTS, 2, 2)
    weights = torch.full((GMM_COMPONENTS,), 1.0 / GMM_COMPONENTS, dtype=torch.float64)
    return GaussianMixture(weights, means, covs)


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(n: int, g: torch.Generator) -> Tensor:
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> Tensor:
    # draws: which moon [n], angle [n], noise [n, 2] (std 0.08)
    lower = _rand(n, g) < 0.5
    theta = math.pi * _rand(n, g)
    upper_pts = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    lower_pts = torch.stack([1.0 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    return torch.where(lower[:, None], lower_pts, upper_pts) + 0.08 * _randn(n, g)


def _swiss_roll(n: int, g: torch.Generator) -> Tensor:
    # draws: position along the roll [n], noise [n, 2] (std 0.3, radius up to 4.5 pi)
    theta = 1.5 * math.pi * (1.0 + 2.0 * _rand(n, g))
    pts = torch.stack([theta * torch.cos(theta), theta * torch.sin(theta)], 1)
    return pts + 0.3 * _randn(n, g)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # draws: one of the 8 dark cells of a 4x4 board on [-2, 2]^2 [n], position in it [n, 2]
    cell = torch.randint(0, 8, (n,), generator=g)
    col = cell // 2
    row = col % 2 + 2 * (cell % 2)  # (row + col) even
    offset = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return torch.stack([col, row], 1).to(torch.float64) + offset - 2.0


def _rings(n: int, g: torch.Generator) -> Tensor:
    # draws: ring (radii 1..4, chosen in proportion to the radius) [n], angle [n],
    # noise [n, 2] (std 0.08)
    radii = torch.arange(1, 5, dtype=torch.float64)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=g)
    angle = 2.0 * math.pi * _rand(n, g)
    r = radii[ring]
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], 1) + 0.08 * _randn(n, g)


_RAW: Dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "moons": _moons, "swiss_roll": _swiss_roll, "checkerboard": _checkerboard, "rings": _rings,
}
_REFERENCE_N, _REFERENCE_SEED = 200_000, 20_240_601


@functools.lru_cache(maxsize=None)
def _standardisation(name: str) -> Tuple[Tensor, float]:
    """(mean [2], scale): fixed per set, from a reference sample with a fixed seed."""
    ref = _RAW[name](_REFERENCE_N, torch.Generator().manual_seed(_REFERENCE_SEED))
    mean = ref.mean(0)
    return mean, float((ref - mean).pow(2).mean().sqrt())


def _split_seed(seed: int, split: str) -> int:
    return 2 * seed + (1 if split == "test" else 0)


def _load_gmm(split: str, n: int, seed: int, dtype: torch.dtype) -> Dataset:
    oracle = gmm_oracle()
    g = torch.Generator().manual_seed(_split_seed(seed, split))
    return Dataset(oracle.sample(n, generator=g, dtype=dtype), "points", "gmm", split,
                   oracle=oracle)


def _load_toy(name: str, split: str, n: int, seed: int, dtype: torch.dtype) -> Dataset:
    raw = _RAW[name](n, torch.Generator().manual_seed(_split_seed(seed, split)))
    mean, scale = _standardisation(name)
    return Dataset(((raw - mean) / scale).to(dtype), "points", name, split)


# -- digits -----------------------------------------------------------------------------------
DIGITS_TEST_EVERY = 6


def _load_digits(split: str, n: Optional[int], seed: int, dtype: torch.dtype) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # optional dependency
        raise ImportError("the 'digits' data set needs scikit-learn: pip install scikit-learn "
                          "(or pip install 'scoresde[cli]')") from err
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float64)  # [1797, 8, 8] in [0, 16]
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    index = _fixed_split(images.shape[0], split, DIGITS_TEST_EVERY)
    index = _subset(index, n, seed, "digits", split)
    x = (images[index] / 8.0 - 1.0)[:, None]  # [0, 16] -> [-1, 1], [n, 1, 8, 8]
    return Dataset(x.to(dtype), "images", "digits", split, y=labels[index], index=index)


def _fixed_split(total: int, split: str, test_every: int) -> Tensor:
    index = torch.arange(total)
    if split == "all":
        return index
    is_test = index % test_every == 0
    return index[is_test] if split == "test" else index[~is_test]


def _subset(index: Tensor, n: Optional[int], seed: int, name: str, split: str) -> Tensor:
    if n is None or n == index.shape[0]:
        return index
    if n > index.shape[0]:
        raise ValueError(f"n={n} exceeds the {index.shape[0]} examples of {name!r} "
                         f"(split={split!r})")
    pick = torch.randperm(index.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return index[pick.sort().values]


# -- user files -------------------------------------------------------------------------------
FILE_TEST_EVERY = 10


def _read_file(path: str) -> Tensor:
    if path.endswith(".npy"):
        import numpy as np
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"could not read {path!r} as a numeric .npy array (object "
                             f"arrays are refused): {err}") from err
        return torch.from_numpy(arr)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise ValueError(f"could not read {path!r} as a tensor file (torch.load with "
                         f"weights_only=True): {err}") from err
    if not isinstance(obj, Tensor):
        raise ValueError(f"{path!r} must hold a single tensor, got {type(obj).__name__}")
    return obj


def _load_file(path: str, split: str, n: Optional[int], seed: int,
               dtype: torch.dtype) -> Dataset:
    if not os.path.isfile(path):
        raise DataFileNotFoundError(f"data file {path!r} does not exist; give a .npy or .pt "
                                    f"file, or a data set name ({', '.join(DATASETS)})")
    data = _read_file(path)
    if data.dtype == torch.uint8:
        data = data.to(torch.float64) / 127.5 - 1.0
    elif not (data.is_floating_point() or data.dtype in (torch.int16, torch.int32,
                                                         torch.int64, torch.int8)):
        raise ValueError(f"{path!r} holds dtype {data.dtype}; expected a real array")
    if data.dim() == 1:
        data = data[:, None]
    elif data.dim() == 3:
        data = data[:, None]
    if data.dim() not in (2, 4) or data.shape[0] < 1:
        raise ValueError(f"{path!r} must hold [n, D] points or [n, C, H, W] images ([n] and "
                         f"[n, H, W] are accepted), got shape {tuple(data.shape)}")
    found = first_nonfinite(data)
    if found is not None:
        index, value = found
        raise ValueError(f"{path!r} must hold finite values, but row {index[0]} contains "
                         f"{value} (at index {list(index)})")
    index = _subset(_fixed_split(data.shape[0], split, FILE_TEST_EVERY), n, seed, path, split)
    kind = "points" if data.dim() == 2 else "images"
    return Dataset(data[index].to(dtype), kind, path, split, index=index)


# -- the entry point --------------------------------------------------------------------------
DATASETS = ("gmm", "moons", "swiss_roll", "checkerboard", "rings", "digits")


def load_dataset(name_or_path: str, split: str = "train", n: Optional[int] = None,
                 seed: int = 0, dtype: Optional[torch.dtype] = None) -> Dataset:
    """Load a built-in data set by name, or a ``.npy`` / ``.pt`` tensor file by path.

    Args:
        name_or_path: one of ``DATASETS`` or a path ending in .npy or .pt.
        split: "train" or "test"; "all" (every row) for digits and files.
        n: number of examples (synthetic sets: default 10000 train / 2000 test; digits
            and files: default all of the split, else a seeded random subset of it).
        seed: seeds the synthetic draws and the subset choice.
        dtype: floating dtype of ``.x`` (default torch's default dtype).

    Returns:
        A :class:`Dataset`; ``.spec`` holds these arguments (paths made absolute).
    """
    check_instance("name_or_path", name_or_path, (str, os.PathLike),
                   "a data set name or a file path")
    name = os.fspath(name_or_path)
    check_choice("split", split, SPLITS)
    if n is not None:
        n = check_int("n", n, minimum=1, allowed="a positive integer or None")
    seed = check_int("seed", seed, minimum=0, allowed="a non-negative integer")
    dtype = dtype or torch.get_default_dtype()
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")

    # A built-in name wins over a same-named file or folder in the working directory; write
    # ./gmm.npy (a suffix or a separator) to mean a file.
    looks_like_path = name.endswith(FILE_SUFFIXES) or os.sep in name
    is_file = looks_like_path or (name not in DATASETS and os.path.exists(name))
    if name in DATASETS and not looks_like_path:
        if name == "digits":
            data = _load_digits(split, n, seed, dtype)
        else:
            if split == "all":
                raise ValueError(f"split='all' is only for digits and files; the synthetic "
                                 f"set {name!r} has independent 'train' and 'test' streams")
            size = _DEFAULT_N[split] if n is None else n
            data = (_load_gmm(split, size, seed, dtype) if name == "gmm"
                    else _load_toy(name, split, size, seed, dtype))
        spec_name = name
    elif is_file:
        if not name.endswith(FILE_SUFFIXES):
            raise ValueError(f"data file {name!r} must end in .npy or .pt")
        spec_name = os.path.abspath(name)
        data = _load_file(spec_name, split, n, seed, dtype)
    else:
        raise ValueError(f"unknown data set {name!r}; choose one of "
                         f"{', '.join(DATASETS)}, or give a path to a .npy or .pt file")
    data.spec = {"name_or_path": spec_name, "split": split, "n": n, "seed": seed, "dtype": dtype}
    return data


__all__ = ["Dataset", "load_dataset", "DATASETS", "gmm_oracle", "DataFileNotFoundError"]

"""k-diffusion's samplers without the k_diffusion package: load its ``sampling.py`` alone.

``import k_diffusion`` runs the package's ``__init__``, which imports torchvision, clip,
accelerate and more; installing those with pip replaces the torch build. The samplers do
not need any of it: ``k_diffusion/sampling.py`` imports only math, scipy, torch,
torchdiffeq, torchsde, tqdm and, from its own package, ``utils.append_dims``. So install
the files alone and load that one module:

    pip install --no-deps k-diffusion

``load_kdiffusion_sampling()`` finds the installed package folder without importing it,
registers a stand-in package (a private name, so a real ``k_diffusion`` imported elsewhere
is never shadowed) holding a ``utils`` module with the helpers ``sampling.py`` uses, runs
``sampling.py`` as that package's submodule, and removes the stand-in entries from
``sys.modules`` again. The module it returns keeps its own reference to the stand-in
``utils``.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
import types

INSTALL = "pip install --no-deps k-diffusion"
_PACKAGE = "_bench_kdiffusion"          # the stand-in package's private name


def append_dims(x, target_dims: int):
    """Appends dimensions to the end of a tensor until it has target_dims dimensions
    (k_diffusion.utils.append_dims)."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, "
                         "which is less")
    return x[(...,) + (None,) * dims_to_append]


UTILS = {"append_dims": append_dims}    # every name sampling.py reads from utils


def sampling_path() -> str:
    """Path of the installed k_diffusion/sampling.py, found without importing k_diffusion."""
    spec = importlib.util.find_spec("k_diffusion")   # a top-level name: nothing is run
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "sampling.py")
        if os.path.isfile(path):
            return path
    raise ImportError("k-diffusion is not installed (no k_diffusion/sampling.py on sys.path); "
                      f"install its files without its dependencies: {INSTALL}")


def installed_version() -> str | None:
    """The installed k-diffusion distribution's version, or None."""
    try:
        return importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def load_kdiffusion_sampling() -> types.ModuleType:
    """k_diffusion.sampling as a module (cached), loaded from its file alone.

    Raises ImportError naming ``pip install --no-deps k-diffusion`` when it is not
    installed, and ImportError naming the helpers when sampling.py reads a ``utils.<name>``
    that the stand-in lacks (a newer k-diffusion).
    """
    path = sampling_path()
    with open(path, encoding="utf-8") as fh:
        needed = sorted(set(re.findall(r"\butils\.(\w+)", fh.read())) - set(UTILS))
    if needed:
        raise ImportError(f"{path} uses k_diffusion.utils.{', utils.'.join(needed)}, which "
                          f"benchmarks/kdiffusion_loader.py does not provide; add them to UTILS")

    package = types.ModuleType(_PACKAGE)
    package.__path__ = []                                # a package: relative imports work
    utils = types.ModuleType(f"{_PACKAGE}.utils")
    utils.__dict__.update(UTILS)
    package.utils = utils
    name = f"{_PACKAGE}.sampling"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    added = {_PACKAGE: package, utils.__name__: utils, name: module}
    saved = {key: sys.modules[key] for key in added if key in sys.modules}
    sys.modules.update(added)
    try:
        spec.loader.exec_module(module)                  # `from . import utils` finds ours
    finally:
        for key in added:
            if key in saved:
                sys.modules[key] = saved[key]
            else:
                sys.modules.pop(key, None)
    return module

"""Reference networks ``net(x, t_in) -> tensor shaped like x`` for use with ScoreModel.

``NETS`` maps a class name to its class; checkpoints rebuild a network from that name and
its ``config()``. ``register_net`` adds a user's class (which must have ``config()``
returning its constructor keyword arguments).
"""
from __future__ import annotations

from typing import Dict, Type

from torch import nn

from .embedding import NULL_LABEL, ClassEmbedding, SinusoidalEmbedding
from .mlp import MLP
from .unet import UNet

NETS: Dict[str, Type[nn.Module]] = {"MLP": MLP, "UNet": UNet}


def register_net(cls: Type[nn.Module], name: str = None) -> Type[nn.Module]:
    """Make ``cls`` rebuildable from checkpoints under ``name`` (default: its class name).

    ``cls`` must define ``config()`` returning the keyword arguments of its constructor.
    Usable as a decorator.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"cls must be an nn.Module subclass, got {cls!r}")
    if not callable(getattr(cls, "config", None)):
        raise TypeError(f"{cls.__name__} must define config() returning its constructor "
                        f"keyword arguments to be rebuilt from a checkpoint")
    NETS[name or cls.__name__] = cls
    return cls


def build_net(name: str, config: dict) -> nn.Module:
    """Construct the registered network ``name`` from its ``config()`` dictionary."""
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; registered: {', '.join(sorted(NETS))} "
                         f"(register your class with scoresde.nets.register_net)")
    return NETS[name](**config)


__all__ = ["SinusoidalEmbedding", "ClassEmbedding", "NULL_LABEL", "MLP", "UNet", "NETS", "register_net", "build_net"]
